//! Gateway nodes that scale out: several nodes on one PostgreSQL database index the same
//! sources at the same moment without errors and without making any child twice.

use weft_adapters::testkit;

use crate::harness::{Env, Gateway};

/// Children holding each verified NHS number: more than one means two nodes each made a child
/// for the same person.
async fn children_per_nhs_number(url: &str) -> Vec<i64> {
    use sqlx::Row as _;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("store");
    sqlx::query(
        "SELECT COUNT(DISTINCT sr.child_id) AS n FROM record_identifiers ri \
         JOIN source_records sr ON sr.source = ri.source AND sr.local_id = ri.local_id \
         WHERE ri.kind = 'nhs_number' GROUP BY ri.value",
    )
    .fetch_all(&pool)
    .await
    .expect("children per NHS number")
    .iter()
    .map(|r| r.get::<i64, _>("n"))
    .collect()
}

/// Warnings and errors, but the 503s `/readyz` answers the harness until the first pass is
/// done, and sqlx's note that taking the index's lock took over a second: one node waits
/// there while the other writes a batch, which on a loaded machine can take that long.
fn problems(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .filter(|l| !(l.contains("tower_http") && l.contains("503 Service Unavailable")))
        .filter(|l| !(l.contains("slow statement") && l.contains("UPDATE index_epoch")))
        .collect()
}

async fn count(url: &str, table: &str) -> i64 {
    use sqlx::Row as _;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("store");
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&pool)
        .await
        .expect("count")
        .get("n")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_starting_together_index_without_errors_and_one_child_per_person() {
    // Enough children that the listable sources take the index's bulk path.
    let env = Env::new(160).await;
    let pg = testkit::fresh_postgres()
        .await
        .expect("this test needs PostgreSQL: set WEFT_TEST_POSTGRES_URL (scripts/test does)");
    let text = env.config(false).replace(&env.store.url, &pg.url);
    let config = env.write_config("weft-nodes.toml", &text);
    let ((a, logs_a), (b, logs_b)) = tokio::join!(
        Gateway::start_logged(&env, config.clone()),
        Gateway::start_logged(&env, config.clone())
    );
    // Both are ready: each has finished its first pass over every source. Nothing went wrong
    // on the way but the 503s `/readyz` answered the harness until then.
    let logged = problems([logs_a.lines(), logs_b.lines()].concat());
    assert!(logged.is_empty(), "{logged:#?}");
    let per = children_per_nhs_number(&pg.url).await;
    assert!(!per.is_empty());
    assert!(per.iter().all(|n| *n == 1), "{per:?}");
    let two = count(&pg.url, "children").await;
    drop((a, b));

    // One node alone on a database of its own makes as many children from the same sources.
    let alone = testkit::fresh_postgres().await.expect("PostgreSQL");
    let text = env.config(false).replace(&env.store.url, &alone.url);
    let config = env.write_config("weft-alone.toml", &text);
    let (one, logs) = Gateway::start_logged(&env, config).await;
    assert!(problems(logs.lines()).is_empty());
    assert_eq!(count(&alone.url, "children").await, two);
    drop(one);
    drop(env);
    pg.drop_db().await.expect("drop");
    alone.drop_db().await.expect("drop");
}
