//! The audit log: one entry per request, fail closed, tamper-evident, one chain across nodes.

use serde_json::{json, Value};
use sqlx::Connection;
use weft_adapters::testkit;

use crate::harness::{run_weft, store_backend, Env, Gateway};

async fn entries(gw: &Gateway, ig: &str, query: &str) -> Vec<Value> {
    let (status, body) = gw.get(&format!("/v1/audit?{query}"), ig).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().expect("entries").clone()
}

/// Runs one statement on the gateway's store from outside the gateway.
async fn on_store(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        sqlx::raw_sql(sql).execute(&mut c).await.expect("statement");
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
        sqlx::raw_sql(sql).execute(&mut c).await.expect("statement");
    }
}

/// Entries the matcher wrote as the index pass linked the simulated children's records.
async fn matcher_entries(url: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM audit_log WHERE user_id = 'matcher' AND action = 'match_link'";
    let n: i64 = if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        sqlx::query_scalar(sql)
            .fetch_one(&mut c)
            .await
            .expect("count")
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
        sqlx::query_scalar(sql)
            .fetch_one(&mut c)
            .await
            .expect("count")
    };
    assert!(n > 0, "the index pass's links are audited");
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_leaves_exactly_one_entry() {
    let env = Env::new(8).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let agency = env.agency_of("social_care");
    let sw = env.token("sw-1", &agency, "social_worker");
    let ig = env.token("ig-1", &agency, "ig_officer");
    let child = &env.partners.population.children[1];

    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await; // search: found
    gw.refer(&env, &child.truth.nhs_number).await; // the relationship: a referral
    let view = format!("/v1/children/{id}");
    assert_eq!(
        gw.get(&format!("{view}?purpose=safeguarding"), &sw).await.0,
        200
    );
    assert_eq!(gw.get(&view, &sw).await.0, 400); // no purpose
    assert_eq!(
        gw.get("/v1/children/no-such-child?purpose=safeguarding", &sw)
            .await
            .0,
        404
    );
    assert_eq!(gw.get("/v1/audit", &sw).await.0, 403); // not an IG officer
    let (s, _) = gw
        .post(
            "/v1/children/search",
            &sw,
            &json!({"purpose": "safeguarding", "nhs_number": "9912003888"}),
        )
        .await;
    assert_eq!(s, 200); // search: no match

    let mine = entries(&gw, &ig, "user=sw-1").await;
    let outcomes: Vec<(&str, &str)> = mine
        .iter()
        .rev()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("search", "found"),
            ("view", "shown"),
            ("view", "rejected"),
            ("view", "rejected"),
            ("audit_query", "denied"),
            ("search", "no_match"),
        ]
    );
    let shown = &mine[mine.len() - 2];
    assert_eq!(shown["child"], id.as_str());
    assert_eq!(shown["purpose"], "safeguarding");
    assert!(!shown["detail"]["lawful_basis"]
        .as_array()
        .expect("basis")
        .is_empty());
    assert!(!shown["detail"]["rules"]
        .as_array()
        .expect("rules")
        .is_empty());
    // The IG officer's own query is audited too, after it is answered.
    assert_eq!(entries(&gw, &ig, "user=ig-1").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_audit_no_data() {
    let env = Env::new(6).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let child = &env.partners.population.children[1];
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    gw.refer(&env, &child.truth.nhs_number).await;

    on_store(
        &env.store.url,
        "ALTER TABLE audit_log RENAME TO audit_log_gone",
    )
    .await;
    let (status, body) = gw
        .get_text(&format!("/v1/children/{id}?purpose=safeguarding"), &sw)
        .await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"], "audit_unavailable");
    assert!(
        !body.contains(&child.truth.family_name),
        "no data leaves without an audit entry"
    );
    assert!(v.get("fields").is_none() && v.get("sources").is_none());

    on_store(
        &env.store.url,
        "ALTER TABLE audit_log_gone RENAME TO audit_log",
    )
    .await;
    assert_eq!(
        gw.get(&format!("/v1/children/{id}?purpose=safeguarding"), &sw)
            .await
            .0,
        200,
        "recovers when the store does"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_names_an_edited_or_deleted_entry() {
    let env = Env::new(6).await;
    let config = env.write_config("weft.toml", &env.config(false));
    let gw = Gateway::start(&env, config.clone()).await;
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let child = &env.partners.population.children[1];
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    gw.refer(&env, &child.truth.nhs_number).await;
    for _ in 0..4 {
        assert_eq!(
            gw.get(&format!("/v1/children/{id}?purpose=safeguarding"), &sw)
                .await
                .0,
            200
        );
    }
    let status = gw.stop();
    assert!(
        status.success(),
        "SIGTERM stops the gateway cleanly: {status:?}"
    );
    let cfg = config.to_str().expect("utf-8 path");

    let (code, out, err) = run_weft(&["audit", "verify", "-c", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let total = 6 + matcher_entries(&env.store.url).await;
    assert!(
        out.contains(&format!("audit chain OK: {total} entries")),
        "{out}"
    );

    on_store(
        &env.store.url,
        "UPDATE audit_log SET outcome = outcome || 'x' WHERE seq = 3",
    )
    .await;
    let (code, out, _) = run_weft(&["audit", "verify", "-c", cfg]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("BROKEN at entry 3"), "{out}");

    on_store(
        &env.store.url,
        "UPDATE audit_log SET outcome = substr(outcome, 1, length(outcome) - 1) WHERE seq = 3",
    )
    .await;
    on_store(&env.store.url, "DELETE FROM audit_log WHERE seq = 4").await;
    let (code, out, _) = run_weft(&["audit", "verify", "-c", cfg]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("BROKEN at entry 4") && out.contains("missing"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_postgres_build_one_chain() {
    let env = Env::new(6).await;
    // This test is about PostgreSQL whichever store the run tests: use a database of its own.
    let Some(pg) = testkit::fresh_postgres().await else {
        return;
    };
    let _ = store_backend();
    let text = env.config(false).replace(&env.store.url, &pg.url);
    let config = env.write_config("weft-pg.toml", &text);
    let (a, b) = tokio::join!(
        Gateway::start(&env, config.clone()),
        Gateway::start(&env, config.clone())
    );
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let child = &env.partners.population.children[1];
    let id = a.child_by_nhs(&sw, &child.truth.nhs_number).await;
    a.refer(&env, &child.truth.nhs_number).await;

    let path = format!("/v1/children/{id}?purpose=safeguarding");
    let requests = (0..120).map(|i| {
        let gw = if i % 2 == 0 { &a } else { &b };
        let path = path.clone();
        let sw = sw.clone();
        async move { gw.get(&path, &sw).await.0 }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    drop((a, b));

    let (code, out, err) = run_weft(&["audit", "verify", "-c", config.to_str().expect("path")]);
    assert_eq!(code, 0, "{out}{err}");
    let total = 122 + matcher_entries(&pg.url).await;
    assert!(
        out.contains(&format!("audit chain OK: {total} entries")),
        "{out}"
    );
    drop(env);
    pg.drop_db().await.expect("drop");
}
