//! The write paths between agencies: concerns, events, alerts and their delivery through the
//! outbox, to real webhook receivers on loopback and to inboxes — across a SIGKILL, a receiver
//! that is down for a while, and one that never comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use weft_sim::population::{EpisodeKind, SimChild};
use weft_sim::sources::{HEALTH_AGENCY, POLICE_AGENCY, SCHOOL_AGENCY, SOCIAL_CARE_AGENCY};

use crate::harness::{block_audit, eventually, Env, Gateway};

const SECRET: &str = "receiver-shared-secret-0123456789";

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    /// Answers 503: down for a while.
    Fail,
    /// Holds the request this long, then answers 200.
    Hang(Duration),
}

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Got {
    delivery: String,
    body: Value,
    verified: bool,
}

struct Shared {
    mode: Mutex<Mode>,
    got: Mutex<Vec<Got>>,
}

/// A webhook receiver: a real HTTP server on 127.0.0.1 that checks each signature the way the
/// README tells receivers to, and records every request, duplicates included.
struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        Self::start_on(0).await
    }

    async fn start_on(port: u16) -> Receiver {
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Ok),
            got: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set(&self, mode: Mode) {
        *self.shared.mode.lock().expect("mode") = mode;
    }

    fn got(&self) -> Vec<Got> {
        self.shared.got.lock().expect("got").clone()
    }

    /// Delivery ids by the subject they announce (a concern, an alert).
    fn ids_by_subject(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for g in self.got() {
            let subject = g.body["subject"].as_str().unwrap_or_default().to_string();
            map.entry(subject).or_default().insert(g.delivery);
        }
        map
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let verified = weft::delivery::outbox::verify_signature(
        SECRET.as_bytes(),
        &header(weft::delivery::outbox::TIMESTAMP_HEADER),
        &header(weft::delivery::outbox::SIGNATURE_HEADER),
        &body,
        chrono::Utc::now(),
        Duration::from_secs(300),
    )
    .is_ok();
    s.got.lock().expect("got").push(Got {
        delivery: header(weft::delivery::outbox::DELIVERY_HEADER),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        verified,
    });
    let mode = *s.mode.lock().expect("mode");
    match mode {
        Mode::Ok => StatusCode::OK,
        Mode::Fail => StatusCode::SERVICE_UNAVAILABLE,
        Mode::Hang(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK
        }
    }
}

/// A free loopback port with nothing listening on it (until a test starts something there).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The harness configuration plus a delivery section: fast polling and short backoff so the
/// tests take seconds, and webhooks as given (agency, role, url).
fn config(env: &Env, hooks: &[(&str, &str, &str)], max_attempts: u32) -> String {
    let mut text = env.config(false);
    text.push_str(&format!(
        "\n[delivery]\npoll_ms = 100\nlease_secs = 2\nmax_attempts = {max_attempts}\n\
         backoff_initial_ms = 500\nbackoff_max_ms = 1000\nwebhook_timeout_ms = 10000\n"
    ));
    for (i, (agency, role, url)) in hooks.iter().enumerate() {
        text.push_str(&format!(
            "\n[[delivery.webhooks]]\nid = \"hook-{i}\"\nagency = {agency:?}\nrole = {role:?}\n\
             url = {url:?}\nsecret = {SECRET:?}\n"
        ));
    }
    text
}

fn concern(nhs: &str, category: &str) -> Value {
    json!({
        "child": {"nhs_number": nhs},
        "category": category,
        "urgency": "urgent",
        "observed": {
            "what": "Arrived with a bruise on the forearm; said an adult at home grabbed her.",
            "when": "2025-10-07T08:50:00Z",
            "how": "disclosed",
            "where": "school gate"
        },
        "actions_taken": ["Recorded the disclosure verbatim", "Did not contact parents"],
        "reporter": {"name": "A. Teacher", "role": "Designated safeguarding lead"}
    })
}

async fn post_with_key(gw: &Gateway, token: &str, key: &str, body: &Value) -> (u16, Value) {
    let r = gw
        .client()
        .post(gw.url("/v1/concerns"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn inbox(gw: &Gateway, token: &str) -> Vec<Value> {
    let (status, body) = gw.get("/v1/inbox?limit=1000", token).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

fn recipient<'a>(view: &'a Value, key: &str) -> &'a Value {
    view["recipients"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["recipient"] == key))
        .unwrap_or_else(|| panic!("recipient {key} in {view}"))
}

/// The scenario child: known to social care (child in need), allocated worker, on roll.
fn scenario(env: &Env) -> (&SimChild, String) {
    let child = env.partners.population.scenario().expect("scenario child");
    let worker = child
        .social_care
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .map(|a| a.worker.clone())
        .expect("allocated worker");
    (child, worker)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dsls_concern_reaches_the_mash_webhook_and_the_workers_inbox_and_both_acknowledge() {
    let env = Env::new(30).await;
    let mash_hook = Receiver::start().await;
    let text = config(
        &env,
        &[(SOCIAL_CARE_AGENCY, "mash_officer", &mash_hook.url())],
        8,
    );
    let gw = Gateway::start(&env, env.write_config("weft.toml", &text)).await;
    let (child, worker) = scenario(&env);
    let dsl = env.token("dsl-1", SCHOOL_AGENCY, "dsl");
    let sw = env.token(&worker, SOCIAL_CARE_AGENCY, "social_worker");
    let mash = env.token("mash-1", SOCIAL_CARE_AGENCY, "mash_officer");
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;

    let body = concern(&child.truth.nhs_number, "physical_abuse");
    let (status, created) = post_with_key(&gw, &dsl, "dsl-1-0001", &body).await;
    assert_eq!(status, 201, "{created}");
    let concern_id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["child"], id.as_str());
    assert_eq!(created["matched_on"], "nhs_number");
    assert_eq!(created["child_status"], "child_in_need");
    let mash_key = format!("role:{SOCIAL_CARE_AGENCY}:mash_officer");
    let worker_key = format!("user:{SOCIAL_CARE_AGENCY}:{worker}");
    assert_eq!(recipient(&created, &mash_key)["channel"], "webhook");
    assert_eq!(recipient(&created, &worker_key)["channel"], "inbox");

    // A retry with the same key returns the original; the same key for another body is refused.
    let (status, again) = post_with_key(&gw, &dsl, "dsl-1-0001", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], concern_id.as_str());
    let (status, _) = post_with_key(
        &gw,
        &dsl,
        "dsl-1-0001",
        &concern(&child.truth.nhs_number, "neglect"),
    )
    .await;
    assert_eq!(status, 409);

    // The MASH's receiver gets it, signed.
    let got = eventually("the MASH webhook", Duration::from_secs(20), || async {
        mash_hook
            .got()
            .into_iter()
            .find(|g| g.body["subject"] == concern_id.as_str())
    })
    .await;
    assert!(got.verified, "the signature verifies: {got:?}");
    assert_eq!(got.body["id"], got.delivery.as_str());
    assert_eq!(got.body["data"]["body"]["category"], "physical_abuse");
    assert_eq!(got.body["data"]["child"], id.as_str());

    // The allocated worker finds it in their inbox.
    let item = eventually("the worker's inbox", Duration::from_secs(20), || async {
        inbox(&gw, &sw)
            .await
            .into_iter()
            .find(|i| i["subject"] == concern_id.as_str())
    })
    .await;
    assert_eq!(item["topic"], "concern");
    assert_eq!(
        item["payload"]["data"]["body"]["observed"]["how"],
        "disclosed"
    );

    // Both have it: the DSL sees `received` for each. The webhook's delivery is marked
    // received once the gateway has the MASH's answer, which may be just after the receiver
    // has the request.
    let received = |view: &Value, key: &str| recipient(view, key)["state"] == "received";
    eventually("both received", Duration::from_secs(20), || async {
        let (_, view) = gw.get(&format!("/v1/concerns/{concern_id}"), &dsl).await;
        (received(&view, &mash_key) && received(&view, &worker_key)).then_some(())
    })
    .await;

    // Both acknowledge; the worker takes it on and closes it with an outcome.
    let step = |token: String, body: Value| {
        let gw = &gw;
        let path = format!("/v1/concerns/{concern_id}/status");
        async move { gw.post(&path, &token, &body).await }
    };
    let (s, v) = step(mash.clone(), json!({"state": "acknowledged"})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = step(
        sw.clone(),
        json!({"state": "acknowledged", "note": "Seen; calling the school"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = step(sw.clone(), json!({"state": "in_progress"})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = step(sw.clone(), json!({"state": "closed"})).await;
    assert_eq!(s, 400, "closing needs an outcome: {v}");
    assert!(
        v["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .any(|e| e["pointer"] == "/outcome"
                || e["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("outcome")),
        "{v}"
    );
    let (s, v) = step(
        sw.clone(),
        json!({"state": "closed", "outcome": "strategy_discussion"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = step(sw.clone(), json!({"state": "acknowledged"})).await;
    assert_eq!(s, 409, "no step backwards");
    let (s, _) = step(dsl.clone(), json!({"state": "acknowledged"})).await;
    assert_eq!(s, 403, "the reporter is not a recipient");
    let outsider = env.token("nurse-1", HEALTH_AGENCY, "health_practitioner");
    let (s, _) = gw
        .get(&format!("/v1/concerns/{concern_id}"), &outsider)
        .await;
    assert_eq!(s, 403, "nobody else sees the concern");

    // An addendum is appended; the concern itself is as submitted.
    let (s, v) = gw
        .post(
            &format!("/v1/concerns/{concern_id}/addenda"),
            &dsl,
            &json!({"text": "Sibling also disclosed this afternoon."}),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    // The DSL sees every step.
    let (_, view) = gw.get(&format!("/v1/concerns/{concern_id}"), &dsl).await;
    assert_eq!(view["concern"], body, "never edited");
    assert_eq!(recipient(&view, &mash_key)["state"], "acknowledged");
    let w = recipient(&view, &worker_key);
    assert_eq!(w["state"], "closed");
    assert_eq!(w["outcome"], "strategy_discussion");
    let steps: Vec<(String, String)> = view["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap_or_default().to_string(),
                h["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for wanted in [
        ("submitted", ""),
        ("status", "received"),
        ("status", "acknowledged"),
        ("status", "in_progress"),
        ("status", "closed"),
        ("addendum", ""),
    ] {
        assert!(
            steps.iter().any(|(k, s)| k == wanted.0 && s == wanted.1),
            "{wanted:?} in {steps:?}"
        );
    }
    // …and is told of each recipient's step in their inbox.
    let updates = eventually("the DSL's inbox", Duration::from_secs(20), || async {
        let items: Vec<Value> = inbox(&gw, &dsl)
            .await
            .into_iter()
            .filter(|i| i["topic"] == "concern_update")
            .collect();
        (items.len() == 4).then_some(items)
    })
    .await;
    // Deliveries run concurrently, so the inbox's order is delivery order; compare as a set.
    let mut states: Vec<&str> = updates
        .iter()
        .filter_map(|u| u["payload"]["data"]["state"].as_str())
        .collect();
    states.sort_unstable();
    assert_eq!(
        states,
        ["acknowledged", "acknowledged", "closed", "in_progress"]
    );

    // Everything was audited.
    let ig = env.token("ig-1", SOCIAL_CARE_AGENCY, "ig_officer");
    let (_, audit) = gw
        .get(&format!("/v1/audit?child={id}&limit=1000"), &ig)
        .await;
    let actions: BTreeSet<&str> = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "concern_submit",
        "concern_status",
        "concern_addendum",
        "concern_view",
    ] {
        assert!(actions.contains(a), "{a} in {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmatched_concern_goes_to_the_mash_for_triage() {
    let env = Env::new(10).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &config(&env, &[], 8))).await;
    let dsl = env.token("dsl-1", SCHOOL_AGENCY, "dsl");
    let mut body = concern("9000000009", "neglect");
    body["child"] =
        json!({"given_name": "Nobody", "family_name": "Known", "birth_date": "2015-01-01"});
    let (status, created) = gw.post("/v1/concerns", &dsl, &body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["matched_on"], "unmatched");
    assert_eq!(created["child"], Value::Null);
    let recipients = created["recipients"].as_array().expect("recipients");
    assert_eq!(recipients.len(), 1, "{created}");
    assert_eq!(
        recipients[0]["recipient"],
        format!("role:{SOCIAL_CARE_AGENCY}:mash_officer")
    );
    let mash = env.token("mash-1", SOCIAL_CARE_AGENCY, "mash_officer");
    eventually("the MASH inbox", Duration::from_secs(20), || async {
        inbox(&gw, &mash)
            .await
            .into_iter()
            .find(|i| i["subject"] == created["id"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_with_deliveries_pending_then_restarted_everything_arrives_once_per_id() {
    let env = Env::new(30).await;
    let hook = Receiver::start().await;
    // The MASH and the school's DSL both take webhooks here, so concerns and alerts are pending
    // at the receiver when the gateway dies.
    let text = config(
        &env,
        &[
            (SOCIAL_CARE_AGENCY, "mash_officer", &hook.url()),
            (SCHOOL_AGENCY, "dsl", &hook.url()),
        ],
        20,
    );
    let path = env.write_config("weft.toml", &text);
    let gw = Gateway::start(&env, path.clone()).await;
    let (child, worker) = scenario(&env);
    let dsl = env.token("dsl-1", SCHOOL_AGENCY, "dsl");
    let police = env.token("pc-1", POLICE_AGENCY, "police_officer");
    let sw = env.token(&worker, SOCIAL_CARE_AGENCY, "social_worker");
    // Longer than anything the test waits for, so the deliveries are still unanswered when the
    // gateway is killed, however loaded the machine is.
    hook.set(Mode::Hang(Duration::from_secs(120)));

    const CONCERNS: usize = 15;
    const INCIDENTS: usize = 3;
    let mut concerns = BTreeSet::new();
    for i in 0..CONCERNS {
        let (s, v) = post_with_key(
            &gw,
            &dsl,
            &format!("kill-{i}"),
            &concern(&child.truth.nhs_number, "emotional_abuse"),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        concerns.insert(v["id"].as_str().expect("id").to_string());
    }
    let mut alerts = 0;
    for i in 0..INCIDENTS {
        let (s, v) = gw
            .post(
                "/v1/events",
                &police,
                &json!({
                    "kind": "police_incident",
                    "source_ref": format!("evt-{i}"),
                    "occurred_at": "2025-10-07T23:10:00Z",
                    "child": {"nhs_number": child.truth.nhs_number},
                    "incident": {
                        "reference": format!("WP/25/{i:04}"),
                        "occurred_at": "2025-10-07T22:40:00Z",
                        "location": "Home address",
                        "domestic_abuse": true,
                        "child_present": true
                    }
                }),
            )
            .await;
        assert_eq!(s, 202, "{v}");
        alerts += v["alerts"].as_array().expect("alerts").len();
    }
    assert_eq!(alerts, INCIDENTS);

    // Wait until the receiver holds requests it has not answered, then kill the gateway.
    eventually("deliveries in flight", Duration::from_secs(20), || async {
        (hook.got().len() >= CONCERNS).then_some(())
    })
    .await;
    // SIGKILL, and waits for the process to end.
    drop(gw);
    // Every request recorded by now was sent by the killed gateway and never answered. (One it
    // sent just before dying may still be on its way into the receiver; it counts as unanswered
    // too, but is not waited for below.)
    let interrupted: BTreeSet<String> = hook.got().into_iter().map(|g| g.delivery).collect();
    hook.set(Mode::Ok);

    let gw = Gateway::start(&env, path).await;
    // Waiting for every subject to arrive once is not enough: the killed gateway's requests
    // already cover most of them. Wait until each interrupted delivery has come again too.
    let by_subject = eventually(
        "every concern and alert delivered, and every interrupted delivery sent again",
        Duration::from_secs(60),
        || async {
            let map = hook.ids_by_subject();
            let concerns_in = concerns.iter().filter(|c| map.contains_key(*c)).count();
            let alerts_in = map.keys().filter(|k| !concerns.contains(*k)).count();
            let got = hook.got();
            let resent = interrupted
                .iter()
                .all(|id| got.iter().filter(|g| &g.delivery == id).count() >= 2);
            (concerns_in == CONCERNS && alerts_in == INCIDENTS && resent).then_some(map)
        },
    )
    .await;
    // Receivers see duplicates only with the same id: one delivery id per subject.
    for (subject, ids) in &by_subject {
        assert_eq!(ids.len(), 1, "{subject}: {ids:?}");
    }
    assert!(
        hook.got().iter().all(|g| g.verified),
        "every request is signed"
    );

    // Nothing is left pending or dead, and the worker's inbox has every concern exactly once.
    let admin = env.token("admin-1", SOCIAL_CARE_AGENCY, "data_admin");
    eventually("the outbox drained", Duration::from_secs(30), || async {
        let (_, pending) = gw.get("/v1/outbox?state=pending", &admin).await;
        let (_, dead) = gw.get("/v1/outbox?state=dead", &admin).await;
        (pending.as_array().is_some_and(Vec::is_empty)
            && dead.as_array().is_some_and(Vec::is_empty))
        .then_some(())
    })
    .await;
    let items = inbox(&gw, &sw).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for i in items.iter().filter(|i| i["topic"] == "concern") {
        *seen
            .entry(i["subject"].as_str().unwrap_or_default().into())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), CONCERNS, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_down_for_a_while_gets_it_later_and_one_that_never_returns_is_dead_lettered() {
    let env = Env::new(20).await;
    let flaky = Receiver::start().await;
    let gone_port = closed_port();
    let text = config(
        &env,
        &[
            (SOCIAL_CARE_AGENCY, "mash_officer", &flaky.url()),
            (
                SCHOOL_AGENCY,
                "dsl",
                &format!("http://127.0.0.1:{gone_port}/hook"),
            ),
        ],
        4,
    );
    let gw = Gateway::start(&env, env.write_config("weft.toml", &text)).await;
    let (child, _) = scenario(&env);
    let dsl = env.token("dsl-1", SCHOOL_AGENCY, "dsl");
    let admin = env.token("admin-1", SOCIAL_CARE_AGENCY, "data_admin");

    // Down for a while: refused, retried with backoff, delivered once it is back.
    flaky.set(Mode::Fail);
    let (s, created) = gw
        .post(
            "/v1/concerns",
            &dsl,
            &concern(&child.truth.nhs_number, "neglect"),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    eventually("two refused attempts", Duration::from_secs(20), || async {
        (flaky.got().len() >= 2).then_some(())
    })
    .await;
    let (_, pending) = gw.get("/v1/outbox?state=pending", &admin).await;
    let row = pending
        .as_array()
        .and_then(|p| p.iter().find(|r| r["channel"] == "webhook"))
        .cloned()
        .expect("the webhook delivery is pending");
    assert!(row["attempts"].as_i64().unwrap_or(0) >= 1, "{row}");
    assert!(
        row["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("503"),
        "{row}"
    );
    assert!(
        row.get("payload").is_none(),
        "administrators never see the content"
    );
    flaky.set(Mode::Ok);
    eventually(
        "delivered after the receiver returned",
        Duration::from_secs(20),
        || async {
            let (_, view) = gw
                .get(
                    &format!(
                        "/v1/concerns/{}",
                        created["id"].as_str().unwrap_or_default()
                    ),
                    &dsl,
                )
                .await;
            (recipient(&view, &format!("role:{SOCIAL_CARE_AGENCY}:mash_officer"))["state"]
                == "received")
                .then_some(())
        },
    )
    .await;
    let ids: BTreeSet<String> = flaky.got().into_iter().map(|g| g.delivery).collect();
    assert_eq!(ids.len(), 1, "every attempt carried the same delivery id");

    // Never returns: the Encompass alert to the school's DSL is dead-lettered after 4 attempts.
    let police = env.token("pc-1", POLICE_AGENCY, "police_officer");
    let (s, v) = gw
        .post(
            "/v1/events",
            &police,
            &json!({
                "kind": "police_incident",
                "occurred_at": "2025-10-07T23:10:00Z",
                "child": {"nhs_number": child.truth.nhs_number},
                "incident": {"reference": "WP/25/9999", "occurred_at": "2025-10-07T22:40:00Z",
                             "location": "Home address", "domestic_abuse": true, "child_present": false}
            }),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let dead = eventually("a dead letter", Duration::from_secs(30), || async {
        let (_, dead) = gw.get("/v1/outbox?state=dead", &admin).await;
        dead.as_array().and_then(|d| d.first().cloned())
    })
    .await;
    assert_eq!(dead["topic"], "alert");
    assert_eq!(dead["attempts"], 4);
    assert_eq!(dead["recipient"], format!("role:{SCHOOL_AGENCY}:dsl"));
    let dsl_token = env.token("dsl-1", SCHOOL_AGENCY, "dsl");
    let (s, _) = gw.get("/v1/outbox?state=dead", &dsl_token).await;
    assert_eq!(s, 403, "administrators only");

    // The receiver comes back at last; the administrator retries; it arrives with its id.
    let back = Receiver::start_on(gone_port).await;
    let dead_id = dead["id"].as_str().expect("id").to_string();
    let (s, v) = gw
        .post(&format!("/v1/outbox/{dead_id}/retry"), &admin, &json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let got = eventually("the retried delivery", Duration::from_secs(20), || async {
        back.got().into_iter().find(|g| g.delivery == dead_id)
    })
    .await;
    assert!(got.verified);
    let enc = &got.body["data"]["detail"]["operation_encompass"];
    assert_eq!(enc["police_reference"], "WP/25/9999");
    assert_eq!(enc["child_present"], false);
    assert_eq!(enc["location"], "Home address");
    assert!(got.body["data"]["detail"]["deliver_by"].is_string());
    let (s, _) = gw
        .post(&format!("/v1/outbox/{dead_id}/retry"), &admin, &json!({}))
        .await;
    assert_eq!(s, 404, "only dead deliveries are retried");
}

/// Children whose NHS number every system records, so a feed can name them by it.
fn feedable(env: &Env, n: usize) -> Vec<&SimChild> {
    let picked: Vec<&SimChild> = env
        .partners
        .population
        .children
        .iter()
        .filter(|c| c.in_all_four() && c.nhs_number_everywhere() && !c.scenario)
        .take(n)
        .collect();
    assert_eq!(picked.len(), n, "population has {n} feedable children");
    picked
}

/// School days (Monday to Friday) from `start`, `n` of them.
fn school_days(start: chrono::NaiveDate, n: usize) -> Vec<chrono::NaiveDate> {
    use chrono::Datelike;
    (0..)
        .map(|d| start + chrono::Duration::days(d))
        .filter(|d| d.weekday().number_from_monday() <= 5)
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attendance_feed_crossing_the_threshold_raises_one_alert_per_child_per_window() {
    let env = Env::new(40).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &config(&env, &[], 8))).await;
    let children = feedable(&env, 3);
    let sw = env.token("sw-1", SOCIAL_CARE_AGENCY, "social_worker");
    let ids: Vec<String> = futures::future::join_all(
        children
            .iter()
            .map(|c| gw.child_by_nhs(&sw, &c.truth.nhs_number)),
    )
    .await;
    // The education welfare officer watches all three.
    let ewo = env.token("ewo-1", "la-ewo", "education_welfare_officer");
    let (s, v) = gw
        .post(
            "/v1/subscriptions",
            &ewo,
            &json!({"cohort": ids, "kinds": ["persistent_absence"], "delivery": {"inbox": true}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let teacher = env.token("mis-feed", SCHOOL_AGENCY, "teacher");

    // Two 28-day windows from 2025-09-01 (the rule's anchor is 2024-09-02, 13 windows before).
    // Child 0 attends throughout; child 1 stops after 8 days; child 2 stops in the second window.
    let days = school_days(
        chrono::NaiveDate::from_ymd_opt(2025, 9, 1).expect("date"),
        40,
    );
    let attended = |child: usize, day: usize| match child {
        0 => true,
        1 => day < 8,
        _ => day < 25,
    };
    let feed = |pass: &'static str, range: std::ops::Range<usize>| {
        let gw = &gw;
        let teacher = &teacher;
        let children = &children;
        let days = &days;
        async move {
            let mut raised: BTreeMap<usize, usize> = BTreeMap::new();
            for d in range {
                for (ci, c) in children.iter().enumerate() {
                    let day = days[d].to_string();
                    let (s, v) = gw
                        .post(
                            "/v1/events",
                            teacher,
                            &json!({
                                "kind": "attendance",
                                "source_ref": format!("{pass}-{ci}-{day}"),
                                "occurred_at": format!("{day}T16:00:00Z"),
                                "child": {"nhs_number": c.truth.nhs_number},
                                "attendance": {"from": day, "to": day, "possible_sessions": 2,
                                               "attended_sessions": if attended(ci, d) { 2 } else { 0 }}
                            }),
                        )
                        .await;
                    assert_eq!(s, 202, "{v}");
                    assert_eq!(v["matched_on"], "nhs_number", "{v}");
                    *raised.entry(ci).or_default() +=
                        v["alerts"].as_array().map(Vec::len).unwrap_or(0);
                }
            }
            raised
        }
    };
    let first = feed("a", 0..20).await;
    assert_eq!(first.get(&0), Some(&0), "full attendance: no alert");
    assert_eq!(first.get(&1), Some(&1), "one alert in the first window");
    assert_eq!(first.get(&2), Some(&0));
    // The same window sent again (a re-export with new references): nothing new.
    let replay = feed("b", 0..20).await;
    assert!(replay.values().all(|n| *n == 0), "{replay:?}");
    let second = feed("c", 20..40).await;
    assert_eq!(second.get(&0), Some(&0));
    assert_eq!(second.get(&1), Some(&1), "one more, for the second window");
    assert_eq!(second.get(&2), Some(&1), "one, when it crossed");

    // The subscriber's inbox holds exactly those alerts, one per child per window.
    let alerts = eventually("the alerts delivered", Duration::from_secs(20), || async {
        let items: Vec<Value> = inbox(&gw, &ewo)
            .await
            .into_iter()
            .filter(|i| i["topic"] == "alert")
            .collect();
        (items.len() == 3).then_some(items)
    })
    .await;
    let mut per: BTreeSet<(String, String)> = BTreeSet::new();
    for a in &alerts {
        let d = &a["payload"]["data"];
        assert_eq!(d["alert"], "persistent_absence");
        let window = d["detail"]["alert_window_starts"]
            .as_str()
            .unwrap_or_default();
        assert!(
            per.insert((
                a["child"].as_str().unwrap_or_default().into(),
                window.into()
            )),
            "one per child per window: {alerts:?}"
        );
        let pct = d["detail"]["attendance_percent"].as_f64().unwrap_or(100.0);
        match d["detail"]["reason"].as_str() {
            Some("below_threshold") => assert!(pct < 90.0, "{d}"),
            Some("dropped") => assert!(pct <= 90.0, "a drop of 10 points from 100: {d}"),
            other => panic!("reason {other:?}"),
        }
    }
    assert!(
        per.contains(&(ids[1].clone(), "2025-09-01".into())),
        "{per:?}"
    );
    assert!(
        per.contains(&(ids[1].clone(), "2025-09-29".into())),
        "{per:?}"
    );
    assert!(
        per.contains(&(ids[2].clone(), "2025-09-29".into())),
        "{per:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn encompass_reaches_the_dsl_and_access_to_a_protected_childs_status_is_told_to_the_worker() {
    let env = Env::new(60).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &config(&env, &[], 8))).await;
    let (child, worker) = scenario(&env);
    let police = env.token("pc-1", POLICE_AGENCY, "police_officer");
    let dsl = env.token("dsl-1", SCHOOL_AGENCY, "dsl");
    let incident = json!({
        "kind": "police_incident",
        "source_ref": "storm-0001",
        "occurred_at": "2025-10-07T23:10:00Z",
        "child": {"nhs_number": child.truth.nhs_number},
        "incident": {"reference": "WP/25/0042", "occurred_at": "2025-10-07T22:40:00Z",
                     "location": "Home address", "domestic_abuse": true, "child_present": true}
    });
    let (s, v) = gw.post("/v1/events", &police, &incident).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["alerts"], json!(["domestic_abuse_incident"]));
    let (s, v) = gw.post("/v1/events", &police, &incident).await;
    assert_eq!(s, 200, "a resend is recognised: {v}");
    assert_eq!(v["duplicate"], true);
    let item = eventually("the DSL's inbox", Duration::from_secs(20), || async {
        inbox(&gw, &dsl)
            .await
            .into_iter()
            .find(|i| i["topic"] == "alert")
    })
    .await;
    let enc = &item["payload"]["data"]["detail"]["operation_encompass"];
    assert_eq!(enc["police_reference"], "WP/25/0042");
    assert_eq!(enc["child_present"], true);
    assert_eq!(enc["incident_at"], "2025-10-07T22:40:00Z");
    assert!(item["payload"]["data"]["detail"]["deliver_by"].is_string());
    assert_eq!(
        inbox(&gw, &dsl)
            .await
            .iter()
            .filter(|i| i["topic"] == "alert")
            .count(),
        1,
        "one alert per incident"
    );
    // The allocated worker hears of the incident too (subscribed automatically).
    let sw = env.token(&worker, SOCIAL_CARE_AGENCY, "social_worker");
    eventually("the worker's inbox", Duration::from_secs(20), || async {
        inbox(&gw, &sw)
            .await
            .into_iter()
            .find(|i| i["topic"] == "event")
    })
    .await;

    // A health practitioner views the status of a child on a protection plan: the allocated
    // worker is told who, when and why. A social worker's view tells nobody.
    let pc = env
        .partners
        .population
        .children
        .iter()
        .find(|c| {
            c.in_all_four()
                && c.nhs_number_everywhere()
                && c.social_care.as_ref().is_some_and(|s| {
                    s.allocation.is_some()
                        && s.current().is_some_and(|e| {
                            matches!(
                                e.kind,
                                EpisodeKind::ChildProtection | EpisodeKind::LookedAfter
                            )
                        })
                })
        })
        .expect("a child on a plan or looked after, with a worker, in all four systems");
    let protected = pc.social_care.as_ref().expect("record");
    let pc_worker = protected
        .allocation
        .as_ref()
        .expect("worker")
        .worker
        .clone();
    let their_sw = env.token(&pc_worker, SOCIAL_CARE_AGENCY, "social_worker");
    let id = gw.child_by_nhs(&their_sw, &pc.truth.nhs_number).await;
    let (s, _) = gw
        .get(
            &format!("/v1/children/{id}?purpose=safeguarding"),
            &their_sw,
        )
        .await;
    assert_eq!(s, 200);
    let nurse = env.token("nurse-7", HEALTH_AGENCY, "health_practitioner");
    let (s, view) = gw
        .get(&format!("/v1/children/{id}?purpose=direct_care"), &nurse)
        .await;
    assert_eq!(s, 200, "{view}");
    let note = eventually(
        "the access notification",
        Duration::from_secs(20),
        || async {
            inbox(&gw, &their_sw)
                .await
                .into_iter()
                .find(|i| i["topic"] == "notification" && i["child"] == id.as_str())
        },
    )
    .await;
    let d = &note["payload"]["data"];
    assert_eq!(d["viewed_by"]["user"], "nurse-7");
    assert_eq!(d["viewed_by"]["agency"], HEALTH_AGENCY);
    assert_eq!(d["purpose"], "direct_care");
    assert!(d["viewed_at"].is_string());
    let notes = inbox(&gw, &their_sw)
        .await
        .into_iter()
        .filter(|i| i["topic"] == "notification")
        .count();
    assert_eq!(notes, 1, "the worker's own view is not notified");
}

/// Rows in one of the gateway's tables, read straight from its database.
async fn rows(env: &Env, table: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&env.store.url).await.expect("store");
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_concerns_and_events_are_refused_with_pointers_and_nothing_is_stored() {
    let env = Env::new(10).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &config(&env, &[], 8))).await;
    let dsl = env.token("dsl-1", SCHOOL_AGENCY, "dsl");
    let police = env.token("pc-1", POLICE_AGENCY, "police_officer");

    let pointers = |v: &Value| -> BTreeSet<String> {
        v["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|e| e["pointer"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Every error, each with its pointer.
    let (s, v) = gw
        .post(
            "/v1/concerns",
            &dsl,
            &json!({
                "child": {"nhs_number": 9000000009u64},
                "category": "gossip",
                "urgency": "whenever",
                "observed": {"what": "", "when": "last tuesday"},
                "reporter": {"role": "DSL"},
                "extra": 1
            }),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let p = pointers(&v);
    for wanted in [
        "/child/nhs_number",
        "/category",
        "/urgency",
        "/observed/what",
        "/observed/when",
        "/reporter",
    ] {
        assert!(p.contains(wanted), "{wanted} in {p:?}");
    }
    // Schema-valid but wrong: an NHS number failing its check digit is 422, not 400.
    let (s, v) = gw
        .post("/v1/concerns", &dsl, &concern("9000000015", "neglect"))
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"], "unprocessable", "{v}");
    assert!(pointers(&v).contains("/child/nhs_number"), "{v}");
    // Not JSON at all.
    let r = gw
        .client()
        .post(gw.url("/v1/concerns"))
        .bearer_auth(&dsl)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);

    let (s, v) = gw
        .post(
            "/v1/events",
            &police,
            &json!({"kind": "police_incident", "occurred_at": "2025-10-07T23:10:00Z",
                    "child": {"nhs_number": "9000000009"},
                    "incident": {"reference": "", "occurred_at": "2025-10-07", "location": "x",
                                 "domestic_abuse": "yes", "child_present": true}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let p = pointers(&v);
    for wanted in [
        "/incident/reference",
        "/incident/occurred_at",
        "/incident/domestic_abuse",
    ] {
        assert!(p.contains(wanted), "{wanted} in {p:?}");
    }
    let (s, v) = gw
        .post(
            "/v1/events",
            &police,
            &json!({"kind": "attendance", "occurred_at": "2025-10-07T23:10:00Z",
                    "child": {"nhs_number": "9000000009"}}),
        )
        .await;
    assert_eq!(s, 400, "an attendance event without its marks: {v}");
    let (s, v) = gw
        .post(
            "/v1/events",
            &env.token("t-1", SCHOOL_AGENCY, "teacher"),
            &json!({"kind": "attendance", "occurred_at": "2025-10-07T23:10:00Z",
                    "child": {"nhs_number": "9000000009"},
                    "attendance": {"from": "2025-10-07", "to": "2025-10-06",
                                   "possible_sessions": 2, "attended_sessions": 3}}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(pointers(&v).contains("/attendance/to"), "{v}");
    // Police do not report attendance.
    let (s, _) = gw
        .post(
            "/v1/events",
            &police,
            &json!({"kind": "attendance", "occurred_at": "2025-10-07T23:10:00Z",
                    "child": {"nhs_number": "9000000009"},
                    "attendance": {"from": "2025-10-07", "to": "2025-10-07",
                                   "possible_sessions": 2, "attended_sessions": 2}}),
        )
        .await;
    assert_eq!(s, 403);

    for table in [
        "concerns",
        "concern_recipients",
        "concern_log",
        "events",
        "alerts",
        "attendance_marks",
        "outbox",
        "inbox",
    ] {
        assert_eq!(rows(&env, table).await, 0, "{table} is empty");
    }
    // The refusals themselves are audited.
    let ig = env.token("ig-1", SOCIAL_CARE_AGENCY, "ig_officer");
    let (_, audit) = gw.get("/v1/audit?user=dsl-1", &ig).await;
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "concern_submit" && e["outcome"] == "rejected"),
        "{audit}"
    );
}

/// One value per row of a query, as text, for comparing a table before and after.
async fn column(env: &Env, sql: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&env.store.url).await.expect("store");
    let rows: Vec<String> = sqlx::query_scalar(sql)
        .fetch_all(&pool)
        .await
        .expect("query");
    pool.close().await;
    rows
}

/// Everything a write path can change, as text: row counts of every table a write touches,
/// and the states that are updated in place.
async fn written(env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    for table in [
        "concerns",
        "concern_recipients",
        "concern_log",
        "outbox",
        "inbox",
        "events",
        "alerts",
        "attendance_marks",
        "subscriptions",
        "subscription_children",
        "consents",
        "break_glass",
        "match_links",
        "audit_log",
    ] {
        out.push(format!("{table}: {}", rows(env, table).await));
    }
    for sql in [
        "SELECT recipient || ' ' || state FROM concern_recipients ORDER BY recipient",
        "SELECT id || ' ' || status FROM consents ORDER BY id",
        "SELECT id || ' ' || COALESCE(review_outcome, 'unreviewed') FROM break_glass ORDER BY id",
        "SELECT id || ' ' || status || ' ' || COALESCE(child_id, '') FROM match_links ORDER BY id",
        "SELECT id || ' ' || state FROM outbox ORDER BY id",
    ] {
        out.extend(column(env, sql).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_audit_failing_no_write_is_stored_or_delivered() {
    let env = Env::new(30).await;
    // Every demographic match waits for a person, so there is one to decide.
    let text = format!(
        "{}\n[matching]\nupper = 1.0\nlower = 0.5\n",
        config(&env, &[], 8)
    );
    let gw = Gateway::start(&env, env.write_config("weft.toml", &text)).await;
    let (child, worker) = scenario(&env);
    let nhs = child.truth.nhs_number.clone();
    let dsl = env.token("dsl-1", SCHOOL_AGENCY, "dsl");
    let sw = env.token(&worker, SOCIAL_CARE_AGENCY, "social_worker");
    let police = env.token("pc-1", POLICE_AGENCY, "police_officer");
    let ewo = env.token("ewo-1", "la-ewo", "education_welfare_officer");
    let teacher = env.token("teacher-9", "urn-200002", "teacher");
    let ig = env.token("ig-1", SOCIAL_CARE_AGENCY, "ig_officer");
    let admin = env.token("admin-1", SOCIAL_CARE_AGENCY, "data_admin");
    let id = gw.child_by_nhs(&sw, &nhs).await;

    // Something for each update to act on, made while the audit works.
    let (s, created) = gw
        .post("/v1/concerns", &dsl, &concern(&nhs, "neglect"))
        .await;
    assert_eq!(s, 201, "{created}");
    let concern_id = created["id"].as_str().expect("id").to_string();
    let consent = json!({
        "resourceType": "Consent",
        "status": "active",
        "grantor": {"relationship": "parental_responsibility", "name": "A parent"},
        "period": {"start": "2020-01-01"},
        "provision": [{"purpose": ["early_help"], "category": ["education.*"], "actor": [SOCIAL_CARE_AGENCY]}]
    });
    let (s, recorded) = gw
        .post(&format!("/v1/children/{id}/consents"), &sw, &consent)
        .await;
    assert_eq!(s, 201, "{recorded}");
    let consent_id = recorded["id"].as_str().expect("id").to_string();
    let justification = "Child collapsed in class; need GP details for paramedics";
    let (s, grant) = gw
        .post(
            &format!("/v1/children/{id}/break-glass"),
            &teacher,
            &json!({"purpose": "safeguarding", "justification": justification}),
        )
        .await;
    assert_eq!(s, 201, "{grant}");
    let grant_id = grant["id"].as_str().expect("id").to_string();
    let (s, queue) = gw.get("/v1/matches/review", &admin).await;
    assert_eq!(s, 200, "{queue}");
    let match_id = queue["matches"][0]["id"]
        .as_str()
        .expect("a match awaits review")
        .to_string();
    // The first concern's deliveries are made before the count, so the count is still.
    eventually("deliveries settle", Duration::from_secs(20), || async {
        let pending = column(&env, "SELECT id FROM outbox WHERE state = 'pending'").await;
        pending.is_empty().then_some(())
    })
    .await;
    let inboxes = |who: &'static str| {
        let token = match who {
            "sw" => sw.clone(),
            "dsl" => dsl.clone(),
            _ => ewo.clone(),
        };
        let gw = &gw;
        async move { inbox(gw, &token).await.len() }
    };
    let before_inboxes = (
        inboxes("sw").await,
        inboxes("dsl").await,
        inboxes("ewo").await,
    );
    let before = written(&env).await;

    block_audit(&env.store.url, true).await;
    let incident = json!({
        "kind": "police_incident",
        "source_ref": "blocked-0001",
        "occurred_at": "2025-10-07T23:10:00Z",
        "child": {"nhs_number": nhs},
        "incident": {"reference": "WP/25/0099", "occurred_at": "2025-10-07T22:40:00Z",
                     "location": "Home address", "domestic_abuse": true, "child_present": true}
    });
    let attempts: Vec<(&str, String, &String, Value)> = vec![
        (
            "concern submit",
            "/v1/concerns".into(),
            &dsl,
            concern(&nhs, "emotional_abuse"),
        ),
        (
            "concern status",
            format!("/v1/concerns/{concern_id}/status"),
            &sw,
            json!({"state": "acknowledged"}),
        ),
        (
            "concern addendum",
            format!("/v1/concerns/{concern_id}/addenda"),
            &dsl,
            json!({"text": "Sibling also disclosed this afternoon."}),
        ),
        (
            "subscription",
            "/v1/subscriptions".into(),
            &ewo,
            json!({"cohort": [id], "kinds": ["persistent_absence"], "delivery": {"inbox": true}}),
        ),
        ("event", "/v1/events".into(), &police, incident),
        (
            "consent record",
            format!("/v1/children/{id}/consents"),
            &sw,
            consent.clone(),
        ),
        (
            "consent withdraw",
            format!("/v1/children/{id}/consents/{consent_id}/withdraw"),
            &sw,
            json!({"reason": "family asked"}),
        ),
        (
            "break-glass request",
            format!("/v1/children/{id}/break-glass"),
            &teacher,
            json!({"purpose": "safeguarding", "justification": justification}),
        ),
        (
            "break-glass review",
            format!("/v1/ig/break-glass/{grant_id}/review"),
            &ig,
            json!({"outcome": "justified", "notes": "medical emergency"}),
        ),
        (
            "match decision",
            format!("/v1/matches/{match_id}/decision"),
            &admin,
            json!({"decision": "confirm", "reason": "same date of birth and address"}),
        ),
    ];
    for (what, path, token, body) in &attempts {
        let (s, v) = gw.post(path, token, body).await;
        assert_eq!(s, 503, "{what}: {v}");
        assert_eq!(v["error"], "audit_unavailable", "{what}: a JSON error: {v}");
    }
    // Longer than the outbox's poll: anything queued would have been delivered by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = written(&env).await;
    block_audit(&env.store.url, false).await;
    assert_eq!(before, after, "nothing stored");
    assert_eq!(
        (
            inboxes("sw").await,
            inboxes("dsl").await,
            inboxes("ewo").await
        ),
        before_inboxes,
        "nothing delivered"
    );

    // The same writes succeed once the audit can be written: the failures were the audit's.
    for (what, path, token, body) in &attempts {
        let (s, v) = gw.post(path, token, body).await;
        assert!((200..300).contains(&s), "{what}: {s} {v}");
    }
}
