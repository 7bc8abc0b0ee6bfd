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
    let status = gw.stop().await;
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
    assert!(out.contains("BROKEN (changed) at entry 3"), "{out}");

    on_store(
        &env.store.url,
        "UPDATE audit_log SET outcome = substr(outcome, 1, length(outcome) - 1) WHERE seq = 3",
    )
    .await;
    on_store(&env.store.url, "DELETE FROM audit_log WHERE seq = 4").await;
    let (code, out, _) = run_weft(&["audit", "verify", "-c", cfg]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("BROKEN (missing) at entry 4"), "{out}");
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

/// One audit row as stored, for tampering from outside the gateway.
#[derive(Clone)]
struct Row {
    seq: i64,
    text: [String; 6], // at, user, agency, role, action, outcome
    child: Option<String>,
    purpose: Option<String>,
    detail: String,
    prev: String,
    hash: String,
}

async fn any_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(url).await.expect("store")
}

async fn read_rows(url: &str) -> Vec<Row> {
    use sqlx::Row as _;
    let pool = any_pool(url).await;
    let rows = sqlx::query(
        "SELECT seq, at, user_id, agency, role, action, outcome, child_id, purpose, detail, \
         prev_hash, hash FROM audit_log ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .expect("rows");
    rows.iter()
        .map(|r| Row {
            seq: r.get("seq"),
            text: ["at", "user_id", "agency", "role", "action", "outcome"].map(|c| r.get(c)),
            child: r.get("child_id"),
            purpose: r.get("purpose"),
            detail: r.get("detail"),
            prev: r.get("prev_hash"),
            hash: r.get("hash"),
        })
        .collect()
}

/// Replaces the log and its head with `rows`, every hash recomputed with the published
/// algorithm: what someone with write access to the database, but not the signing key, can do.
async fn rewrite(url: &str, rows: &mut [Row]) {
    use sha2::Digest;
    let mut prev = "0".repeat(64);
    for r in rows.iter_mut() {
        let [at, user, agency, role, action, outcome] = &r.text;
        let canonical =
            json!([r.seq, at, user, agency, role, action, r.child, r.purpose, outcome, r.detail]);
        let mut h = sha2::Sha256::new();
        h.update(prev.as_bytes());
        h.update(b"\n");
        h.update(canonical.to_string().as_bytes());
        r.prev = prev;
        r.hash = hex::encode(h.finalize());
        prev = r.hash.clone();
    }
    let pool = any_pool(url).await;
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("DELETE FROM audit_log")
        .execute(&mut *tx)
        .await
        .expect("delete");
    for r in rows.iter() {
        let [at, user, agency, role, action, outcome] = &r.text;
        sqlx::query(
            "INSERT INTO audit_log (seq, at, user_id, agency, role, action, outcome, child_id, \
             purpose, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12)",
        )
        .bind(r.seq)
        .bind(at)
        .bind(user)
        .bind(agency)
        .bind(role)
        .bind(action)
        .bind(outcome)
        .bind(r.child.as_deref())
        .bind(r.purpose.as_deref())
        .bind(&r.detail)
        .bind(&r.prev)
        .bind(&r.hash)
        .execute(&mut *tx)
        .await
        .expect("insert");
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(rows.last().map_or(0, |r| r.seq))
        .bind(&prev)
        .execute(&mut *tx)
        .await
        .expect("head");
    tx.commit().await.expect("commit");
}

fn broken(cfg: &str, kind: &str) -> String {
    let (code, out, err) = run_weft(&["audit", "verify", "-c", cfg]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains(&format!("BROKEN ({kind})")), "{out}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_name_rewrites_truncation_wipes_and_forged_appends() {
    let env = Env::new(6).await;
    // Checkpoints every 3 entries, beside the directory and key the test environment sets.
    let text = env.config(false).replacen(
        "checkpoint_dir = ",
        "checkpoint_every_entries = 3\ncheckpoint_dir = ",
        1,
    );
    let config = env.write_config("weft.toml", &text);
    let cfg = config.to_str().expect("utf-8 path");
    let gw = Gateway::start(&env, config.clone()).await;
    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let child = &env.partners.population.children[1];
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    gw.refer(&env, &child.truth.nhs_number).await; // the relationship: a referral
    for _ in 0..8 {
        let path = format!("/v1/children/{id}?purpose=safeguarding");
        assert_eq!(gw.get(&path, &sw).await.0, 200);
    }
    assert!(gw.stop().await.success());

    let (code, out, err) = run_weft(&["audit", "verify", "-c", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("checkpoints, the entries up to"), "{out}");
    let checkpoints = env.dir.path().join("audit-checkpoints");
    assert!(
        std::fs::read_dir(&checkpoints)
            .expect("checkpoints")
            .count()
            >= 3,
        "checkpoints every 3 entries and one at shutdown"
    );

    // A third party: the export and the public key, and nothing else.
    let export = env.dir.path().join("export");
    let (code, out, err) = run_weft(&["audit", "export", export.to_str().unwrap(), "-c", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let public = env.dir.path().join("given-public-key.pem");
    std::fs::copy(checkpoints.join("audit-public-key.pem"), &public).expect("key");
    let (code, out, err) = run_weft(&[
        "audit",
        "verify",
        "--export",
        export.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit chain OK"), "{out}");

    let url = &env.store.url;
    let original = read_rows(url).await;
    let n = original.len();

    // A view recorded as someone else's, every hash after it recomputed.
    let mut rows = original.clone();
    rows[n - 3].text[1] = "sw-2".into();
    rewrite(url, &mut rows).await;
    let out = broken(cfg, "rewritten");
    assert!(
        out.contains("rewritten and their hashes recomputed"),
        "{out}"
    );

    // The newest entries deleted and the head moved back to match.
    let mut rows = original[..n - 2].to_vec();
    rewrite(url, &mut rows).await;
    let out = broken(cfg, "truncated");
    assert!(out.contains("removed from the end"), "{out}");

    rewrite(url, &mut []).await;
    let out = broken(cfg, "wiped");
    assert!(out.contains("holds no entries"), "{out}");

    // An entry added after the last checkpoint, dated before it.
    let mut rows = original.clone();
    let mut forged = rows[n - 1].clone();
    forged.seq += 1;
    forged.text[0] = "2020-01-01T00:00:00.000000Z".into();
    rows.push(forged);
    rewrite(url, &mut rows).await;
    let out = broken(cfg, "forged append");
    assert!(out.contains("appended after the fact"), "{out}");

    // Put back as it was, the chain verifies again: nothing above was a false alarm.
    let mut rows = original.clone();
    rewrite(url, &mut rows).await;
    let (code, out, err) = run_weft(&["audit", "verify", "-c", cfg]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The number of audit entries, read from the store.
async fn audit_count(url: &str) -> i64 {
    let pool = any_pool(url).await;
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_records_terms_unreadable_requests_and_each_ig_officers_own_agency() {
    let env = Env::new(8).await;
    let text = format!("{}\n[limits]\nbody_bytes = 4096\n", env.config(false));
    let gw = Gateway::start(&env, env.write_config("weft.toml", &text)).await;
    let la = env.agency_of("social_care");
    let school = env.agency_of("education");
    let sw = env.token("sw-1", &la, "social_worker");
    let dsl = env.token("dsl-1", &school, "dsl");
    let police = env.token("pc-1", &env.agency_of("police"), "police_officer");
    let lead = env.token("ig-1", &la, "ig_officer");
    let school_ig = env.token("ig-school", &school, "ig_officer");
    let child = &env.partners.population.children[1];
    let id = gw.child_by_nhs(&sw, &child.truth.nhs_number).await;
    gw.refer(&env, &child.truth.nhs_number).await; // the relationship: a referral

    // A search that found nobody is traced by what was searched for.
    let (s, _) = gw
        .post(
            "/v1/children/search",
            &police,
            &json!({"purpose": "safeguarding", "nhs_number": "9912003888"}),
        )
        .await;
    assert_eq!(s, 200);
    let found = entries(&gw, &lead, "user=pc-1").await;
    assert_eq!(found[0]["outcome"], "no_match", "{found:?}");
    assert_eq!(found[0]["detail"]["terms"]["nhs_number"], "9912003888");

    // Parameters that cannot be read: a JSON refusal, and an entry naming the route.
    let (s, body) = gw
        .get_text(
            &format!("/v1/children/{id}?purpose=safeguarding&purpose=direct_care"),
            &sw,
        )
        .await;
    assert_eq!(s, 400, "{body}");
    let v: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(v["error"], "bad_request");
    assert!(
        v["message"].as_str().unwrap_or("").contains("purpose"),
        "{v}"
    );
    let (s, body) = gw.get_text("/v1/inbox?limit=-5", &dsl).await;
    assert_eq!(s, 400, "{body}");
    let v: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(v["error"], "bad_request");
    assert!(!body.contains("-5"), "the value is not repeated: {body}");
    let sw_entries = entries(&gw, &lead, "user=sw-1").await;
    assert_eq!(sw_entries[0]["action"], "GET /v1/children/{id}");
    assert_eq!(sw_entries[0]["outcome"], "rejected");
    let dsl_entries = entries(&gw, &lead, "user=dsl-1").await;
    assert_eq!(dsl_entries[0]["action"], "GET /v1/inbox");
    assert_eq!(dsl_entries[0]["outcome"], "rejected");

    // A body over the limit is refused before authentication: counted, not audited.
    let before = audit_count(&env.store.url).await;
    let r = gw
        .client()
        .post(gw.url("/v1/concerns"))
        .bearer_auth(&dsl)
        .header("content-type", "application/json")
        .body(format!("{{\"pad\": \"{}\"}}", "x".repeat(10_000)))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.expect("a JSON error");
    assert_eq!(v["error"], "payload_too_large");
    assert_eq!(audit_count(&env.store.url).await, before, "not audited");
    let metrics = gw
        .client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weft_http_requests_total")
                && l.contains("route=\"/v1/concerns\"")
                && l.contains("status=\"413\"")
                && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The school's IG officer: the school's staff, and the reads of the school's data.
    let (s, _) = gw
        .get(&format!("/v1/children/{id}?purpose=safeguarding"), &sw)
        .await;
    assert_eq!(s, 200);
    let seen = entries(&gw, &school_ig, "limit=1000").await;
    assert!(!seen.is_empty());
    for e in &seen {
        let own_staff = e["agency"] == school.as_str();
        let school_data_shown = e["detail"]["sources"].as_object().is_some_and(|s| {
            s.iter().any(|(source, status)| {
                status == "shown"
                    && env
                        .partners
                        .sources
                        .iter()
                        .any(|c| c.id == *source && c.agency == school)
            })
        });
        assert!(own_staff || school_data_shown, "not the school's: {e}");
    }
    assert!(seen.iter().any(|e| e["user"] == "dsl-1"), "its own staff");
    assert!(
        seen.iter()
            .any(|e| e["user"] == "sw-1" && e["action"] == "view" && e["outcome"] == "shown"),
        "a read of its data by another agency"
    );
    assert!(
        !seen.iter().any(|e| e["user"] == "pc-1"),
        "not the police's search"
    );
    let everything = entries(&gw, &lead, "limit=1000").await;
    assert!(
        everything.iter().any(|e| e["user"] == "pc-1"),
        "the IG lead sees all"
    );

    // Another agency's break-glass is not the school IG officer's to see or review.
    let teacher = env.token("teacher-9", "urn-200002", "teacher");
    let (s, grant) = gw
        .post(
            &format!("/v1/children/{id}/break-glass"),
            &teacher,
            &json!({"purpose": "safeguarding", "justification": "Child collapsed in class; need GP details for paramedics"}),
        )
        .await;
    assert_eq!(s, 201, "{grant}");
    let gid = grant["id"].as_str().expect("id");
    let (s, queue) = gw.get("/v1/ig/break-glass", &school_ig).await;
    assert_eq!((s, queue), (200, json!([])));
    let review = json!({"outcome": "justified", "notes": "medical emergency"});
    let path = format!("/v1/ig/break-glass/{gid}/review");
    assert_eq!(gw.post(&path, &school_ig, &review).await.0, 404);
    let own_ig = env.token("ig-2", "urn-200002", "ig_officer");
    let (s, queue) = gw.get("/v1/ig/break-glass", &own_ig).await;
    assert_eq!(s, 200);
    assert_eq!(queue.as_array().map(Vec::len), Some(1));
    assert_eq!(gw.post(&path, &own_ig, &review).await.0, 200);
}
