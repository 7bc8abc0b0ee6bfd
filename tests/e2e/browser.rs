//! The main jobs in a real browser: Debian's Chromium, headless, driven through its ChromeDriver
//! over WebDriver (`fantoccini`). Nothing downloads a browser: `.ci/run` installs the
//! `chromium` and `chromium-driver` packages, and this test fails if they are missing. Pages are
//! read as a person reads them — by headings, labels, link and button text — and each page
//! visited passes a set of accessibility checks run in the page (see [`A11Y`]). Screenshots go
//! to `WEFT_SCREENSHOTS` (default: a `weft-screenshots` folder in the temporary directory).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::harness::{Env, Gateway};
use crate::web::config_with_pages;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn browser() -> (Driver, Client) {
    for tool in ["chromium", "chromedriver"] {
        assert!(
            Command::new("which")
                .arg(tool)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} is not installed: run .ci/run, or apt-get install chromium chromium-driver"
        );
    }
    let port = free_port();
    let driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--ignore-certificate-errors", "--window-size=1200,1600"]
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("a browser session");
    (driver, client)
}

/// Checks run in the page, in the spirit of axe-core's rules for what a server-rendered page
/// controls: a language, a title, one h1 and no skipped heading levels, every form control
/// labelled, every image with alternative text, links and buttons with names, unique ids, every
/// error-summary link pointing at a field on the page, a skip link to the main landmark.
const A11Y: &str = r#"
const v = [];
const name = el => (el.getAttribute('aria-label') || el.textContent || el.getAttribute('value') || '').trim();
if (!document.documentElement.lang) v.push('html has no lang');
if (!document.title.trim()) v.push('no title');
const h1 = document.querySelectorAll('h1');
if (h1.length !== 1) v.push('h1 count ' + h1.length);
let last = 0;
for (const h of document.querySelectorAll('h1,h2,h3,h4,h5,h6')) {
  const level = +h.tagName[1];
  if (last && level > last + 1) v.push('heading level skipped before: ' + h.textContent.trim());
  last = level;
}
for (const c of document.querySelectorAll('input:not([type=hidden]),select,textarea')) {
  const labelled = (c.id && document.querySelector('label[for="' + c.id + '"]')) || c.getAttribute('aria-label') || c.getAttribute('aria-labelledby');
  if (!labelled) v.push('unlabelled control ' + (c.name || c.id));
}
for (const i of document.querySelectorAll('img')) if (!i.hasAttribute('alt')) v.push('img without alt');
for (const a of document.querySelectorAll('a[href]')) if (!name(a)) v.push('link without text ' + a.getAttribute('href'));
for (const b of document.querySelectorAll('button')) if (!name(b)) v.push('button without name');
const ids = {};
for (const e of document.querySelectorAll('[id]')) { if (ids[e.id]) v.push('duplicate id ' + e.id); ids[e.id] = 1; }
for (const a of document.querySelectorAll('.govuk-error-summary a')) {
  const target = a.getAttribute('href').slice(1);
  if (!document.getElementById(target)) v.push('error summary link to nothing: ' + target);
}
const skip = document.querySelector('a.govuk-skip-link');
if (!skip || !document.querySelector(skip.getAttribute('href'))) v.push('no working skip link');
if (!document.querySelector('main')) v.push('no main landmark');
return v;
"#;

async fn check(c: &Client, page: &str) {
    let found = c.execute(A11Y, vec![]).await.expect("checks run");
    let violations: Vec<Value> = found.as_array().cloned().unwrap_or_default();
    assert!(violations.is_empty(), "{page}: {violations:?}");
}

fn shots() -> PathBuf {
    let dir = std::env::var("WEFT_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("weft-screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("save screenshot");
}

/// The control a visible label names.
async fn labelled(c: &Client, label: &str) -> fantoccini::elements::Element {
    let l = c
        .find(Locator::XPath(&format!(
            "//label[normalize-space()='{label}']"
        )))
        .await
        .unwrap_or_else(|e| panic!("label {label:?}: {e}"));
    let id = l.attr("for").await.expect("for").expect("label has for");
    c.find(Locator::Id(&id)).await.expect("labelled control")
}

async fn click_button(c: &Client, text: &str) {
    c.find(Locator::XPath(&format!(
        "//button[contains(normalize-space(), '{text}')]"
    )))
    .await
    .unwrap_or_else(|e| panic!("button {text:?}: {e}"))
    .click()
    .await
    .expect("click");
}

/// Waits (a few seconds at most) for the page whose h1 is `expected`: a click returns before
/// the next page has loaded.
async fn wait_heading(c: &Client, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = match c.find(Locator::Css("h1")).await {
            Ok(h) => h.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if now.trim() == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected the page {expected:?}, still on {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn in_a_browser_a_dsl_signs_in_finds_a_child_reads_the_summary_and_raises_a_concern() {
    let env = Env::new(20).await;
    let path = env.write_config("weft.toml", &config_with_pages(&env, ""));
    let gw = Gateway::start(&env, path).await;
    let nhs = env
        .partners
        .population
        .scenario()
        .expect("scenario")
        .truth
        .nhs_number
        .clone();
    let (_driver, c) = browser().await;

    // With the keyboard alone: the first Tab reaches the skip link.
    c.goto(&gw.url("/sign-in")).await.expect("sign-in page");
    check(&c, "sign in").await;
    shot(&c, "sign-in").await;
    c.active_element()
        .await
        .expect("body")
        .send_keys(&Key::Tab.to_string())
        .await
        .expect("tab");
    let focused = c
        .active_element()
        .await
        .expect("focus")
        .text()
        .await
        .unwrap_or_default();
    assert_eq!(focused.trim(), "Skip to main content");

    // The scripts ran under the Content-Security-Policy: the design system marked the page.
    let supported = c
        .execute(
            "return document.body.classList.contains('govuk-frontend-supported')",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(supported, json!(true));

    // Focus leaving the skip link moves the page under the pointer: start again unfocused.
    c.goto(&gw.url("/sign-in")).await.expect("sign-in page");
    click_button(&c, "Demo DSL").await;
    wait_heading(&c, "What do you want to do?").await;
    check(&c, "home").await;

    c.find(Locator::LinkText("Find a child"))
        .await
        .expect("link")
        .click()
        .await
        .expect("click");
    wait_heading(&c, "Find a child").await;
    check(&c, "find").await;
    // A mistake first: the error summary takes focus and links to the field.
    labelled(&c, "NHS number")
        .await
        .send_keys("12")
        .await
        .expect("type");
    click_button(&c, "Search").await;
    c.wait()
        .for_element(Locator::Css(".govuk-error-summary"))
        .await
        .expect("an error summary");
    check(&c, "find with an error").await;
    let summary = c
        .find(Locator::Css(".govuk-error-summary"))
        .await
        .expect("an error summary")
        .text()
        .await
        .unwrap();
    assert!(summary.contains("Enter a real NHS number"), "{summary}");
    let initialised = c
        .execute(
            "return document.querySelectorAll('[data-govuk-error-summary-init]').length",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(
        initialised,
        json!(1),
        "the module script enhanced the summary"
    );
    shot(&c, "find-error").await;
    let field = labelled(&c, "NHS number").await;
    field.clear().await.expect("clear");
    field.send_keys(&nhs).await.expect("type");
    click_button(&c, "Search").await;
    c.wait()
        .for_element(Locator::XPath("//h2[normalize-space()='1 child found']"))
        .await
        .expect("one child found");
    check(&c, "results").await;
    shot(&c, "find-results").await;

    c.find(Locator::XPath("//table//a[contains(., 'Calder')]"))
        .await
        .expect("result link")
        .click()
        .await
        .expect("click");
    wait_heading(&c, "Summary").await;
    let bar = c
        .find(Locator::Css(".moj-identity-bar"))
        .await
        .expect("identity bar")
        .text()
        .await
        .unwrap();
    assert!(bar.contains("Calder"), "{bar}");
    let summary = c
        .find(Locator::Css(".govuk-summary-list"))
        .await
        .expect("summary")
        .text()
        .await
        .unwrap();
    assert!(summary.contains("Weftbridge Academy"), "{summary}");
    assert!(summary.contains("falling"), "{summary}");
    check(&c, "child").await;
    let wide = c
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(wide, json!(false), "long records do not widen the page");
    shot(&c, "child-summary").await;

    c.find(Locator::LinkText("Raise a concern about this child"))
        .await
        .expect("link")
        .click()
        .await
        .expect("click");
    wait_heading(&c, "Raise a concern").await;
    check(&c, "concern form").await;
    labelled(&c, "What is the concern about?")
        .await
        .select_by_value("neglect")
        .await
        .expect("select");
    labelled(&c, "Urgent: needs action today")
        .await
        .click()
        .await
        .expect("radio");
    labelled(&c, "What did you see or hear?")
        .await
        .send_keys("Arrived hungry and without a coat")
        .await
        .expect("type");
    let today = chrono::Utc::now();
    for (part, value) in [
        ("when-day", today.format("%-d").to_string()),
        ("when-month", today.format("%-m").to_string()),
        ("when-year", today.format("%Y").to_string()),
    ] {
        c.find(Locator::Id(part))
            .await
            .expect("date part")
            .send_keys(&value)
            .await
            .expect("type");
    }
    labelled(&c, "Time (24-hour clock)")
        .await
        .send_keys("00:05")
        .await
        .expect("type");
    shot(&c, "concern-form").await;
    click_button(&c, "Send the concern").await;
    let panel = c
        .wait()
        .for_element(Locator::Css(".govuk-panel__title"))
        .await
        .expect("confirmation")
        .text()
        .await
        .unwrap();
    assert_eq!(panel, "Concern sent");
    check(&c, "concern sent").await;
    shot(&c, "concern-sent").await;

    c.find(Locator::LinkText("My concerns"))
        .await
        .expect("nav")
        .click()
        .await
        .expect("click");
    wait_heading(&c, "My concerns").await;
    check(&c, "my concerns").await;
    assert!(c.find(Locator::LinkText("Neglect")).await.is_ok());

    // Phone-sized: the pages reflow without sideways scrolling.
    c.set_window_size(390, 844).await.expect("resize");
    c.goto(&gw.url("/children/find")).await.expect("find");
    let wide = c
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(wide, json!(false), "no horizontal scrolling on a phone");
    shot(&c, "find-phone").await;

    click_button(&c, "Sign out").await;
    wait_heading(&c, "You have signed out").await;
    c.close().await.expect("close");
}
