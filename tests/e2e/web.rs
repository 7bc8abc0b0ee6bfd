//! The web pages, end to end: the real binary over HTTPS, a browser-like client that keeps
//! cookies and does not follow redirects, forms posted with their CSRF tokens. Every page is
//! checked against what the JSON API returns the same person for the same purpose.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft::dev::people::{people, ALLOCATED_WORKER};
use weft::foundation::config::DevPerson;
use weft_sim::population::System;

use crate::harness::{Env, Gateway};

/// A client that keeps this origin's cookies, as a browser would, and shows each redirect.
pub struct Browser {
    client: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

pub struct Got {
    pub status: u16,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub html: String,
}

impl Browser {
    pub fn new(env: &Env, gw: &Gateway) -> Browser {
        let ca = std::fs::read(&env.pki.ca).expect("ca");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Browser {
            client,
            base: gw.url(""),
            cookies: BTreeMap::new(),
        }
    }

    /// The same browser pointed at another base URL (the browsers' listener).
    pub fn at(mut self, base: String) -> Browser {
        self.base = base;
        self
    }

    /// The `Cookie` header this browser sends.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn take(&mut self, r: reqwest::Response) -> Got {
        for c in r.headers().get_all("set-cookie") {
            let text = c.to_str().expect("cookie text");
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (k, v) = pair.split_once('=').expect("name=value");
            assert!(attrs.contains("HttpOnly"), "{text}");
            assert!(attrs.contains("Secure"), "{text}");
            assert!(attrs.contains("SameSite=Lax"), "{text}");
            if v.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(String::from);
        let headers = r.headers().clone();
        Got {
            status,
            location,
            headers,
            html: r.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Got {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.take(r).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Got {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .expect("POST");
        self.take(r).await
    }

    /// Signs in through the development page as the person at `index` of the demo's people.
    pub async fn sign_in(&mut self, index: usize) {
        let page = self.get("/sign-in").await;
        assert_eq!(page.status, 200, "{}", page.html);
        let token = csrf(&page.html);
        let done = self
            .post(
                "/sign-in/dev",
                &[("csrf", &token), ("person", &index.to_string())],
            )
            .await;
        assert_eq!(done.status, 303, "{}", done.html);
        assert_eq!(done.location.as_deref(), Some("/"));
        assert!(self.cookies.contains_key("__Host-weft-session"));
    }

    /// The CSRF token of the signed-in session, from the home page's sign-out form.
    pub async fn csrf(&mut self) -> String {
        let home = self.get("/").await;
        assert_eq!(home.status, 200, "{}", home.html);
        csrf(&home.html)
    }
}

/// The first `csrf` field's value on a page.
pub fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().expect("value").to_string()
}

pub fn index_of(role: &str) -> usize {
    people()
        .iter()
        .position(|p| p.person.role == role)
        .expect("a person of the role")
}

fn person(role: &str) -> DevPerson {
    people()
        .into_iter()
        .find(|p| p.person.role == role)
        .expect("person")
        .person
}

/// The harness's configuration with the development sign-in page and `extra` TOML.
pub fn config_with_pages(env: &Env, extra: &str) -> String {
    let people: Vec<DevPerson> = people().into_iter().map(|p| p.person).collect();
    #[derive(serde::Serialize)]
    struct Web {
        web: WebTable,
    }
    #[derive(serde::Serialize)]
    struct WebTable {
        dev_sign_in: bool,
        dev_people: Vec<DevPerson>,
    }
    let web = toml::to_string(&Web {
        web: WebTable {
            dev_sign_in: true,
            dev_people: people,
        },
    })
    .expect("toml");
    format!("{}\n{web}\n{extra}", env.config(false))
}

async fn start(env: &Env, extra: &str) -> Gateway {
    let path = env.write_config("weft.toml", &config_with_pages(env, extra));
    Gateway::start(env, path).await
}

pub fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every string value in a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn a_dsl_finds_a_child_reads_the_summary_and_raises_a_concern_the_allocated_worker_receives()
{
    let env = Env::new(30).await;
    let gw = start(&env, "").await;
    let scenario = env.partners.population.scenario().expect("scenario");
    let nhs = scenario.truth.nhs_number.clone();

    // Not signed in: every page leads to the sign-in page.
    let mut dsl = Browser::new(&env, &gw);
    let home = dsl.get("/").await;
    assert_eq!(home.status, 303);
    assert_eq!(home.location.as_deref(), Some("/sign-in"));
    assert_eq!(dsl.get("/children/find").await.status, 303);

    dsl.sign_in(index_of("dsl")).await;
    let home = dsl.get("/").await;
    assert!(text(&home.html).contains("Demo DSL, Designated safeguarding lead"));
    let csp = home.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(home.headers["cache-control"], "no-store");
    assert_eq!(home.headers["x-frame-options"], "DENY");
    assert!(!home.html.contains("<script>"), "no inline script");
    assert!(!home.html.contains("style="), "no inline style");
    let token = csrf(&home.html);

    // Find the child: a wrong NHS number comes back with the error beside the field.
    let bad = dsl
        .post(
            "/children/find",
            &[
                ("csrf", &token),
                ("purpose", "safeguarding"),
                ("nhs_number", "123"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.html.contains("govuk-error-summary"));
    assert!(bad.html.contains("href=\"#nhs_number\""));
    assert!(bad.html.contains("id=\"nhs_number-error\""));
    assert!(bad.html.contains("value=\"123\""), "what was typed is kept");
    let nothing = dsl
        .post(
            "/children/find",
            &[("csrf", &token), ("purpose", "safeguarding")],
        )
        .await;
    assert_eq!(nothing.status, 400);
    assert!(text(&nothing.html).contains("Enter an NHS number, a unique pupil number"));

    let found = dsl
        .post(
            "/children/find",
            &[
                ("csrf", &token),
                ("purpose", "safeguarding"),
                ("nhs_number", &nhs),
            ],
        )
        .await;
    assert_eq!(found.status, 200, "{}", found.html);
    let dsl_token = env.token("demo-dsl", &person("dsl").agency, "dsl");
    let child = gw.child_by_nhs(&dsl_token, &nhs).await;
    let link = format!("/children/{child}?purpose=safeguarding");
    assert!(found.html.contains(&link), "{}", found.html);
    assert!(text(&found.html).contains("1 child found"));
    // The result says who the child is before it is opened, as the API's search does.
    let (_, api) = gw
        .post(
            "/v1/children/search",
            &dsl_token,
            &serde_json::json!({"purpose": "safeguarding", "nhs_number": nhs}),
        )
        .await;
    let shown = &api["shown"][&child];
    let family = shown["family_name"].as_str().expect("a DSL sees the name");
    assert!(text(&found.html).contains(family));
    assert!(text(&found.html).contains(shown["birth_date"].as_str().unwrap()));
    assert!(text(&found.html).contains("Weftbridge Academy"));
    // The postcode district, as the API shows it to this DSL, and never the whole postcode.
    let district = shown["district"].as_str().expect("a DSL sees the district");
    assert!(text(&found.html).contains(district), "{}", found.html);
    for system in [System::School, System::SocialCare, System::Police] {
        if let Some(i) = scenario.identity(system) {
            assert!(!found.html.contains(i.address.postcode.as_str()));
        }
    }

    // The child's page shows what the JSON view shows this DSL, and nothing it withholds.
    let page = dsl.get(&link).await;
    assert_eq!(page.status, 200, "{}", page.html);
    let words = text(&page.html);
    assert!(
        words.contains("Ruby Calder") || words.contains("Calder"),
        "{words}"
    );
    assert!(
        words.contains("Weftbridge Academy"),
        "the school by name: {words}"
    );
    assert!(words.contains("falling"), "attendance trend: {words}");
    assert!(page.html.contains("moj-identity-bar"));
    let (status, view) = gw
        .get(&link.replace("/children/", "/v1/children/"), &dsl_token)
        .await;
    assert_eq!(status, 200);
    // The summary: roll status, exclusions, the worker, each row's source; every category the
    // view lists is on the page, shown, not available (and why) or none recorded.
    assert!(words.contains("Exclusions"), "{words}");
    let on_roll = &view["fields"]["education.enrolment"]["on_roll"]["values"][0]["value"];
    if on_roll == true || on_roll == 1 {
        assert!(words.contains("Weftbridge Academy: on roll"), "{words}");
    }
    if let Some(w) =
        view["fields"]["social_care.allocated_worker"]["worker"]["values"][0]["value"].as_str()
    {
        assert!(words.contains(&format!("Allocated worker: {w}")), "{words}");
    }
    assert!(
        words.contains("From "),
        "provenance beside the summary: {words}"
    );
    for c in view["categories"].as_array().expect("categories") {
        if c["status"] == "not_available" {
            assert!(words.contains("Not available to you"), "{c} on the page");
        }
    }
    if view["categories"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["category"] == "social_care.known" && c["status"] == "shown")
    {
        assert!(words.contains("Known to: Children"), "{words}");
    }
    // What a social worker sees and the DSL may not is nowhere in the DSL's page. (A view lists
    // only the categories its role could ever see, so these are absent from the DSL's view.)
    let sw = person("social_worker");
    let sw_token = env.token(&sw.user, &sw.agency, "social_worker");
    let (_, full) = gw
        .get(&link.replace("/children/", "/v1/children/"), &sw_token)
        .await;
    let withheld: Vec<&str> = full["fields"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .filter(|k| view["fields"].get(*k).is_none())
        .collect();
    assert!(
        !withheld.is_empty(),
        "the social worker sees something the DSL does not: {view}"
    );
    for category in &withheld {
        if let Some(fields) = full["fields"].get(*category).and_then(Value::as_object) {
            let mut values = Vec::new();
            for field in fields.values() {
                for v in field["values"].as_array().into_iter().flatten() {
                    strings(&v["value"], &mut values);
                }
            }
            assert!(!values.is_empty() || fields.is_empty());
            for v in values.iter().filter(|v| v.len() > 12) {
                assert!(
                    !page.html.contains(v.as_str()),
                    "{category} value {v:?} is in the DSL's page"
                );
            }
        }
    }

    // Raise a concern from the child's page: a bad form first, nothing lost, nothing stored.
    let form = dsl.get(&format!("/concerns/new?child={child}")).await;
    assert_eq!(form.status, 200);
    let bad = dsl
        .post(
            "/concerns/new",
            &[
                ("csrf", &token),
                ("weft_id", &child),
                ("category", ""),
                ("urgency", "urgent"),
                ("what", "Arrived hungry and without a coat"),
                ("when-day", "31"),
                ("when-month", "2"),
                ("when-year", "2026"),
                ("reporter_name", "Demo DSL"),
                ("reporter_role", "DSL"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    for field in ["category", "when"] {
        assert!(
            bad.html.contains(&format!("href=\"#{field}\"")),
            "{field}: {}",
            text(&bad.html)
        );
    }
    assert!(bad.html.contains("Arrived hungry and without a coat"));
    let mine = dsl.get("/concerns").await;
    assert!(text(&mine.html).contains("You have not raised any concerns"));

    let today = chrono::Utc::now();
    let (d, m, y) = (
        today.format("%-d").to_string(),
        today.format("%-m").to_string(),
        today.format("%Y").to_string(),
    );
    let sent = dsl
        .post(
            "/concerns/new",
            &[
                ("csrf", &token),
                ("weft_id", &child),
                ("category", "neglect"),
                ("urgency", "urgent"),
                ("what", "Arrived hungry and without a coat"),
                ("when-day", &d),
                ("when-month", &m),
                ("when-year", &y),
                ("when-time", "00:05"),
                ("how", "seen"),
                ("reporter_name", "Demo DSL"),
                ("reporter_role", "DSL"),
            ],
        )
        .await;
    assert_eq!(sent.status, 303, "{}", text(&sent.html));
    let at = sent.location.expect("to the concern");
    let concern_id = at
        .trim_start_matches("/concerns/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let shown = dsl.get(&at).await;
    assert_eq!(shown.status, 200);
    assert!(text(&shown.html).contains("Concern sent"));
    let mine = dsl.get("/concerns").await;
    assert!(mine.html.contains(&format!("/concerns/{concern_id}")));
    // The same list the API gives.
    let (status, list) = gw.get("/v1/concerns", &dsl_token).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["id"], concern_id.as_str());

    // The allocated social worker finds it in her inbox, unread, and acknowledges it.
    let mut worker = Browser::new(&env, &gw);
    worker.sign_in(index_of("social_worker")).await;
    assert_eq!(sw.user, ALLOCATED_WORKER);
    let deadline = Instant::now() + Duration::from_secs(30);
    let inbox = loop {
        let inbox = worker.get("/inbox").await;
        if inbox.html.contains(&format!("/concerns/{concern_id}")) {
            break inbox;
        }
        assert!(
            Instant::now() < deadline,
            "the concern never reached the inbox"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text(&inbox.html).contains("Unread"));
    let home = worker.get("/").await;
    assert!(text(&home.html).contains("unread"));
    let wtoken = csrf(&inbox.html);
    let (_, items) = gw.get("/v1/inbox", &sw_token).await;
    let item = items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["payload"].to_string().contains(&concern_id))
        .expect("the concern's delivery")
        .clone();
    assert_eq!(item["read"], false);
    let delivery = item["delivery_id"].as_str().unwrap();
    let read = worker
        .post(&format!("/inbox/{delivery}/read"), &[("csrf", &wtoken)])
        .await;
    assert_eq!(read.status, 303);
    let (_, items) = gw.get("/v1/inbox", &sw_token).await;
    let item = items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["delivery_id"] == delivery)
        .unwrap();
    assert_eq!(item["read"], true, "read for her");

    let concern = worker.get(&format!("/concerns/{concern_id}")).await;
    assert_eq!(concern.status, 200, "{}", concern.html);
    assert!(concern.html.contains("moj-timeline"));
    let ack = worker
        .post(
            &format!("/concerns/{concern_id}/status"),
            &[("csrf", &wtoken), ("state", "acknowledged")],
        )
        .await;
    assert_eq!(ack.status, 303, "{}", text(&ack.html));
    let (_, view) = gw
        .get(&format!("/v1/concerns/{concern_id}"), &dsl_token)
        .await;
    assert!(
        view["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "acknowledged"),
        "{view}"
    );

    // Signing out ends the session: its cookie no longer opens a page.
    let out = worker.post("/sign-out", &[("csrf", &wtoken)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(worker.get("/inbox").await.status, 303);

    // Every look and change through the pages is in the audit log, as the API's are.
    let ig = person("ig_officer");
    let ig_token = env.token(&ig.user, &ig.agency, "ig_officer");
    let (status, audit) = gw
        .get(
            &format!("/v1/audit?user={}&limit=500", "demo-dsl"),
            &ig_token,
        )
        .await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .or(audit.as_array())
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "sign_in",
        "search",
        "view",
        "concern_submit",
        "concern_list",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
}

#[tokio::test]
async fn a_form_without_its_sessions_csrf_token_is_refused_and_nothing_is_done() {
    let env = Env::new(10).await;
    let gw = start(&env, "").await;
    let mut a = Browser::new(&env, &gw);
    a.sign_in(index_of("dsl")).await;
    let mut b = Browser::new(&env, &gw);
    b.sign_in(index_of("teacher")).await;
    let other = b.csrf().await;
    let form: Vec<(&str, &str)> = vec![
        ("purpose", "safeguarding"),
        ("given_name", "A"),
        ("family_name", "B"),
    ];
    let without = a.post("/children/find", &form).await;
    assert_eq!(without.status, 403);
    let mut wrong = form.clone();
    wrong.push(("csrf", &other));
    let refused = a.post("/children/find", &wrong).await;
    assert_eq!(refused.status, 403);
    assert!(text(&refused.html).contains("This form has expired"));
    let out = a.post("/sign-out", &[]).await;
    assert_eq!(out.status, 403, "signing out needs the token too");
    assert_eq!(a.get("/").await.status, 200, "still signed in");
    // The sign-in form needs its own cookie's value.
    let mut c = Browser::new(&env, &gw);
    let _ = c.get("/sign-in").await;
    let forged = c
        .post("/sign-in/dev", &[("csrf", "forged"), ("person", "0")])
        .await;
    assert_eq!(forged.status, 403);
    // No search was made for either refused form.
    let ig = person("ig_officer");
    let (_, audit) = gw
        .get(
            "/v1/audit?user=demo-dsl&limit=100",
            &env.token(&ig.user, &ig.agency, "ig_officer"),
        )
        .await;
    let entries = audit["entries"].as_array().or(audit.as_array()).unwrap();
    assert!(
        !entries.iter().any(|e| e["action"] == "search"),
        "{entries:?}"
    );
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_absolute_limit() {
    let env = Env::new(5).await;
    // Idle: 2 seconds unused ends it.
    let path = env.write_config(
        "idle.toml",
        &config_with_pages(&env, "").replace(
            "[web]\n",
            "[web]\nsession_idle_secs = 2\nsession_absolute_secs = 5\n",
        ),
    );
    let gw = Gateway::start(&env, path).await;
    let mut idle = Browser::new(&env, &gw);
    idle.sign_in(0).await;
    assert_eq!(idle.get("/").await.status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = idle.get("/").await;
    assert_eq!(after.status, 303, "an idle session ends");
    assert_eq!(after.location.as_deref(), Some("/sign-in"));

    // Absolute: used every second, it still ends 5 seconds after sign-in.
    let mut busy = Browser::new(&env, &gw);
    busy.sign_in(0).await;
    let started = Instant::now();
    let mut ended = None;
    while started.elapsed() < Duration::from_secs(8) {
        if busy.get("/").await.status == 303 {
            ended = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ended = ended.expect("a busy session ends at its absolute limit");
    assert!(ended >= Duration::from_secs(4), "ended after {ended:?}");
}

#[tokio::test]
async fn the_design_system_is_served_from_the_gateway_with_cache_headers() {
    let env = Env::new(5).await;
    let gw = start(&env, "").await;
    let mut b = Browser::new(&env, &gw);
    let page = b.get("/sign-in").await;
    for asset in [
        "/assets/govuk-frontend.min.css",
        "/assets/moj-frontend.min.css",
        "/static/weft.js",
        "/static/weft-body.js",
        "/static/weft.css",
    ] {
        assert!(page.html.contains(asset), "{asset} is linked");
        let got = b.get(asset).await;
        assert_eq!(got.status, 200, "{asset}");
        assert!(got.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age"));
    }
    // The module script imports the design systems' scripts from here.
    for script in [
        "/assets/govuk-frontend.min.js",
        "/assets/moj-frontend.min.js",
    ] {
        let got = b.get(script).await;
        assert_eq!(got.status, 200, "{script}");
        assert!(got.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
    }
    let font = b.get("/assets/fonts/bold-b542beb274-v2.woff2").await;
    assert_eq!(font.status, 200);
    assert_eq!(font.headers["content-type"], "font/woff2");
    assert_eq!(b.get("/assets/../Cargo.toml").await.status, 404);
    assert!(
        !page.html.contains("https://"),
        "nothing from another origin"
    );
}
