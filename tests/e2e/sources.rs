//! A broken source costs nothing: retries hide a transient failure, a circuit breaker stops
//! calls to a source that keeps failing until a cool-down has passed, and administrators see
//! each source's health at `GET /v1/sources` and in `/metrics`.

use std::time::{Duration, Instant};

use serde_json::Value;
use weft_sim::population::System;
use weft_sim::server::Fault;

use crate::harness::{Env, Gateway};

const DEADLINE_MS: i64 = 600;

/// A gateway whose police source gives up after `failures` consecutive failed reads and probes
/// again after `cool_down_ms`.
async fn start(env: &Env, failures: i64, cool_down_ms: i64) -> Gateway {
    let mut config: toml::Value = toml::from_str(&env.config(false)).expect("config");
    let police = env.partners.source_id(System::Police);
    for s in config["sources"].as_array_mut().expect("sources") {
        s["deadline_ms"] = toml::Value::Integer(DEADLINE_MS);
        if s["id"].as_str() == Some(police.as_str()) {
            let mut r = toml::Table::new();
            r.insert("attempts".into(), toml::Value::Integer(2));
            r.insert("backoff_ms".into(), toml::Value::Integer(10));
            r.insert("breaker_failures".into(), toml::Value::Integer(failures));
            r.insert(
                "breaker_cool_down_ms".into(),
                toml::Value::Integer(cool_down_ms),
            );
            s["resilience"] = toml::Value::Table(r);
        }
    }
    let path = env.write_config("weft.toml", &toml::to_string(&config).expect("toml"));
    Gateway::start(env, path).await
}

fn police_in<'a>(view: &'a Value, police: &str) -> &'a Value {
    view["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["source"] == police))
        .unwrap_or_else(|| panic!("police in view: {view}"))
}

fn health_of<'a>(report: &'a Value, source: &str) -> &'a Value {
    report["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["source"] == source))
        .unwrap_or_else(|| panic!("{source} in /v1/sources: {report}"))
}

/// The value of a metric line with these label values, if exposed.
async fn metric(gw: &Gateway, name: &str, labels: &[&str]) -> Option<f64> {
    let text = gw
        .client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_source_opens_its_breaker_is_not_called_then_a_probe_closes_it() {
    let env = Env::new(12).await;
    let cool_down = Duration::from_millis(1_500);
    let gw = start(&env, 4, cool_down.as_millis() as i64).await;
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let admin = env.token("admin-1", &env.agency_of("social_care"), "data_admin");
    let child = env
        .partners
        .population
        .linkable_disagreement()
        .expect("child");
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    gw.refer(&env, &child.truth.nhs_number).await;
    let police = env.partners.source_id(System::Police);
    let faults = env.partners.fault(System::Police);
    let path = format!("/v1/children/{id}?purpose=safeguarding");
    let view = || async {
        let started = Instant::now();
        let (status, view) = gw.get(&path, &sw).await;
        assert_eq!(status, 200, "{view}");
        (police_in(&view, &police).clone(), started.elapsed())
    };

    // Four different failures in a row: each is shown with its reason, on time.
    let before = faults.requests();
    for (fault, reason) in [
        (Fault::Hang, "timeout"),
        (Fault::Status(500), "source_error"),
        (Fault::Garbage, "bad_response"),
        (Fault::DropConnection, "connection_failed"),
    ] {
        faults.set(fault);
        let (p, took) = view().await;
        assert_eq!(p["status"], "unavailable", "{fault:?}: {p}");
        assert_eq!(p["reason"], reason, "{fault:?}: {p}");
        assert!(
            took < Duration::from_millis(DEADLINE_MS as u64 + 400),
            "{fault:?}: took {took:?}"
        );
    }
    let failing_calls = faults.requests() - before;
    assert!(failing_calls >= 4, "each failing view asked the source");

    // The breaker is open: the source is not asked, and the view says why.
    let before = faults.requests();
    for _ in 0..3 {
        let (p, took) = view().await;
        assert_eq!(p["status"], "unavailable", "{p}");
        assert_eq!(p["reason"], "circuit_open", "{p}");
        assert!(took < Duration::from_millis(DEADLINE_MS as u64), "{took:?}");
    }
    assert_eq!(
        faults.requests(),
        before,
        "no call while the breaker is open"
    );

    let (status, report) = gw.get("/v1/sources", &admin).await;
    assert_eq!(status, 200, "{report}");
    let h = health_of(&report, &police);
    assert_eq!(h["kind"], "http_json", "{h}");
    assert_eq!(h["state"], "unavailable", "{h}");
    assert_eq!(h["breaker"]["state"], "open", "{h}");
    assert_eq!(h["breaker"]["consecutive_failures"], 4, "{h}");
    assert!(h["breaker"]["probe_after"].is_string(), "{h}");
    assert_eq!(h["last_error"]["reason"], "connection_failed", "{h}");
    assert!(h["calls_refused"].as_u64() >= Some(3), "{h}");
    assert!(h["calls_failed"].as_u64() >= Some(4), "{h}");
    // The other sources are untouched.
    let health = env.partners.source_id(System::Health);
    assert_eq!(health_of(&report, &health)["breaker"]["state"], "closed");
    assert_eq!(health_of(&report, &health)["state"], "ok");

    let breaker = metric(&gw, "weft_source_breaker_state", &[&police]).await;
    assert_eq!(breaker, Some(2.0), "open breaker in /metrics");
    let refused = metric(
        &gw,
        "weft_source_errors_total",
        &[&police, "reason=\"circuit_open\""],
    )
    .await;
    assert!(
        refused >= Some(3.0),
        "circuit_open errors counted: {refused:?}"
    );
    for reason in [
        "timeout",
        "source_error",
        "bad_response",
        "connection_failed",
    ] {
        let n = metric(
            &gw,
            "weft_source_errors_total",
            &[&police, &format!("reason=\"{reason}\"")],
        )
        .await;
        assert_eq!(n, Some(1.0), "{reason} counted once");
    }

    // After the cool-down one probe goes; the source still fails, so the breaker opens again
    // and the next view does not call it.
    tokio::time::sleep(cool_down + Duration::from_millis(100)).await;
    faults.set(Fault::Status(503));
    let before = faults.requests();
    let (p, _) = view().await;
    assert_eq!(
        p["reason"], "source_error",
        "the probe reached the source: {p}"
    );
    assert!(faults.requests() > before, "the probe was sent");
    let before = faults.requests();
    let (p, _) = view().await;
    assert_eq!(
        p["reason"], "circuit_open",
        "a failed probe reopens it: {p}"
    );
    assert_eq!(faults.requests(), before);

    // The source recovers; the next probe after the cool-down closes the breaker.
    faults.set(Fault::Normal);
    tokio::time::sleep(cool_down + Duration::from_millis(100)).await;
    let (p, _) = view().await;
    assert_eq!(p["status"], "shown", "the probe succeeded: {p}");
    let (p, _) = view().await;
    assert_eq!(p["status"], "shown", "closed again: {p}");
    let (_, report) = gw.get("/v1/sources", &admin).await;
    let h = health_of(&report, &police);
    assert_eq!(h["breaker"]["state"], "closed", "{h}");
    assert_eq!(h["breaker"]["times_opened"], 2, "{h}");
    assert_eq!(h["state"], "ok", "{h}");
    assert_eq!(
        metric(&gw, "weft_source_breaker_state", &[&police]).await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_failure_is_retried_and_the_source_shown() {
    let env = Env::new(12).await;
    let gw = start(&env, 4, 30_000).await;
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let child = env
        .partners
        .population
        .linkable_disagreement()
        .expect("child");
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    gw.refer(&env, &child.truth.nhs_number).await;
    let police = env.partners.source_id(System::Police);
    let faults = env.partners.fault(System::Police);
    let path = format!("/v1/children/{id}?purpose=safeguarding");

    for fault in [Fault::Status(503), Fault::DropConnection] {
        faults.set_for(fault, 1);
        let before = faults.requests();
        let (status, view) = gw.get(&path, &sw).await;
        assert_eq!(status, 200, "{view}");
        let p = police_in(&view, &police);
        assert_eq!(p["status"], "shown", "{fault:?} once, then an answer: {p}");
        assert_eq!(faults.requests() - before, 2, "{fault:?}: one retry");
    }
    // A failure that would fail again is not retried.
    faults.set_for(Fault::Garbage, 1);
    let before = faults.requests();
    let (_, view) = gw.get(&path, &sw).await;
    assert_eq!(police_in(&view, &police)["reason"], "bad_response");
    assert_eq!(faults.requests() - before, 1, "garbage is not retried");

    let retries = metric(&gw, "weft_source_retries_total", &[&police]).await;
    assert_eq!(retries, Some(2.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn source_health_is_for_data_administrators_and_every_read_is_audited() {
    let env = Env::new(8).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let csc = env.agency_of("social_care");
    let sw = env.token("sw-9", &csc, "social_worker");
    let admin = env.token("admin-9", &csc, "data_admin");
    let ig = env.token("ig-9", &csc, "ig_officer");

    let (status, body) = gw.get("/v1/sources", &sw).await;
    assert_eq!(status, 403, "{body}");
    let (status, report) = gw.get("/v1/sources", &admin).await;
    assert_eq!(status, 200, "{report}");
    let sources = report["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), env.partners.sources.len());
    for (s, configured) in sources.iter().zip(&env.partners.sources) {
        assert_eq!(s["source"], configured.id.as_str(), "configuration order");
        assert_eq!(s["kind"], configured.adapter.kind());
        assert_eq!(s["breaker"]["state"], "closed", "{s}");
        // The start-up index pass read every source.
        assert_eq!(s["state"], "ok", "{s}");
        assert!(s["calls_ok"].as_u64() >= Some(1), "{s}");
    }
    let (status, _) = gw.get("/v1/sources", "not-a-token").await;
    assert_eq!(status, 401);

    for (user, outcome) in [("admin-9", "shown"), ("sw-9", "denied")] {
        let (status, entries) = gw.get(&format!("/v1/audit?user={user}"), &ig).await;
        assert_eq!(status, 200, "{entries}");
        let found = entries
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "sources" && e["outcome"] == outcome);
        assert!(
            found,
            "{user}'s read of /v1/sources audited as {outcome}: {entries}"
        );
    }
}
