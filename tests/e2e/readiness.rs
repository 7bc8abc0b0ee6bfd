//! Readiness: `/readyz` tells anyone only whether the gateway can serve, and it can serve only
//! if its database takes writes; the detail behind it is `GET /v1/status`, for data
//! administrators.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use crate::harness::{store_backend, Env, Gateway};

/// `/readyz` without credentials: status and body.
async fn readyz(gw: &Gateway) -> (u16, Value, String) {
    let r = gw
        .client()
        .get(gw.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    let status = r.status().as_u16();
    let text = r.text().await.expect("text");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body, text)
}

/// Polls `/readyz` until it answers `status`; returns its body.
async fn readyz_until(gw: &Gateway, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body, _) = readyz(gw).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status}; last {got}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_says_only_ready_or_not_and_the_detail_is_for_data_administrators() {
    let env = Env::new(6).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;

    let (status, body, text) = readyz(&gw).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        body,
        json!({"ready": true, "checks": {"database": "ok", "index": "ready"}})
    );
    for a in &env.partners.agencies {
        assert!(!text.contains(&a.id), "agency id {} in {text}", a.id);
    }
    for s in &env.partners.sources {
        assert!(!text.contains(&s.id), "source id {} in {text}", s.id);
    }

    let csc = env.agency_of("social_care");
    let admin = env.token("admin-3", &csc, "data_admin");
    let sw = env.token("sw-3", &csc, "social_worker");
    let ig = env.token("ig-3", &csc, "ig_officer");
    assert_eq!(gw.get("/v1/status", "not-a-token").await.0, 401);
    let (status, body) = gw.get("/v1/status", &sw).await;
    assert_eq!(status, 403, "{body}");
    let (status, report) = gw.get("/v1/status", &admin).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ready"], true, "{report}");
    assert_eq!(report["checks"]["database"], "ok", "{report}");
    assert!(report["policy"]["rules"].as_u64() > Some(0), "{report}");
    assert!(
        report["policy"].get("refused").is_some_and(Value::is_null),
        "policy.refused shown, null while the policy loaded: {report}"
    );
    assert!(report["index"]["children"].as_i64() > Some(0), "{report}");
    assert!(report["index"]["records"].as_u64() > Some(0), "{report}");
    let sources = report["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), env.partners.sources.len(), "{report}");
    for (s, configured) in sources.iter().zip(&env.partners.sources) {
        assert_eq!(s["source"], configured.id.as_str());
        assert!(
            s.get("calls_ok").is_some() && s.get("last_error").is_some(),
            "{s}"
        );
    }

    for (user, outcome) in [("admin-3", "shown"), ("sw-3", "denied")] {
        let (status, entries) = gw.get(&format!("/v1/audit?user={user}"), &ig).await;
        assert_eq!(status, 200, "{entries}");
        let found = entries
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "status" && e["outcome"] == outcome);
        assert!(
            found,
            "{user}'s read of /v1/status audited as {outcome}: {entries}"
        );
    }
}

/// A database that answers reads but cannot be written cannot keep the audit log: the gateway is
/// not ready while it is so, and ready again once it takes writes. On SQLite another connection
/// holds the write lock; on PostgreSQL the database is made read-only and the gateway's
/// connections are ended, so that it reconnects to a database refusing every write.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_cannot_be_written_is_not_ready() {
    let env = Env::new(3).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let admin = env.token("admin-4", &env.agency_of("social_care"), "data_admin");
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&env.store.url)
        .await
        .expect("a connection of the test's own to the gateway's store");

    match store_backend() {
        "postgres" => {
            let name: String = sqlx::query_scalar("SELECT current_database()::text")
                .fetch_one(&mut db)
                .await
                .expect("database name");
            read_only(&mut db, &name, true).await;
        }
        _ => {
            db.execute("BEGIN EXCLUSIVE").await.expect("write lock");
        }
    }
    let body = readyz_until(&gw, 503).await;
    assert_eq!(
        body,
        json!({"ready": false, "checks": {"database": "unavailable", "index": "ready"}})
    );
    // The detail cannot be audited either, so it is not shown.
    let (status, body) = gw.get("/v1/status", &admin).await;
    assert_eq!(status, 503, "{body}");

    match store_backend() {
        "postgres" => {
            let name: String = sqlx::query_scalar("SELECT current_database()::text")
                .fetch_one(&mut db)
                .await
                .expect("database name");
            read_only(&mut db, &name, false).await;
        }
        _ => {
            db.execute("ROLLBACK").await.expect("release the lock");
        }
    }
    readyz_until(&gw, 200).await;
    let (status, body) = gw.get("/v1/status", &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "ok", "{body}");
}

/// Makes new sessions on database `name` read-only (or writable again), and ends every other
/// session on it so that the gateway's pool reconnects under the new default.
async fn read_only(db: &mut sqlx::AnyConnection, name: &str, on: bool) {
    let setting = if on {
        "SET default_transaction_read_only = on"
    } else {
        "RESET default_transaction_read_only"
    };
    db.execute(format!("ALTER DATABASE \"{name}\" {setting}").as_str())
        .await
        .expect("alter database");
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await
    .expect("end the gateway's sessions");
}
