//! The main jobs in a real browser: Debian's Chromium, headless, driven through its ChromeDriver
//! over WebDriver (`fantoccini`). Nothing downloads a browser: `.ci/run` installs the
//! `chromium` and `chromium-driver` packages, and this test fails if they are missing. Pages are
//! read as a person reads them — by headings, labels, link and button text — and each page
//! visited passes axe-core with 0 violations and a set of checks of our own run in the page
//! (see [`check`]); the IG officer's jobs are done with the keyboard alone. Screenshots go
//! to `WEFT_SCREENSHOTS` (default: a `weft-screenshots` folder in the temporary directory).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::harness::{Env, Gateway};
use crate::web::config_with_pages;
use weft::dev::people::people;
use weft_sim::population::System;

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

/// axe-core's source, installed by `.ci/run` (pinned, from the npm registry) into
/// `WEFT_AXE_CORE_DIR` (default `~/.cache/weft-axe-core`). Missing, the test fails: CI never
/// skips it.
fn axe_source() -> &'static str {
    static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| {
        let dir = std::env::var("WEFT_AXE_CORE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/weft-axe-core")
            });
        let file = dir.join("node_modules/axe-core/axe.min.js");
        std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "axe-core is not installed ({}: {e}): run .ci/run, or `npm install axe-core@4.14.1` in {}",
                file.display(),
                dir.display()
            )
        })
    })
}

/// Runs axe-core in the page (injected through WebDriver, which the page's
/// Content-Security-Policy does not govern) and returns each violation: its rule, its help
/// text and where on the page.
const AXE_RUN: &str = r#"
const done = arguments[arguments.length - 1];
axe.run(document, { resultTypes: ['violations'] })
  .then(r => done(r.violations.map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' +
     v.nodes.map(n => n.target.join(' ')).join(', '))))
  .catch(e => done(['axe failed: ' + e]));
"#;

/// axe-core's violations on the page as it is now (injected once per page).
async fn axe_violations(c: &Client) -> Vec<Value> {
    let loaded = c
        .execute("return typeof window.axe !== 'undefined'", vec![])
        .await
        .expect("script");
    if loaded != json!(true) {
        c.execute(&format!("{}\nreturn true;", axe_source()), vec![])
            .await
            .expect("axe-core injected");
    }
    let found = c
        .execute_async(AXE_RUN, vec![])
        .await
        .expect("axe-core runs");
    found
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("axe-core gave no list of violations: {found}"))
}

/// The in-page rules ([`A11Y`]) — some check what axe-core does not: exactly one h1, error
/// summary links that lead to a field — and axe-core, with 0 violations on every page.
async fn check(c: &Client, page: &str) {
    let found = c.execute(A11Y, vec![]).await.expect("checks run");
    let violations: Vec<Value> = found.as_array().cloned().unwrap_or_default();
    assert!(violations.is_empty(), "{page}: {violations:?}");
    let violations = axe_violations(c).await;
    assert!(violations.is_empty(), "{page}: axe-core: {violations:#?}");
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

    // axe-core sees what it should: an image without alternative text is a violation.
    c.goto(&gw.url("/sign-in")).await.expect("sign-in page");
    c.execute(
        "const i = document.createElement('img'); i.src = '/assets/images/favicon.svg'; \
         document.querySelector('main').appendChild(i); return true;",
        vec![],
    )
    .await
    .expect("script");
    let found = axe_violations(&c).await;
    assert!(
        found
            .iter()
            .any(|v| v.as_str().is_some_and(|v| v.starts_with("image-alt"))),
        "{found:?}"
    );

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
    // The postcode district tells children apart too: the scenario child is not restricted.
    let scenario = env.partners.population.scenario().expect("scenario");
    let table = c
        .find(Locator::Css("table"))
        .await
        .expect("results")
        .text()
        .await
        .expect("text");
    let districts: Vec<String> = [System::School, System::SocialCare, System::Police]
        .into_iter()
        .filter_map(|s| scenario.identity(s))
        .filter_map(|i| weft::read::area::places::district(&i.address.postcode))
        .collect();
    assert!(
        districts.iter().any(|d| table.contains(d.as_str())),
        "a district of {districts:?} in {table}"
    );

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

/// Keys pressed wherever the focus is, as a person at a keyboard presses them.
async fn keys(c: &Client, text: &str) {
    let mut actions = KeyActions::new("keyboard".into());
    for k in text.chars() {
        actions = actions
            .then(KeyAction::Down { value: k })
            .then(KeyAction::Up { value: k });
    }
    c.perform_actions(actions).await.expect("keys");
}

async fn press(c: &Client, key: Key) {
    keys(c, &char::from(key).to_string()).await;
}

/// What the focused element says: its text, its label's, its accessible name, and its id (a
/// field is found by its id where several share a label).
const FOCUSED: &str = r#"
const e = document.activeElement;
if (!e || e === document.body) return [];
const l = e.id && document.querySelector('label[for="' + e.id + '"]');
return [(e.innerText || ''), (l ? l.innerText : ''), (e.getAttribute('aria-label') || ''), (e.id || '')];
"#;

/// Presses Tab, as a person at a keyboard does, until the focus is on the element whose text,
/// label, accessible name or id `matches`; fails if the keyboard cannot get there. What the
/// journey does next (Enter, arrow keys, typing) is pressed at the focus too.
async fn tab_to(c: &Client, what: &str, matches: impl Fn(&str) -> bool) {
    for _ in 0..400 {
        press(c, Key::Tab).await;
        let now = c.execute(FOCUSED, vec![]).await.expect("script");
        let parts = now.as_array().cloned().unwrap_or_default();
        if parts
            .iter()
            .filter_map(Value::as_str)
            .any(|part| !part.trim().is_empty() && matches(part.trim()))
        {
            return;
        }
    }
    panic!("{what:?} cannot be reached with the Tab key");
}

/// Tabs to the element whose text, label or name contains `text`.
async fn tab_to_text(c: &Client, text: &str) {
    tab_to(c, text, |t| t.contains(text)).await;
}

/// Tabs to the element `text` names and presses Enter on it.
async fn tab_press(c: &Client, text: &str) {
    tab_to_text(c, text).await;
    press(c, Key::Enter).await;
}

async fn sign_in_by_keyboard(c: &Client, gw: &Gateway, who: &str) {
    c.goto(&gw.url("/sign-in")).await.expect("sign-in page");
    tab_press(c, who).await;
    wait_heading(c, "What do you want to do?").await;
    check(c, "home").await;
}

fn person(role: &str) -> weft::foundation::config::DevPerson {
    people()
        .into_iter()
        .find(|p| p.person.role == role)
        .expect("a person of the role")
        .person
}

#[tokio::test]
async fn in_a_browser_a_social_worker_takes_break_glass_and_an_ig_officer_reviews_it_by_keyboard() {
    let env = Env::new(20).await;
    // The demo's people, and a teacher at a school the child does not attend.
    let path = env.write_config("weft.toml", &crate::web_ig::config(&env, ""));
    let gw = Gateway::start(&env, path).await;
    let scenario = env.partners.population.scenario().expect("scenario");
    let sw = person("social_worker");
    let sw_token = env.token(&sw.user, &sw.agency, "social_worker");
    let child = gw.child_by_nhs(&sw_token, &scenario.truth.nhs_number).await;
    let (_driver, c) = browser().await;

    // Without a relationship, the child is refused with the way in an emergency.
    c.goto(&gw.url("/sign-in")).await.expect("sign-in page");
    click_button(&c, "Demo teacher at another school").await;
    wait_heading(&c, "What do you want to do?").await;
    c.goto(&gw.url(&format!("/children/{child}?purpose=safeguarding")))
        .await
        .expect("child page");
    wait_heading(&c, "You cannot see this child").await;
    check(&c, "no relationship").await;
    c.find(Locator::LinkText("get emergency access (break-glass)"))
        .await
        .expect("the offer");
    click_button(&c, "Sign out").await;
    wait_heading(&c, "You have signed out").await;

    // The social worker's page for early help withholds what needs the family's consent, and
    // offers break-glass; the justification must be real text, the error beside the field.
    c.goto(&gw.url("/sign-in")).await.expect("sign-in page");
    click_button(&c, &sw.name).await;
    wait_heading(&c, "What do you want to do?").await;
    c.goto(&gw.url(&format!("/children/{child}?purpose=early_help")))
        .await
        .expect("child page");
    wait_heading(&c, "Summary").await;
    check(&c, "child, early help").await;
    c.find(Locator::LinkText("get emergency access (break-glass)"))
        .await
        .expect("the offer")
        .click()
        .await
        .expect("click");
    wait_heading(&c, "Emergency access (break-glass)").await;
    check(&c, "break-glass form").await;
    labelled(&c, "Why can this not wait?")
        .await
        .send_keys("urgent urgent urgent urgent")
        .await
        .expect("type");
    click_button(&c, "Get emergency access").await;
    c.wait()
        .for_element(Locator::Css(".govuk-error-summary"))
        .await
        .expect("an error summary");
    check(&c, "break-glass form with an error").await;
    shot(&c, "break-glass-error").await;
    let field = labelled(&c, "Why can this not wait?").await;
    field.clear().await.expect("clear");
    field
        .send_keys("Child disclosed harm at home today; family not reachable, need history now")
        .await
        .expect("type");
    click_button(&c, "Get emergency access").await;
    c.wait()
        .for_element(Locator::Css("#break-glass-title"))
        .await
        .expect("the page under the grant");
    check(&c, "child under break-glass").await;
    shot(&c, "child-under-break-glass").await;
    click_button(&c, "Sign out").await;
    wait_heading(&c, "You have signed out").await;

    // The IG officer, with the keyboard alone: the queue, the grant with what was seen under
    // it, the finding.
    sign_in_by_keyboard(&c, &gw, "Demo IG officer").await;
    tab_press(&c, "Break-glass review").await;
    wait_heading(&c, "Break-glass review").await;
    check(&c, "break-glass queue").await;
    shot(&c, "ig-break-glass-queue").await;
    tab_to(&c, "Review", |t| t.starts_with("Review")).await;
    press(&c, Key::Enter).await;
    wait_heading(&c, "Review an emergency access").await;
    check(&c, "break-glass grant").await;
    let seen = c
        .find(Locator::Css(".moj-timeline"))
        .await
        .expect("what was seen under it")
        .text()
        .await
        .unwrap();
    assert!(seen.contains("Released by this emergency access"), "{seen}");
    shot(&c, "ig-break-glass-grant").await;
    // The radios: Tab reaches the group, an arrow key chooses.
    tab_to(&c, "Justified", |t| t == "Justified").await;
    press(&c, Key::Down).await;
    tab_to(&c, "Notes", |t| t == "Notes").await;
    keys(&c, "Consent could have been sought first").await;
    tab_press(&c, "Record the review").await;
    c.wait()
        .for_element(Locator::Css("#reviewed-title"))
        .await
        .expect("the review recorded");
    wait_heading(&c, "Break-glass review").await;
    check(&c, "break-glass queue after review").await;
    shot(&c, "ig-break-glass-reviewed").await;
    let ig = person("ig_officer");
    let (_, all) = gw
        .get(
            "/v1/ig/break-glass?status=all",
            &env.token(&ig.user, &ig.agency, "ig_officer"),
        )
        .await;
    assert_eq!(all[0]["review"]["outcome"], "not_justified", "{all}");
    assert_eq!(
        all[0]["review"]["notes"],
        "Consent could have been sought first"
    );
    c.close().await.expect("close");
}

#[tokio::test]
async fn in_a_browser_an_ig_officer_reads_an_audit_trail_by_keyboard() {
    let env = Env::new(20).await;
    let path = env.write_config("weft.toml", &config_with_pages(&env, ""));
    let gw = Gateway::start(&env, path).await;
    let scenario = env.partners.population.scenario().expect("scenario");
    let sw = person("social_worker");
    let sw_token = env.token(&sw.user, &sw.agency, "social_worker");
    let child = gw.child_by_nhs(&sw_token, &scenario.truth.nhs_number).await;
    let (s, _) = gw
        .get(
            &format!("/v1/children/{child}?purpose=safeguarding"),
            &sw_token,
        )
        .await;
    assert_eq!(s, 200);
    let (_driver, c) = browser().await;

    sign_in_by_keyboard(&c, &gw, "Demo IG officer").await;
    tab_press(&c, "Audit log").await;
    wait_heading(&c, "Audit log").await;
    check(&c, "audit log").await;
    let banner = c
        .find(Locator::Css("#chain-title"))
        .await
        .expect("the chain's state")
        .text()
        .await
        .unwrap();
    assert_eq!(banner, "The record is intact");
    shot(&c, "ig-audit").await;

    // Filter by user, by keyboard.
    tab_to(&c, "User", |t| t.starts_with("User")).await;
    keys(&c, &sw.user).await;
    tab_press(&c, "Apply filters").await;
    c.wait()
        .for_element(Locator::Css(".moj-filter__selected"))
        .await
        .expect("the filter applied");
    check(&c, "audit log filtered").await;
    let rows = c
        .find_all(Locator::Css("tbody .govuk-table__row"))
        .await
        .expect("rows");
    assert!(!rows.is_empty());
    for r in &rows {
        let t = r.text().await.unwrap();
        assert!(t.contains(&sw.user), "{t}");
    }
    let table = c
        .find(Locator::Css("table"))
        .await
        .expect("table")
        .text()
        .await
        .unwrap();
    assert!(
        table.contains("Looked at the child's information"),
        "{table}"
    );
    assert!(table.contains("Lawful basis"), "{table}");
    shot(&c, "ig-audit-filtered").await;

    // Sort by who, by keyboard: the sortable table's header buttons.
    tab_to(&c, "Who", |t| t == "Who").await;
    press(&c, Key::Enter).await;
    let sorted = c
        .execute(
            "return document.querySelector('th[aria-sort=ascending]')?.innerText.trim()",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(sorted, json!("Who"));
    check(&c, "audit log sorted").await;

    // One child's trail, then the child's subject access report.
    tab_press(&c, "Entries for child").await;
    c.wait()
        .for_element(Locator::XPath(
            "//a[contains(@class, 'moj-filter__tag')][contains(., 'Child:')]",
        ))
        .await
        .expect("the child's filter");
    check(&c, "audit log for a child").await;
    tab_press(&c, "Subject access").await;
    wait_heading(&c, "Subject access").await;
    check(&c, "subject access").await;
    tab_to(&c, "Child's Weft id", |t| t.starts_with("Child's Weft id")).await;
    keys(&c, &child).await;
    tab_press(&c, "Produce the report").await;
    wait_heading(&c, "Who has looked at this child's information").await;
    check(&c, "subject access report").await;
    shot(&c, "ig-access-report").await;
    let report = c
        .find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .unwrap();
    assert!(report.contains("Social worker"), "{report}");
    c.close().await.expect("close");
}

#[tokio::test]
async fn in_a_browser_a_data_administrator_works_the_review_queue_with_the_keyboard() {
    let env = Env::new(30).await;
    let extra = "[matching]\nupper = 1.0\nlower = 0.5\n";
    let path = env.write_config("weft.toml", &config_with_pages(&env, extra));
    let gw = Gateway::start(&env, path).await;
    let admin = env.token(
        "demo-data-admin",
        weft_sim::sources::SOCIAL_CARE_AGENCY,
        "data_admin",
    );
    let (_, queue) = gw.get("/v1/matches/review", &admin).await;
    let first = queue["matches"][0].clone();
    let first_id = first["id"].as_str().expect("a match to review").to_string();
    let (_driver, c) = browser().await;

    sign_in_by_keyboard(&c, &gw, "Demo data administrator").await;
    check(&c, "data administrator's home").await;
    tab_press(&c, "Match review").await;
    wait_heading(&c, "Match review").await;
    check(&c, "match review").await;
    shot(&c, "match-review").await;
    let table = c
        .find(Locator::Css("section table"))
        .await
        .expect("the records side by side")
        .text()
        .await
        .unwrap_or_default();
    assert!(table.contains("This record"), "{table}");
    assert!(table.contains("The child's record"), "{table}");
    assert!(table.contains("evidence of"), "explained in words: {table}");

    // The first match: a reason typed, then confirmed, all from the keyboard.
    let reason = format!("reason-{first_id}");
    tab_to(&c, &reason, |t| t == reason).await;
    keys(&c, "Same date of birth, postcode and school").await;
    tab_press(&c, "Confirm: the same child").await;
    c.wait()
        .for_element(Locator::Css(".govuk-notification-banner--success"))
        .await
        .expect("the decision is confirmed");
    check(&c, "match review after a decision").await;
    shot(&c, "match-review-done").await;
    let (_, links) = gw
        .get(
            &format!(
                "/v1/children/{}/links",
                first["child_id"].as_str().unwrap_or_default()
            ),
            &admin,
        )
        .await;
    let decided = links["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| {
            l["source"] == first["source"]
                && l["local_id"] == first["local_id"]
                && l["status"] == "active"
        })
        .cloned()
        .expect("the record is the child's now");
    assert_eq!(decided["decided_by"], "demo-data-admin");
    assert_eq!(decided["reason"], "Same date of birth, postcode and school");

    // Sources' health and deliveries, reached from the menu (from the top of a fresh page: the
    // banner above took the focus).
    c.goto(&gw.url("/")).await.expect("home");
    wait_heading(&c, "What do you want to do?").await;
    tab_press(&c, "Sources' health").await;
    wait_heading(&c, "Sources' health").await;
    check(&c, "sources' health").await;
    shot(&c, "sources-health").await;
    tab_press(&c, "Deliveries").await;
    wait_heading(&c, "Deliveries").await;
    check(&c, "deliveries").await;
    shot(&c, "deliveries").await;
    tab_press(&c, "Data quality").await;
    wait_heading(&c, "Data quality").await;
    check(&c, "data quality").await;
    shot(&c, "data-quality").await;
    c.close().await.expect("close");
}

#[tokio::test]
async fn in_a_browser_the_recipient_acknowledges_a_concern_and_adds_to_it_with_the_keyboard() {
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
    // A school's DSL raises it; it reaches the scenario child's allocated social worker.
    let concern = gw.refer(&env, &nhs).await;
    let (_driver, c) = browser().await;

    sign_in_by_keyboard(&c, &gw, weft::dev::people::ALLOCATED_WORKER).await;
    tab_press(&c, "Inbox").await;
    wait_heading(&c, "Inbox").await;
    check(&c, "inbox").await;
    shot(&c, "inbox").await;
    tab_press(&c, "Open the concern").await;
    wait_heading(&c, "Neglect, routine").await;
    check(&c, "a concern received").await;
    tab_press(&c, "Acknowledge").await;
    c.wait()
        .for_element(Locator::XPath(
            "//strong[contains(@class, 'govuk-tag') and normalize-space()='acknowledged']",
        ))
        .await
        .expect("acknowledged");
    wait_heading(&c, "Neglect, routine").await;
    check(&c, "a concern acknowledged").await;
    shot(&c, "concern-acknowledged").await;
    let sw = env.token(
        weft::dev::people::ALLOCATED_WORKER,
        weft_sim::sources::SOCIAL_CARE_AGENCY,
        "social_worker",
    );
    let (_, view) = gw.get(&format!("/v1/concerns/{concern}"), &sw).await;
    assert!(
        view["history"]
            .as_array()
            .expect("history")
            .iter()
            .any(|h| h["state"] == "acknowledged"
                && h["by_user"] == weft::dev::people::ALLOCATED_WORKER),
        "{view}"
    );

    // An addendum: a mistake first (nothing typed), then the text.
    tab_press(&c, "Add to this concern").await;
    wait_heading(&c, "Add to the concern").await;
    check(&c, "addendum form").await;
    tab_press(&c, "Add to the concern").await;
    c.wait()
        .for_element(Locator::Css(".govuk-error-summary"))
        .await
        .expect("an error summary");
    check(&c, "addendum form with an error").await;
    tab_to(&c, "text", |t| t == "text").await;
    keys(
        &c,
        "Spoke to the family: a home visit is booked for tomorrow.",
    )
    .await;
    tab_press(&c, "Add to the concern").await;
    wait_heading(&c, "Neglect, routine").await;
    let history = c
        .find(Locator::Css(".moj-timeline"))
        .await
        .expect("history")
        .text()
        .await
        .unwrap_or_default();
    assert!(history.contains("a home visit is booked"), "{history}");
    shot(&c, "concern-addendum").await;
    c.close().await.expect("close");
}

#[tokio::test]
async fn in_a_browser_a_social_worker_signs_in_through_the_openid_provider() {
    let env = Env::new(5).await;
    let csc = env.agency_of("social_care");
    let accounts = json!({
        "sw-browser-1": {"name": "Social worker signed in in a browser", "agency": csc, "role": "social_worker"},
    });
    let port = free_port();
    let redirect = format!("https://127.0.0.1:{port}/auth/callback");
    let provider = crate::oidc::start_provider(&redirect, &accounts);
    let issuer = &provider.issuer;
    let base = env.config(false).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let config = format!(
        "{base}\n[web.oidc]\nissuer = {issuer:?}\nclient_id = \"weft\"\nclient_secret = {:?}\n\
         redirect_url = {redirect:?}\nscope = \"openid weft\"\n",
        crate::oidc::SECRET
    );
    let gw = Gateway::start(&env, env.write_config("weft.toml", &config)).await;
    let (_driver, c) = browser().await;

    c.goto(&gw.url("/sign-in")).await.expect("sign-in page");
    check(&c, "sign in with an organisation account").await;
    tab_press(&c, "Sign in with your organisation's account").await;
    // The provider's own pages: its development login form, then consent.
    let login = c
        .wait()
        .for_element(Locator::Css("input[name='login']"))
        .await
        .expect("the provider's login form");
    login.send_keys("sw-browser-1").await.expect("type");
    if let Ok(password) = c.find(Locator::Css("input[name='password']")).await {
        password.send_keys("any").await.expect("type");
    }
    login
        .send_keys(&Key::Enter.to_string())
        .await
        .expect("submit");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = c.current_url().await.expect("url");
        if url.as_str().starts_with(&gw.url("/")) {
            break;
        }
        // The consent form, if the provider shows one.
        if let Ok(b) = c.find(Locator::Css("button[type='submit']")).await {
            let _ = b.send_keys(&Key::Enter.to_string()).await;
        }
        assert!(
            Instant::now() < deadline,
            "never came back from the provider: {url}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_heading(&c, "What do you want to do?").await;
    let header = c
        .find(Locator::Css(".moj-header"))
        .await
        .expect("header")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        header.contains("Social worker signed in in a browser"),
        "{header}"
    );
    check(&c, "home after OpenID sign-in").await;
    shot(&c, "home-oidc").await;
    c.close().await.expect("close");
    drop(provider);
}
