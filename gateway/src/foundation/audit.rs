//! Audit: the last stage before a response leaves. Every read, search and denial becomes an
//! append-only entry whose hash covers the previous entry's hash, written durably before the
//! caller sees anything. If it cannot be written, the caller gets 503 and no data.
//!
//! Appends go through one writer task per process that commits whatever has queued up in a
//! single transaction (group commit), so the chain's serial section costs one round of locking
//! per batch, not per request. Across processes the head row's lock (`UPDATE audit_head`, taken
//! first in every batch) serialises writers, so several gateway nodes on one PostgreSQL still
//! build one chain.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::foundation::store::Store;

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Most entries committed in one transaction; bounds the latency a batch adds, and keeps the
/// batch's one INSERT (12 parameters an entry) well inside SQLite's and PostgreSQL's limits.
const MAX_BATCH: usize = 256;

/// What happened, ready to be chained. `detail` carries the disclosure: lawful basis, categories
/// shown and withheld, the rule ids, each source's status.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub user: String,
    pub agency: String,
    pub role: String,
    /// `view`, `search`, `audit_query`.
    pub action: String,
    pub child: Option<String>,
    pub purpose: Option<String>,
    /// `shown`, `denied`, `rejected`, `no_match`, `found`.
    pub outcome: String,
    pub detail: serde_json::Value,
}

impl Entry {
    /// An entry for what the gateway does on its own rather than at someone's request (the
    /// matcher linking a record): the IG officer finds these under the user `matcher`.
    pub fn system(
        action: &str,
        child: Option<&str>,
        outcome: &str,
        detail: serde_json::Value,
    ) -> Entry {
        Entry {
            at: Utc::now(),
            user: "matcher".into(),
            agency: "weft".into(),
            role: "system".into(),
            action: action.into(),
            child: child.map(String::from),
            purpose: None,
            outcome: outcome.into(),
            detail,
        }
    }
}

/// An entry as stored, with its place in the chain.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Recorded {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: Entry,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store unavailable: {0}")]
    Store(#[from] sqlx::Error),
    #[error("audit writer has stopped")]
    Stopped,
    #[error("audit entry cannot be read back: {0}")]
    Corrupt(String),
}

/// The canonical bytes an entry's hash covers. `detail` is hashed as the exact text stored, so
/// verification never depends on re-serialising JSON the same way.
fn digest(prev_hash: &str, seq: i64, at: &str, e: &Entry, detail: &str) -> String {
    let canonical = serde_json::json!([
        seq, at, e.user, e.agency, e.role, e.action, e.child, e.purpose, e.outcome, detail
    ]);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
}

fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

type Pending = (Entry, oneshot::Sender<Result<i64, String>>);

/// The handle requests append through. Cloning is cheap; the writer stops when every handle is
/// dropped or [`Auditor::close`] is called, after committing what was queued.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Pending>,
    closing: Arc<Notify>,
}

impl Auditor {
    /// Starts the writer task.
    pub fn start(store: Store) -> (Auditor, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Pending>(4096);
        let closing = Arc::new(Notify::new());
        let task = tokio::spawn(writer(store, rx, closing.clone()));
        (Auditor { tx, closing }, task)
    }

    /// Asks the writer to commit what is queued and stop. Appends after that fail (and their
    /// requests fail closed), so it is called once the server has stopped taking requests.
    pub fn close(&self) {
        self.closing.notify_one();
    }

    /// Appends one entry and waits until it is committed. Returns its sequence number.
    pub async fn append(&self, entry: Entry) -> Result<i64, AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((entry, done))
            .await
            .map_err(|_| AuditError::Stopped)?;
        match wait.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(AuditError::Store(sqlx::Error::Protocol(e))),
            Err(_) => Err(AuditError::Stopped),
        }
    }
}

async fn writer(store: Store, mut rx: mpsc::Receiver<Pending>, closing: Arc<Notify>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut closed = false;
    loop {
        if closed {
            // Drain what was queued before the close, then stop taking more.
            rx.close();
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                break;
            }
        } else {
            tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => if n == 0 { break },
                () = closing.notified() => {
                    closed = true;
                    continue;
                }
            }
        }
        let result = commit(&store, &batch).await;
        crate::foundation::metrics::AUDIT_BATCH.observe(batch.len() as f64);
        match result {
            Ok(first) => {
                for (i, (_, done)) in batch.drain(..).enumerate() {
                    let _ = done.send(Ok(first + i as i64));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "audit append failed; requests fail closed");
                crate::foundation::metrics::AUDIT_FAILURES.inc();
                for (_, done) in batch.drain(..) {
                    let _ = done.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Chains and inserts a batch in one transaction; returns the first sequence number.
async fn commit(store: &Store, batch: &[Pending]) -> Result<i64, sqlx::Error> {
    let mut tx = store.begin_write().await?;
    let entries: Vec<&Entry> = batch.iter().map(|(e, _)| e).collect();
    let first = chain(&mut tx, &entries).await?;
    tx.commit().await?;
    Ok(first)
}

/// Chains entries onto the head and inserts them on `conn`, which must be inside the caller's
/// transaction: a change and the entries recording it then commit together or not at all.
/// Takes the head row's lock, so the caller should do it last, just before committing.
/// Returns the first entry's sequence number; with no entries it touches nothing and returns 0.
pub async fn chain(conn: &mut AnyConnection, entries: &[&Entry]) -> Result<i64, sqlx::Error> {
    if entries.is_empty() {
        return Ok(0);
    }
    // Taking the head row's write lock first makes every appender, in any process, wait here
    // rather than read a head that is about to move.
    sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let mut seq: i64 = head.try_get("seq")?;
    let mut prev: String = head.try_get("hash")?;
    let first = seq + 1;
    // Chain the whole batch first, then write it in one statement: one round trip per batch
    // rather than per entry.
    struct Row {
        seq: i64,
        at: String,
        detail: String,
        prev: String,
        hash: String,
    }
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        seq += 1;
        let at = timestamp(&entry.at);
        let detail = entry.detail.to_string();
        let hash = digest(&prev, seq, &at, entry, &detail);
        rows.push(Row {
            seq,
            at,
            detail,
            prev: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    let mut sql = String::from(
        "INSERT INTO audit_log (seq, at, user_id, agency, role, action, child_id, purpose, \
         outcome, detail, prev_hash, hash) VALUES ",
    );
    for i in 0..rows.len() {
        let p = i * 12;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(
            &(1..=12)
                .map(|k| format!("${}", p + k))
                .collect::<Vec<_>>()
                .join(", "),
        );
        sql.push(')');
    }
    let mut insert = sqlx::query(&sql);
    for (row, entry) in rows.iter().zip(entries) {
        insert = insert
            .bind(row.seq)
            .bind(&row.at)
            .bind(&entry.user)
            .bind(&entry.agency)
            .bind(&entry.role)
            .bind(&entry.action)
            .bind(entry.child.as_deref())
            .bind(entry.purpose.as_deref())
            .bind(&entry.outcome)
            .bind(&row.detail)
            .bind(&row.prev)
            .bind(&row.hash);
    }
    insert.execute(&mut *conn).await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev)
        .execute(&mut *conn)
        .await?;
    Ok(first)
}

/// Filters for the IG officer's audit query.
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Query {
    /// Weft child id.
    pub child: Option<String>,
    /// Practitioner user id.
    pub user: Option<String>,
    /// RFC 3339 lower bound on `at`, inclusive.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339 upper bound on `at`, exclusive.
    pub to: Option<DateTime<Utc>>,
    /// Most entries returned (default 100, at most 1000), newest first.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

const COLUMNS: &str =
    "seq, at, user_id, agency, role, action, child_id, purpose, outcome, detail, prev_hash, hash";

fn read_row(row: &sqlx::any::AnyRow) -> Result<(Recorded, String, String), AuditError> {
    let corrupt = |e: sqlx::Error| AuditError::Corrupt(e.to_string());
    let at_text: String = row.try_get("at").map_err(corrupt)?;
    let detail_text: String = row.try_get("detail").map_err(corrupt)?;
    let at = DateTime::parse_from_rfc3339(&at_text)
        .map_err(|e| AuditError::Corrupt(format!("at: {e}")))?
        .with_timezone(&Utc);
    let detail = serde_json::from_str(&detail_text)
        .map_err(|e| AuditError::Corrupt(format!("detail: {e}")))?;
    let recorded = Recorded {
        seq: row.try_get("seq").map_err(corrupt)?,
        entry: Entry {
            at,
            user: row.try_get("user_id").map_err(corrupt)?,
            agency: row.try_get("agency").map_err(corrupt)?,
            role: row.try_get("role").map_err(corrupt)?,
            action: row.try_get("action").map_err(corrupt)?,
            child: row.try_get("child_id").map_err(corrupt)?,
            purpose: row.try_get("purpose").map_err(corrupt)?,
            outcome: row.try_get("outcome").map_err(corrupt)?,
            detail,
        },
        prev_hash: row.try_get("prev_hash").map_err(corrupt)?,
        hash: row.try_get("hash").map_err(corrupt)?,
    };
    Ok((recorded, at_text, detail_text))
}

/// Entries matching the filters, newest first.
pub async fn search(store: &Store, q: &Query) -> Result<Vec<Recorded>, AuditError> {
    let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1");
    let mut binds: Vec<String> = Vec::new();
    let mut filter = |clause: &str, value: String| {
        binds.push(value);
        sql.push_str(&format!(" AND {clause} ${}", binds.len()));
    };
    if let Some(c) = &q.child {
        filter("child_id =", c.clone());
    }
    if let Some(u) = &q.user {
        filter("user_id =", u.clone());
    }
    if let Some(f) = &q.from {
        filter("at >=", timestamp(f));
    }
    if let Some(t) = &q.to {
        filter("at <", timestamp(t));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT {limit}"));
    let mut query = sqlx::query(&sql);
    for b in &binds {
        query = query.bind(b);
    }
    let rows = query.fetch_all(&store.pool).await?;
    rows.iter()
        .map(|r| read_row(r).map(|(rec, _, _)| rec))
        .collect()
}

/// What `weft audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Entries read.
    pub entries: i64,
    /// The first break in the chain, if any.
    pub problem: Option<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The sequence number of the first entry that is not as it was written.
    pub seq: i64,
    pub what: String,
}

/// Walks the whole chain from the first entry and names the first one that was changed,
/// removed or reordered. Reads in pages so a long chain never sits in memory at once.
pub async fn verify(store: &Store) -> Result<Verification, AuditError> {
    const PAGE: i64 = 5_000;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_string();
    let mut count = 0i64;
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT {PAGE}"
        ))
        .bind(expected_seq)
        .fetch_all(&store.pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let (rec, at, detail) = match read_row(row) {
                Ok(r) => r,
                Err(e) => {
                    let seq: i64 = row.try_get("seq").unwrap_or(expected_seq);
                    return Ok(broken(count, seq, format!("entry {seq} was changed: {e}")));
                }
            };
            count += 1;
            if rec.seq != expected_seq {
                return Ok(broken(
                    count,
                    expected_seq,
                    format!(
                        "entry {expected_seq} is missing (the chain jumps from {} to {})",
                        expected_seq - 1,
                        rec.seq
                    ),
                ));
            }
            if digest(&rec.prev_hash, rec.seq, &at, &rec.entry, &detail) != rec.hash {
                return Ok(broken(
                    count,
                    rec.seq,
                    format!("entry {} was changed", rec.seq),
                ));
            }
            if rec.prev_hash != prev {
                return Ok(broken(
                    count,
                    rec.seq,
                    format!(
                        "entry {} does not follow entry {}: removed or reordered",
                        rec.seq,
                        rec.seq - 1
                    ),
                ));
            }
            prev = rec.hash;
            expected_seq += 1;
        }
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&store.pool)
        .await?;
    let head_seq: i64 = head.try_get("seq")?;
    let head_hash: String = head.try_get("hash")?;
    if head_seq != expected_seq - 1 || head_hash != prev {
        let first_missing = expected_seq.min(head_seq);
        return Ok(broken(
            count,
            first_missing,
            format!(
                "the chain ends at entry {} but its head records entry {head_seq}: newest entries removed",
                expected_seq - 1
            ),
        ));
    }
    Ok(Verification {
        entries: count,
        problem: None,
    })
}

fn broken(entries: i64, seq: i64, what: String) -> Verification {
    Verification {
        entries,
        problem: Some(Problem { seq, what }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::store::test_store;

    fn entry(user: &str) -> Entry {
        Entry {
            at: Utc::now(),
            user: user.into(),
            agency: "la-csc".into(),
            role: "social_worker".into(),
            action: "view".into(),
            child: Some("c1".into()),
            purpose: Some("safeguarding".into()),
            outcome: "shown".into(),
            detail: serde_json::json!({"shown": ["identity.core"]}),
        }
    }

    #[tokio::test]
    async fn chain_verifies_and_names_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let (auditor, task) = Auditor::start(store.clone());
        let appends: Vec<_> = (0..50)
            .map(|i| {
                let a = auditor.clone();
                tokio::spawn(async move { a.append(entry(&format!("u{i}"))).await })
            })
            .collect();
        for a in appends {
            a.await.unwrap().unwrap();
        }
        drop(auditor);
        task.await.unwrap();
        let v = verify(&store).await.unwrap();
        assert_eq!(
            v,
            Verification {
                entries: 50,
                problem: None
            }
        );

        sqlx::query("UPDATE audit_log SET user_id = 'someone-else' WHERE seq = 17")
            .execute(&store.pool)
            .await
            .unwrap();
        let v = verify(&store).await.unwrap();
        assert_eq!(v.problem.unwrap().seq, 17);
    }

    #[tokio::test]
    async fn close_commits_the_queue_and_stops_while_handles_remain() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let (auditor, task) = Auditor::start(store.clone());
        let held = auditor.clone();
        let queued: Vec<_> = (0..20)
            .map(|i| {
                let a = auditor.clone();
                tokio::spawn(async move { a.append(entry(&format!("u{i}"))).await })
            })
            .collect();
        for q in queued {
            q.await.unwrap().unwrap();
        }
        auditor.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("writer stops although a handle is still held")
            .unwrap();
        assert!(matches!(
            held.append(entry("late")).await,
            Err(AuditError::Stopped)
        ));
        assert_eq!(verify(&store).await.unwrap().entries, 20);
    }

    #[tokio::test]
    async fn removals_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let (auditor, _task) = Auditor::start(store.clone());
        for i in 0..5 {
            auditor.append(entry(&format!("u{i}"))).await.unwrap();
        }
        sqlx::query("DELETE FROM audit_log WHERE seq = 5")
            .execute(&store.pool)
            .await
            .unwrap();
        let p = verify(&store).await.unwrap().problem.unwrap();
        assert_eq!(p.seq, 5, "{p:?}");
        sqlx::query("DELETE FROM audit_log WHERE seq = 2")
            .execute(&store.pool)
            .await
            .unwrap();
        let p = verify(&store).await.unwrap().problem.unwrap();
        assert_eq!(p.seq, 2, "{p:?}");
        assert!(p.what.contains("missing"), "{p:?}");
    }
}
