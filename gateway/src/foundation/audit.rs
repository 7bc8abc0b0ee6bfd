//! Audit: the last stage before a response leaves. Every read, search and denial becomes an
//! append-only entry whose hash covers the previous entry's hash, written durably before the
//! caller sees anything. If it cannot be written, the caller gets 503 and no data.
//!
//! Appends go through one writer task per process that commits whatever has queued up in a
//! single transaction (group commit), so the chain's serial section costs one round of locking
//! per batch, not per request. Across processes the head row's lock (`UPDATE audit_head`, taken
//! first in every batch, or by the one-statement append that moves the head only from where
//! this writer left it) serialises writers, so several gateway nodes on one PostgreSQL still
//! build one chain.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Row};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::foundation::store::{placeholders, Backend, Cell, Staging, Store};

pub mod checkpoint;

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Most entries committed in one transaction; bounds the latency a batch adds, and keeps
/// SQLite's one INSERT a batch (12 parameters an entry) well inside its limit (PostgreSQL's
/// batch is one JSON value, [`APPEND_ONTO`]).
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
    digest_fields(
        prev_hash,
        seq,
        at,
        [
            e.user.as_str(),
            e.agency.as_str(),
            e.role.as_str(),
            e.action.as_str(),
        ],
        e.child.as_deref(),
        e.purpose.as_deref(),
        &e.outcome,
        detail,
    )
}

#[allow(clippy::too_many_arguments)]
fn digest_fields(
    prev_hash: &str,
    seq: i64,
    at: &str,
    [user, agency, role, action]: [&str; 4],
    child: Option<&str>,
    purpose: Option<&str>,
    outcome: &str,
    detail: &str,
) -> String {
    let canonical =
        serde_json::json!([seq, at, user, agency, role, action, child, purpose, outcome, detail]);
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
    /// `checkpoints`, when configured, is told how many entries each batch appended.
    pub fn start(
        store: Store,
        checkpoints: Option<Arc<checkpoint::Checkpointer>>,
    ) -> (Auditor, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Pending>(4096);
        let closing = Arc::new(Notify::new());
        let task = tokio::spawn(writer(store, rx, closing.clone(), checkpoints));
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
        let _timer = crate::foundation::metrics::AUDIT_WAIT.start_timer();
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

async fn writer(
    store: Store,
    mut rx: mpsc::Receiver<Pending>,
    closing: Arc<Notify>,
    checkpoints: Option<Arc<checkpoint::Checkpointer>>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut closed = false;
    // The last batch's connection, kept while entries are already waiting for the next one:
    // under load every batch would otherwise take a connection from the pool and give it back,
    // and sqlx pings a connection as it comes back (a round trip). It goes back to the pool
    // before the writer waits, so the writer never holds one while idle.
    let mut held: Option<PoolConnection<Any>> = None;
    // The head as this writer's last batch left it (PostgreSQL only): while nobody else has
    // appended since, the next batch chains onto it without reading it first.
    let mut known: Option<Head> = None;
    loop {
        if rx.is_empty() {
            held = None;
        }
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
        let result = commit(&store, &mut held, &mut known, &batch).await;
        crate::foundation::metrics::AUDIT_BATCH.observe(batch.len() as f64);
        match result {
            Ok(first) => {
                if let Some(c) = &checkpoints {
                    c.appended(batch.len());
                }
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

/// Chains and inserts a batch; returns the first sequence number. Runs on `held` if there is
/// one, or on a connection from the pool; the connection is left in `held` only after a
/// commit, so a connection that failed goes back to the pool (which tests it).
///
/// On PostgreSQL a batch after the writer's own last one is first tried as a single statement
/// that moves the head only if it is still where that batch left it ([`append_onto`]): one
/// round trip, committing as it returns, where the locked path takes four (BEGIN, lock and
/// read the head, insert, COMMIT). A request waits for the batch being committed and then its
/// own, so every round trip of a batch is on the path of every answer. If anyone else appended
/// in between (another node, a change recorded in its own transaction), the statement changes
/// nothing and the batch takes the locked path.
async fn commit(
    store: &Store,
    held: &mut Option<PoolConnection<Any>>,
    known: &mut Option<Head>,
    batch: &[Pending],
) -> Result<i64, sqlx::Error> {
    let mut conn = match held.take() {
        Some(conn) => conn,
        None => store.pool.acquire().await?,
    };
    let entries: Vec<&Entry> = batch.iter().map(|(e, _)| e).collect();
    if let Some(head) = known.take() {
        if let Some((first, head)) = append_onto(&mut conn, head, &entries).await? {
            *known = Some(head);
            *held = Some(conn);
            return Ok(first);
        }
    }
    let mut tx = store.begin_write_on(&mut conn).await?;
    let (first, head) = chain_into(&mut tx, None, &entries).await?;
    tx.commit().await?;
    *known = (store.backend == Backend::Postgres).then_some(head);
    *held = Some(conn);
    Ok(first)
}

/// The chain's head: the last entry's sequence number and hash.
type Head = (i64, String);

/// An entry chained, ready to insert.
struct Chained {
    seq: i64,
    at: String,
    detail: String,
    prev: String,
    hash: String,
}

/// Chains `entries` onto `head`: their rows and the new head.
fn link(head: Head, entries: &[&Entry]) -> (Vec<Chained>, Head) {
    let (mut seq, mut prev) = head;
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        seq += 1;
        let at = timestamp(&entry.at);
        let detail = entry.detail.to_string();
        let hash = digest(&prev, seq, &at, entry, &detail);
        rows.push(Chained {
            seq,
            at,
            detail,
            prev: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    (rows, (seq, prev))
}

/// `VALUES` and `n` rows of twelve placeholders each, from `$1`.
fn values(sql: &mut String, n: usize) {
    sql.push_str("VALUES ");
    for i in 0..n {
        sql.push_str(if i > 0 { ", (" } else { "(" });
        sql.push_str(&placeholders(i * 12 + 1, 12));
        sql.push(')');
    }
}

/// Binds each row's twelve columns, in the order of [`COLUMNS`].
fn bind_rows<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    rows: &'q [Chained],
    entries: &[&'q Entry],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for (row, entry) in rows.iter().zip(entries) {
        q = q
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
    q
}

/// PostgreSQL only: chains `entries` onto `head` and, in one statement, moves the head from
/// exactly there and inserts them — or, when the head is no longer there, does neither and
/// returns `None`. Outside a transaction the statement commits as it returns, and the head's
/// row lock makes it safe across nodes: an appender holding it is waited for, and once it
/// commits the head no longer matches (read committed re-reads the row), so nothing is
/// inserted. Under the head's lock (the locked path) it always finds the head where it was
/// read.
async fn append_onto(
    conn: &mut AnyConnection,
    head: Head,
    entries: &[&Entry],
) -> Result<Option<(i64, Head)>, sqlx::Error> {
    let first = head.0 + 1;
    let (rows, new) = link(head.clone(), entries);
    let rows: Vec<JsonRow> = rows
        .iter()
        .zip(entries)
        .map(|(row, entry)| JsonRow {
            seq: row.seq,
            at: &row.at,
            user_id: &entry.user,
            agency: &entry.agency,
            role: &entry.role,
            action: &entry.action,
            child_id: entry.child.as_deref(),
            purpose: entry.purpose.as_deref(),
            outcome: &entry.outcome,
            detail: &row.detail,
            prev_hash: &row.prev,
            hash: &row.hash,
        })
        .collect();
    let rows = serde_json::to_string(&rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let n: i64 = sqlx::query(&APPEND_ONTO)
        .bind(new.0)
        .bind(&new.1)
        .bind(head.0)
        .bind(&head.1)
        .bind(rows)
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
    Ok((n == 1).then_some((first, new)))
}

/// [`append_onto`]'s statement: the batch is one JSON array, so that every batch, whatever its
/// size, runs the one statement. With a list of twelve placeholders an entry, each batch size
/// was a statement of its own: more of them than a connection keeps prepared, each parsed and
/// planned again, with its values, nearly every time it ran.
static APPEND_ONTO: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH moved AS (UPDATE audit_head SET seq = $1, hash = $2 \
         WHERE id = 1 AND seq = $3 AND hash = $4 RETURNING 1), \
         appended AS (INSERT INTO audit_log ({COLUMNS}) SELECT v.* FROM moved, \
         json_to_recordset(CAST($5 AS JSON)) AS v (seq BIGINT, at TEXT, user_id TEXT, \
         agency TEXT, role TEXT, action TEXT, child_id TEXT, purpose TEXT, outcome TEXT, \
         detail TEXT, prev_hash TEXT, hash TEXT)) \
         SELECT count(*) AS n FROM moved"
    )
});

/// An entry as [`APPEND_ONTO`] reads it, named as [`COLUMNS`] names them.
#[derive(Serialize)]
struct JsonRow<'a> {
    seq: i64,
    at: &'a str,
    user_id: &'a str,
    agency: &'a str,
    role: &'a str,
    action: &'a str,
    child_id: Option<&'a str>,
    purpose: Option<&'a str>,
    outcome: &'a str,
    detail: &'a str,
    prev_hash: &'a str,
    hash: &'a str,
}

/// Chains entries onto the head and inserts them on `conn`, which must be inside the caller's
/// transaction: a change and the entries recording it then commit together or not at all.
/// Takes the head row's lock, so the caller should do it last, just before committing.
/// Returns the first entry's sequence number; with no entries it touches nothing and returns 0.
pub async fn chain(conn: &mut AnyConnection, entries: &[&Entry]) -> Result<i64, sqlx::Error> {
    Ok(chain_into(conn, None, entries).await?.0)
}

/// [`chain`] for many entries at once (the index's bulk path): the entries are written through
/// `staging` (COPY on PostgreSQL) in one statement, however many there are.
pub(crate) async fn chain_staged(
    conn: &mut AnyConnection,
    staging: &mut Staging,
    entries: &[&Entry],
) -> Result<i64, sqlx::Error> {
    Ok(chain_into(conn, Some(staging), entries).await?.0)
}

/// Locks and reads the head, chains `entries` onto it and writes them; returns the first
/// sequence number and the new head. With no entries it touches nothing and returns 0.
async fn chain_into(
    conn: &mut AnyConnection,
    staging: Option<&mut Staging>,
    entries: &[&Entry],
) -> Result<(i64, Head), sqlx::Error> {
    if entries.is_empty() {
        return Ok((0, (0, String::new())));
    }
    // Taking the head row's write lock first makes every appender, in any process, wait here
    // rather than read a head that is about to move; the same statement reads the head, one
    // round trip rather than two.
    let head = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut *conn)
        .await?;
    let head: Head = (head.try_get("seq")?, head.try_get("hash")?);
    if staging.is_none() && conn.backend_name() == "PostgreSQL" {
        // On PostgreSQL the head moves in the same statement as the insert (a data-modifying
        // `WITH`, which always runs to completion): one round trip fewer for every batch.
        return append_onto(conn, head, entries)
            .await?
            .ok_or_else(|| sqlx::Error::Protocol("the audit head moved under its lock".into()));
    }
    let first = head.0 + 1;
    // Chain the whole batch first, then write it in one statement: one round trip per batch
    // rather than per entry.
    let (rows, new) = link(head, entries);
    if let Some(staging) = staging {
        staging
            .insert(
                conn,
                &format!("audit_log ({COLUMNS})"),
                "",
                rows.iter().zip(entries).map(|(row, entry)| {
                    [
                        Cell::Int(row.seq),
                        row.at.as_str().into(),
                        entry.user.as_str().into(),
                        entry.agency.as_str().into(),
                        entry.role.as_str().into(),
                        entry.action.as_str().into(),
                        Cell::Text(entry.child.as_deref()),
                        Cell::Text(entry.purpose.as_deref()),
                        entry.outcome.as_str().into(),
                        row.detail.as_str().into(),
                        row.prev.as_str().into(),
                        row.hash.as_str().into(),
                    ]
                }),
            )
            .await?;
    } else {
        // SQLite has no data-modifying `WITH`: the head moves in a statement of its own below.
        let mut sql = format!("INSERT INTO audit_log ({COLUMNS}) ");
        values(&mut sql, rows.len());
        bind_rows(sqlx::query(&sql), &rows, entries)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(new.0)
        .bind(&new.1)
        .execute(&mut *conn)
        .await?;
    Ok((first, new))
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
    /// The agency of the person (or system) the entry is about.
    pub agency: Option<String>,
    /// The purpose recorded with the entry (`safeguarding`, `audit`, …).
    pub purpose: Option<String>,
    /// The entry's outcome (`shown`, `denied`, `rejected`, …).
    pub outcome: Option<String>,
    /// Only entries older than this sequence number: the next page after a page whose last
    /// (oldest) entry had it.
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

/// The log's columns, in the order they are written and read.
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

/// What an IG officer who is not the partnership's lead may read: the entries made by their
/// own agency's staff, and the reads that were shown data from their agency's sources.
#[derive(Debug, Clone)]
pub struct Scope {
    pub agency: String,
    pub sources: Vec<String>,
}

/// `LIKE` pattern text for `s`, with its wildcards taken literally (`ESCAPE '\'`).
fn like_literal(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Entries matching the filters, newest first; only those in `scope` when there is one.
pub async fn search(
    store: &Store,
    q: &Query,
    scope: Option<&Scope>,
) -> Result<Vec<Recorded>, AuditError> {
    let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1");
    let mut binds: Vec<String> = Vec::new();
    if let Some(scope) = scope {
        binds.push(scope.agency.clone());
        let mut any = "agency = $1".to_string();
        for source in &scope.sources {
            // The view's disclosure records each source's status as `"source":"shown"`.
            binds.push(format!("%\"{}\":\"shown\"%", like_literal(source)));
            any.push_str(&format!(" OR detail LIKE ${} ESCAPE '\\'", binds.len()));
        }
        sql.push_str(&format!(" AND ({any})"));
    }
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
    if let Some(a) = &q.agency {
        filter("agency =", a.clone());
    }
    if let Some(p) = &q.purpose {
        filter("purpose =", p.clone());
    }
    if let Some(o) = &q.outcome {
        filter("outcome =", o.clone());
    }
    // An integer, so written into the statement: a text bind would not compare with `seq` on
    // PostgreSQL.
    if let Some(before) = q.before {
        sql.push_str(&format!(" AND seq < {before}"));
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

/// An entry exactly as stored: the text its hash covers, byte for byte. What an export holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    pub seq: i64,
    pub at: String,
    pub user: String,
    pub agency: String,
    pub role: String,
    pub action: String,
    pub child: Option<String>,
    pub purpose: Option<String>,
    pub outcome: String,
    /// The JSON text as stored (not re-serialised, so the hash checks the same bytes).
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl Stored {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Stored, sqlx::Error> {
        Ok(Stored {
            seq: row.try_get("seq")?,
            at: row.try_get("at")?,
            user: row.try_get("user_id")?,
            agency: row.try_get("agency")?,
            role: row.try_get("role")?,
            action: row.try_get("action")?,
            child: row.try_get("child_id")?,
            purpose: row.try_get("purpose")?,
            outcome: row.try_get("outcome")?,
            detail: row.try_get("detail")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }

    fn computed_hash(&self) -> String {
        digest_fields(
            &self.prev_hash,
            self.seq,
            &self.at,
            [
                self.user.as_str(),
                self.agency.as_str(),
                self.role.as_str(),
                self.action.as_str(),
            ],
            self.child.as_deref(),
            self.purpose.as_deref(),
            &self.outcome,
            &self.detail,
        )
    }
}

/// Every entry about `child`, oldest first; only those in `scope` when there is one. For
/// subject access reports, which need all of them.
pub async fn for_child(
    store: &Store,
    child: &str,
    scope: Option<&Scope>,
) -> Result<Vec<Recorded>, AuditError> {
    let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE child_id = $1");
    let mut binds = vec![child.to_string()];
    if let Some(scope) = scope {
        binds.push(scope.agency.clone());
        let mut any = format!("agency = ${}", binds.len());
        for source in &scope.sources {
            binds.push(format!("%\"{}\":\"shown\"%", like_literal(source)));
            any.push_str(&format!(" OR detail LIKE ${} ESCAPE '\\'", binds.len()));
        }
        sql.push_str(&format!(" AND ({any})"));
    }
    sql.push_str(" ORDER BY seq");
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
    /// Valid checkpoints the chain was checked against.
    pub checkpoints: usize,
    /// The newest of them the chain reached: every entry up to it is vouched for by a signature.
    pub sealed: i64,
    /// When that checkpoint was signed.
    pub sealed_at: Option<String>,
    /// The first break in the chain, if any.
    pub problem: Option<Problem>,
}

impl Verification {
    /// Entries newer than the last checkpoint: the chain links them, no signature covers them
    /// yet (see [`Problem::ForgedAppend`] for what can still be told of them).
    pub fn unsealed(&self) -> i64 {
        self.entries - self.sealed
    }
}

/// How the chain was broken. Each names what an IG officer has to investigate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// An entry's content no longer matches its own hash.
    Changed,
    /// A sequence number is missing from the middle of the chain.
    Missing,
    /// An entry does not follow the one before it.
    Reordered,
    /// Entries were rewritten and every hash recomputed: the chain agrees with itself but not
    /// with a signed checkpoint.
    Rewritten,
    /// Entries a checkpoint vouches for are gone from the end.
    Truncated,
    /// Every entry is gone, though checkpoints vouch for some.
    Wiped,
    /// An entry after the last checkpoint that cannot have been written when it says.
    ForgedAppend,
    /// The head row disagrees with the entries (newest ones removed, head left alone).
    Head,
    /// A checkpoint whose signature does not verify with the key: forged, altered, or signed
    /// with another key.
    BadCheckpoint,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Changed => "changed",
            ProblemKind::Missing => "missing",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Rewritten => "rewritten",
            ProblemKind::Truncated => "truncated",
            ProblemKind::Wiped => "wiped",
            ProblemKind::ForgedAppend => "forged append",
            ProblemKind::Head => "head",
            ProblemKind::BadCheckpoint => "bad checkpoint",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The sequence number of the first entry that is not as it was written.
    pub seq: i64,
    pub what: String,
}

/// How far before the last checkpoint an entry after it may be dated. An entry is dated when
/// its request is answered and chained a moment later, so one signed into the chain just after
/// a checkpoint can be a little older than it; one older than this was not written by the
/// gateway at the time it claims.
pub const BACKDATE_TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

/// Walks entries in order, checking each against the one before and against the checkpoints.
struct Walk<'a> {
    next: i64,
    prev: String,
    entries: i64,
    checkpoints: &'a [checkpoint::Checkpoint],
    /// Index of the next checkpoint the walk will meet.
    at_checkpoint: usize,
    sealed: i64,
    sealed_at: Option<String>,
    problem: Option<Problem>,
}

impl<'a> Walk<'a> {
    /// `from`: the sequence number and hash the walk continues from (`None`: the chain's start).
    fn new(from: Option<(i64, String)>, checkpoints: &'a [checkpoint::Checkpoint]) -> Walk<'a> {
        let (last, prev) = from.unwrap_or((0, GENESIS.to_string()));
        let at_checkpoint = checkpoints.partition_point(|c| c.seq <= last);
        Walk {
            next: last + 1,
            prev,
            entries: 0,
            checkpoints,
            at_checkpoint,
            sealed: last,
            sealed_at: None,
            problem: None,
        }
    }

    fn fail(&mut self, kind: ProblemKind, seq: i64, what: String) -> bool {
        self.problem = Some(Problem { kind, seq, what });
        false
    }

    /// Checks one entry; `false` once a problem was found (the walk stops there).
    fn push(&mut self, e: &Stored) -> bool {
        if self.problem.is_some() {
            return false;
        }
        self.entries += 1;
        if e.seq != self.next {
            let next = self.next;
            return self.fail(
                ProblemKind::Missing,
                next,
                format!(
                    "entry {next} is missing (the chain jumps from {} to {})",
                    next - 1,
                    e.seq
                ),
            );
        }
        if e.computed_hash() != e.hash {
            return self.fail(
                ProblemKind::Changed,
                e.seq,
                format!("entry {} was changed", e.seq),
            );
        }
        if e.prev_hash != self.prev {
            return self.fail(
                ProblemKind::Reordered,
                e.seq,
                format!(
                    "entry {} does not follow entry {}: removed or reordered",
                    e.seq,
                    e.seq - 1
                ),
            );
        }
        while let Some(cp) = self.checkpoints.get(self.at_checkpoint) {
            if cp.seq != e.seq {
                break;
            }
            if cp.head != e.hash {
                let from = self.sealed + 1;
                return self.fail(
                    ProblemKind::Rewritten,
                    from,
                    format!(
                        "entries {from} to {} were rewritten and their hashes recomputed: entry \
                         {}'s hash is not the one the checkpoint signed at {} vouches for",
                        e.seq, e.seq, cp.at
                    ),
                );
            }
            self.sealed = e.seq;
            self.sealed_at = Some(cp.at.clone());
            self.at_checkpoint += 1;
        }
        if let Some(last) = self.checkpoints.last() {
            if e.seq > last.seq {
                let dated = DateTime::parse_from_rfc3339(&e.at).map(|t| t.with_timezone(&Utc));
                let signed = last.signed_at();
                match (dated, signed) {
                    (Ok(dated), Some(signed)) if dated < signed - BACKDATE_TOLERANCE => {
                        return self.fail(
                            ProblemKind::ForgedAppend,
                            e.seq,
                            format!(
                                "entry {} comes after the last checkpoint (entry {}, signed at \
                                 {}) but is dated {}, before it: appended after the fact",
                                e.seq, last.seq, last.at, e.at
                            ),
                        );
                    }
                    (Err(_), _) => {
                        return self.fail(
                            ProblemKind::ForgedAppend,
                            e.seq,
                            format!("entry {} has no readable time: not written by Weft", e.seq),
                        );
                    }
                    _ => {}
                }
            }
        }
        self.prev = e.hash.clone();
        self.next += 1;
        true
    }

    /// The verdict once every entry was pushed; `head` is the head row (a store has one, an
    /// export does not).
    fn finish(mut self, head: Option<(i64, String)>) -> Verification {
        let end = self.next - 1;
        if self.problem.is_none() {
            if let Some(last) = self.checkpoints.last() {
                if end < last.seq {
                    let (kind, what) = if end == 0 {
                        (
                            ProblemKind::Wiped,
                            format!(
                                "the log holds no entries, but the checkpoint signed at {} \
                                 vouches for {}",
                                last.at, last.seq
                            ),
                        )
                    } else {
                        (
                            ProblemKind::Truncated,
                            format!(
                                "entries {} to {} were removed from the end: the chain ends at \
                                 entry {end}, the checkpoint signed at {} vouches for {}",
                                end + 1,
                                last.seq,
                                last.at,
                                last.seq
                            ),
                        )
                    };
                    self.problem = Some(Problem {
                        kind,
                        seq: end + 1,
                        what,
                    });
                }
            }
        }
        if self.problem.is_none() {
            if let Some((head_seq, head_hash)) = head {
                if head_seq != end || head_hash != self.prev {
                    self.problem = Some(Problem {
                        kind: ProblemKind::Head,
                        seq: end.min(head_seq) + 1,
                        what: format!(
                            "the chain ends at entry {end} but its head records entry \
                             {head_seq}: newest entries removed"
                        ),
                    });
                }
            }
        }
        Verification {
            entries: self.entries,
            checkpoints: self.checkpoints.len(),
            sealed: self.sealed,
            sealed_at: self.sealed_at,
            problem: self.problem,
        }
    }
}

/// Checks signatures; the first checkpoint that fails is the problem.
fn valid_checkpoints(
    found: Vec<(String, checkpoint::Checkpoint)>,
    key: &checkpoint::PublicKey,
) -> Result<Vec<checkpoint::Checkpoint>, Problem> {
    let mut out = Vec::with_capacity(found.len());
    for (file, cp) in found {
        if !cp.verify(key) {
            let whose = if cp.key == key.id() {
                "its signature does not verify: forged or altered".to_string()
            } else {
                format!("it names key {}, not {}", cp.key, key.id())
            };
            return Err(Problem {
                kind: ProblemKind::BadCheckpoint,
                seq: cp.seq,
                what: format!("checkpoint {file} is not signed by the audit key: {whose}"),
            });
        }
        out.push(cp);
    }
    Ok(out)
}

const PAGE: i64 = 5_000;

async fn page(store: &Store, from: i64, upto: Option<i64>) -> Result<Vec<Stored>, sqlx::Error> {
    let bound = upto.map(|u| format!(" AND seq <= {u}")).unwrap_or_default();
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE seq >= $1{bound} ORDER BY seq LIMIT {PAGE}"
    ))
    .bind(from)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(Stored::from_row).collect()
}

async fn walk_pages(
    store: &Store,
    walk: &mut Walk<'_>,
    upto: Option<i64>,
) -> Result<(), sqlx::Error> {
    let mut from = walk.next;
    loop {
        let rows = page(store, from, upto).await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        from = last.seq + 1;
        for row in &rows {
            if !walk.push(row) {
                return Ok(());
            }
        }
    }
}

/// Checks the entries after `from` (a checkpoint's sequence number and hash) up to `upto`:
/// what a node does before signing a new checkpoint.
pub(crate) async fn walk_store(
    store: &Store,
    from: Option<(i64, String)>,
    upto: i64,
) -> Result<Verification, sqlx::Error> {
    let mut walk = Walk::new(from, &[]);
    walk_pages(store, &mut walk, Some(upto)).await?;
    let end = walk.next - 1;
    let mut v = walk.finish(None);
    if v.problem.is_none() && end != upto {
        v.problem = Some(Problem {
            kind: ProblemKind::Missing,
            seq: end + 1,
            what: format!("the chain ends at entry {end}, before its head at {upto}"),
        });
    }
    Ok(v)
}

/// Walks the whole chain from the first entry and names the first one that was changed,
/// removed or reordered. Reads in pages so a long chain never sits in memory at once. Without
/// checkpoints this can only check the chain against itself.
pub async fn verify(store: &Store) -> Result<Verification, AuditError> {
    verify_store(store, None).await
}

/// [`verify`], and the chain against the checkpoints in `dir` signed with `key`: rewrites with
/// recomputed hashes, truncation, wipes and backdated appends are named.
pub async fn verify_store(
    store: &Store,
    checkpoints: Option<(&std::path::Path, &checkpoint::PublicKey)>,
) -> Result<Verification, AuditError> {
    let cps = match checkpoints {
        None => Vec::new(),
        Some((dir, key)) => {
            let found =
                checkpoint::load_dir(dir).map_err(|e| AuditError::Corrupt(e.to_string()))?;
            match valid_checkpoints(found, key) {
                Ok(c) => c,
                Err(problem) => return Ok(bad(problem)),
            }
        }
    };
    let mut walk = Walk::new(None, &cps);
    walk_pages(store, &mut walk, None).await?;
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&store.pool)
        .await?;
    let head = (head.try_get("seq")?, head.try_get("hash")?);
    Ok(walk.finish(Some(head)))
}

fn bad(problem: Problem) -> Verification {
    Verification {
        entries: 0,
        checkpoints: 0,
        sealed: 0,
        sealed_at: None,
        problem: Some(problem),
    }
}

/// Where an export keeps its parts.
pub const EXPORT_ENTRIES: &str = "entries.jsonl";
pub const EXPORT_CHECKPOINTS: &str = "checkpoints";

/// Verifies an export with nothing but the public key: no database, no configuration. This is
/// what a third party (an auditor, a regulator) runs.
pub fn verify_export(
    dir: &std::path::Path,
    key: &checkpoint::PublicKey,
) -> Result<Verification, AuditError> {
    use std::io::BufRead;
    let found = checkpoint::load_dir(&dir.join(EXPORT_CHECKPOINTS))
        .map_err(|e| AuditError::Corrupt(e.to_string()))?;
    let cps = match valid_checkpoints(found, key) {
        Ok(c) => c,
        Err(problem) => return Ok(bad(problem)),
    };
    let path = dir.join(EXPORT_ENTRIES);
    let file = std::fs::File::open(&path)
        .map_err(|e| AuditError::Corrupt(format!("{}: {e}", path.display())))?;
    let mut walk = Walk::new(None, &cps);
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| AuditError::Corrupt(format!("{}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Stored = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                let seq = walk.next;
                walk.problem = Some(Problem {
                    kind: ProblemKind::Changed,
                    seq,
                    what: format!("line {} of {EXPORT_ENTRIES} is not an entry: {e}", i + 1),
                });
                break;
            }
        };
        if !walk.push(&entry) {
            break;
        }
    }
    Ok(walk.finish(None))
}

/// Writes the chain up to `upto` (and the checkpoints in `checkpoint_dir`, and the public key)
/// to `out`, which must not exist yet or be empty. Returns the entries written. The export is
/// the audit itself — who looked at which child — and is as protected as the database.
pub async fn export(
    store: &Store,
    out: &std::path::Path,
    upto: i64,
    checkpoint_dir: Option<&std::path::Path>,
    key: Option<&checkpoint::PublicKey>,
) -> anyhow::Result<i64> {
    use anyhow::Context;
    use std::io::Write;
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| out.display().to_string())?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{} is not empty: an export is written to a new directory",
            out.display()
        );
    }
    let cps_out = out.join(EXPORT_CHECKPOINTS);
    std::fs::create_dir_all(&cps_out).with_context(|| cps_out.display().to_string())?;
    if let Some(dir) = checkpoint_dir {
        for (name, cp) in checkpoint::load_dir(dir)? {
            if cp.seq <= upto {
                let text = serde_json::to_string_pretty(&cp)?;
                std::fs::write(cps_out.join(&name), text + "\n")?;
            }
        }
    }
    if let Some(k) = key {
        std::fs::write(out.join(checkpoint::PUBLIC_KEY_FILE), k.to_pem())?;
    }
    let path = out.join(EXPORT_ENTRIES);
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| path.display().to_string())?,
    );
    let mut from = 1i64;
    let mut written = 0i64;
    loop {
        let rows = page(store, from, Some(upto)).await?;
        let Some(last) = rows.last() else { break };
        from = last.seq + 1;
        for row in &rows {
            serde_json::to_writer(&mut file, row)?;
            file.write_all(b"\n")?;
            written += 1;
        }
    }
    file.flush()?;
    file.get_ref().sync_all()?;
    Ok(written)
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
        let (auditor, task) = Auditor::start(store.clone(), None);
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
        assert_eq!((v.entries, v.problem), (50, None));

        sqlx::query("UPDATE audit_log SET user_id = 'someone-else' WHERE seq = 17")
            .execute(&store.pool)
            .await
            .unwrap();
        let v = verify(&store).await.unwrap();
        assert_eq!(v.problem.unwrap().seq, 17);
    }

    fn pending(users: &[&str]) -> Vec<Pending> {
        users
            .iter()
            .map(|u| (entry(u), oneshot::channel().0))
            .collect()
    }

    #[tokio::test]
    async fn a_batch_chains_onto_the_head_it_left_unless_someone_else_appended() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let pg = store.backend == Backend::Postgres;
        let (mut held, mut known) = (None, None);
        let first = commit(&store, &mut held, &mut known, &pending(&["a", "b"])).await;
        assert_eq!(first.unwrap(), 1);
        // Only PostgreSQL chains onto a head it did not read.
        assert_eq!(known.as_ref().map(|h| h.0), pg.then_some(2));
        let first = commit(&store, &mut held, &mut known, &pending(&["c"])).await;
        assert_eq!(first.unwrap(), 3);
        assert_eq!(known.as_ref().map(|h| h.0), pg.then_some(3));

        // Someone else appends: another node, or a change recorded in its own transaction.
        let mut conn = store.pool.acquire().await.unwrap();
        let mut tx = store.begin_write_on(&mut conn).await.unwrap();
        chain(&mut tx, &[&entry("other")]).await.unwrap();
        tx.commit().await.unwrap();
        if let Some(stale) = known.clone() {
            // Onto a head that has moved, nothing is written.
            let out = append_onto(&mut conn, stale, &[&entry("lost")]).await;
            assert!(out.unwrap().is_none());
        }
        drop(conn);
        let first = commit(&store, &mut held, &mut known, &pending(&["d", "e"])).await;
        assert_eq!(first.unwrap(), 5);
        assert_eq!(known.as_ref().map(|h| h.0), pg.then_some(6));

        let v = verify(&store).await.unwrap();
        assert_eq!((v.entries, v.problem), (6, None));
        let users: Vec<String> = page(&store, 1, None)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.user)
            .collect();
        assert_eq!(users, ["a", "b", "c", "other", "d", "e"]);
    }

    /// Makes the store refuse any audit entry of the user `poison`, as a full disk or a lost
    /// connection would refuse a batch.
    async fn poison(store: &Store) {
        let statements: &[&str] = match store.backend {
            Backend::Sqlite => &["CREATE TRIGGER poison BEFORE INSERT ON audit_log \
                 WHEN NEW.user_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"],
            Backend::Postgres => &[
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.user_id = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; \
                 RETURN NEW; END $$",
                "CREATE TRIGGER poison BEFORE INSERT ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION poison()",
            ],
        };
        for s in statements {
            sqlx::query(s).execute(&store.pool).await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_entry_acknowledged_is_stored_where_its_request_was_told_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        poison(&store).await;
        let (auditor, task) = Auditor::start(store.clone(), None);
        // The writer's connection open, so that the appends below meet batches committing.
        let warm = [auditor.append(entry("warm")), auditor.append(entry("warm"))];
        for seq in futures::future::join_all(warm).await {
            seq.unwrap();
        }
        // Appends arriving a few at a time while batches commit, so that batches follow each
        // other closely, some holding an entry the store refuses.
        let appends: Vec<_> = (0..600)
            .map(|i| {
                let a = auditor.clone();
                let user = if i % 60 == 11 {
                    "poison".to_string()
                } else {
                    format!("u{i}")
                };
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_micros(300 * i)).await;
                    (a.append(entry(&user)).await, user)
                })
            })
            .collect();
        let (mut told, mut refused) = (vec![(1, "warm".into()), (2, "warm".into())], 0);
        for a in appends {
            match a.await.unwrap() {
                (Ok(seq), user) => told.push((seq, user)),
                (Err(_), _) => refused += 1,
            }
        }
        drop(auditor);
        task.await.unwrap();
        assert!(
            refused >= 10,
            "every poisoned entry is refused, with its batch"
        );
        assert!(told.len() > 2, "batches without one land");
        told.sort();
        let stored: Vec<(i64, String)> = page(&store, 1, None)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.seq, s.user))
            .collect();
        assert_eq!(stored, told);
        let v = verify(&store).await.unwrap();
        assert_eq!((v.entries, v.problem), (told.len() as i64, None));
    }

    /// Whatever an entry holds — no child or purpose, quotes, backslashes, line breaks, tabs,
    /// other scripts — it is stored as given, on the locked path and the writer's one-statement
    /// path alike (on PostgreSQL the batch travels as one JSON value).
    #[tokio::test]
    async fn an_entry_is_stored_as_given_whatever_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let odd = |user: &str| Entry {
            user: user.into(),
            agency: "la \"north\"\\ csc".into(),
            child: None,
            purpose: None,
            outcome: "shown\n\tagain".into(),
            detail: serde_json::json!({"note": "\"quoted\" \\ back\nslash \u{e9}t\u{e9} \u{1F600}", "n": [1, null]}),
            ..entry(user)
        };
        let (mut held, mut known) = (None, None);
        let batch = |users: &[&str]| -> Vec<Pending> {
            users
                .iter()
                .map(|u| (odd(u), oneshot::channel().0))
                .collect()
        };
        // The first batch takes the locked path; on PostgreSQL the second takes the writer's own.
        commit(&store, &mut held, &mut known, &batch(&["a\u{2019}b", "c"]))
            .await
            .unwrap();
        commit(&store, &mut held, &mut known, &batch(&["d"]))
            .await
            .unwrap();
        let v = verify(&store).await.unwrap();
        assert_eq!((v.entries, v.problem), (3, None));
        let stored = page(&store, 1, None).await.unwrap();
        for (s, user) in stored.iter().zip(["a\u{2019}b", "c", "d"]) {
            let want = odd(user);
            assert_eq!(s.user, want.user);
            assert_eq!(s.agency, want.agency);
            assert_eq!((s.child.as_deref(), s.purpose.as_deref()), (None, None));
            assert_eq!(s.outcome, want.outcome);
            let detail: serde_json::Value = serde_json::from_str(&s.detail).unwrap();
            assert_eq!(detail, want.detail);
        }
    }

    #[tokio::test]
    async fn two_writers_on_one_store_build_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let nodes = [
            Auditor::start(store.clone(), None),
            Auditor::start(store.clone(), None),
        ];
        let appends: Vec<_> = (0..200)
            .map(|i| {
                let a = nodes[i % 2].0.clone();
                tokio::spawn(async move { a.append(entry(&format!("u{i}"))).await })
            })
            .collect();
        let mut seqs = Vec::new();
        for a in appends {
            seqs.push(a.await.unwrap().unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<i64>>());
        for (auditor, task) in nodes {
            drop(auditor);
            task.await.unwrap();
        }
        let v = verify(&store).await.unwrap();
        assert_eq!((v.entries, v.problem), (200, None));
    }

    #[tokio::test]
    async fn close_commits_the_queue_and_stops_while_handles_remain() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let (auditor, task) = Auditor::start(store.clone(), None);
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
        let (auditor, _task) = Auditor::start(store.clone(), None);
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

/// Tampering as someone with write access to the database but not the signing key would do it,
/// and what the checkpoints make of it.
#[cfg(test)]
mod checkpoint_tests {
    use super::checkpoint::{Checkpointer, SigningKey};
    use super::*;
    use crate::foundation::store::test_store;
    use std::time::Duration;

    fn entry(i: usize) -> Entry {
        Entry {
            at: Utc::now(),
            user: format!("u{i}"),
            agency: "la-csc".into(),
            role: "social_worker".into(),
            action: "view".into(),
            child: Some("c1".into()),
            purpose: Some("safeguarding".into()),
            outcome: "shown".into(),
            detail: serde_json::json!({"shown": ["identity.core"]}),
        }
    }

    async fn stored(store: &Store) -> Vec<Stored> {
        page(store, 1, None).await.unwrap()
    }

    /// Replaces the whole log and its head with `rows`, hashes recomputed from the start: what
    /// an attacker who knows the algorithm (it is public) can do.
    async fn rewrite(store: &Store, rows: &mut [Stored]) {
        let mut prev = GENESIS.to_string();
        for r in rows.iter_mut() {
            r.prev_hash = prev;
            r.hash = r.computed_hash();
            prev = r.hash.clone();
        }
        let mut tx = store.pool.begin().await.unwrap();
        sqlx::query("DELETE FROM audit_log")
            .execute(&mut *tx)
            .await
            .unwrap();
        for r in rows.iter() {
            sqlx::query(&format!(
                "INSERT INTO audit_log ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                COLUMNS
            ))
            .bind(r.seq)
            .bind(&r.at)
            .bind(&r.user)
            .bind(&r.agency)
            .bind(&r.role)
            .bind(&r.action)
            .bind(r.child.as_deref())
            .bind(r.purpose.as_deref())
            .bind(&r.outcome)
            .bind(&r.detail)
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(rows.last().map_or(0, |r| r.seq))
            .bind(&prev)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn checkpoints_name_rewrites_truncation_wipes_and_forged_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let cps = dir.path().join("checkpoints");
        let (key, _) = SigningKey::generate().unwrap();
        let public = key.public();
        let checkpointer =
            Checkpointer::new(cps.clone(), key, 4, Duration::from_secs(3600)).unwrap();
        let (auditor, _task) = Auditor::start(store.clone(), Some(checkpointer.clone()));
        for i in 0..10 {
            auditor.append(entry(i)).await.unwrap();
            if i % 4 == 3 {
                checkpointer.checkpoint(&store).await.unwrap();
            }
        }
        let last = checkpointer.checkpoint(&store).await.unwrap().unwrap();
        assert_eq!(last.seq, 10);
        let v = verify_store(&store, Some((&cps, &public))).await.unwrap();
        assert_eq!(v.problem, None);
        assert_eq!((v.entries, v.checkpoints, v.sealed), (10, 3, 10));
        let original = stored(&store).await;

        // Without checkpoints each of these passes: that is what they are for.
        let mut rows = original.clone();
        rows[5].user = "someone-else".into();
        rewrite(&store, &mut rows).await;
        assert_eq!(verify(&store).await.unwrap().problem, None);
        let p = verify_store(&store, Some((&cps, &public)))
            .await
            .unwrap()
            .problem
            .unwrap();
        assert_eq!((p.kind, p.seq), (ProblemKind::Rewritten, 5), "{p:?}");

        let mut rows = original[..7].to_vec();
        rewrite(&store, &mut rows).await;
        assert_eq!(verify(&store).await.unwrap().problem, None);
        let p = verify_store(&store, Some((&cps, &public)))
            .await
            .unwrap()
            .problem
            .unwrap();
        assert_eq!((p.kind, p.seq), (ProblemKind::Truncated, 8), "{p:?}");

        rewrite(&store, &mut []).await;
        assert_eq!(verify(&store).await.unwrap().problem, None);
        let p = verify_store(&store, Some((&cps, &public)))
            .await
            .unwrap()
            .problem
            .unwrap();
        assert_eq!((p.kind, p.seq), (ProblemKind::Wiped, 1), "{p:?}");

        let mut rows = original.clone();
        let mut forged = rows[9].clone();
        forged.seq = 11;
        forged.user = "covering-tracks".into();
        forged.at = timestamp(&(Utc::now() - chrono::Duration::hours(2)));
        rows.push(forged);
        rewrite(&store, &mut rows).await;
        assert_eq!(verify(&store).await.unwrap().problem, None);
        let p = verify_store(&store, Some((&cps, &public)))
            .await
            .unwrap()
            .problem
            .unwrap();
        assert_eq!((p.kind, p.seq), (ProblemKind::ForgedAppend, 11), "{p:?}");

        // An append dated now is linked by the chain but vouched for by no signature yet.
        let mut rows = original.clone();
        let mut recent = rows[9].clone();
        recent.seq = 11;
        rows.push(recent);
        rewrite(&store, &mut rows).await;
        let v = verify_store(&store, Some((&cps, &public))).await.unwrap();
        assert_eq!((v.unsealed(), v.sealed, v.problem), (1, 10, None));

        // A checkpoint signed by someone else is named, not trusted.
        let (other, _) = SigningKey::generate().unwrap();
        let fake = checkpoint::Checkpoint::sign(&other, 11, &rows[10].hash, Utc::now());
        checkpoint::write(&cps, &fake).unwrap();
        let p = verify_store(&store, Some((&cps, &public)))
            .await
            .unwrap()
            .problem
            .unwrap();
        assert_eq!((p.kind, p.seq), (ProblemKind::BadCheckpoint, 11), "{p:?}");
    }

    #[tokio::test]
    async fn a_checkpointer_never_signs_a_rewritten_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let (key, _) = SigningKey::generate().unwrap();
        let cps = dir.path().join("checkpoints");
        let checkpointer =
            Checkpointer::new(cps.clone(), key, 1000, Duration::from_secs(3600)).unwrap();
        let (auditor, _task) = Auditor::start(store.clone(), Some(checkpointer.clone()));
        for i in 0..4 {
            auditor.append(entry(i)).await.unwrap();
        }
        assert!(checkpointer.checkpoint(&store).await.unwrap().is_some());
        assert!(
            checkpointer.checkpoint(&store).await.unwrap().is_none(),
            "nothing new, nothing signed"
        );
        let mut rows = stored(&store).await;
        rows[1].outcome = "denied".into();
        rewrite(&store, &mut rows).await;
        auditor.append(entry(9)).await.unwrap();
        let e = checkpointer.checkpoint(&store).await.unwrap_err();
        assert!(matches!(e, checkpoint::CheckpointError::Diverged(_)), "{e}");
        assert_eq!(checkpoint::load_dir(&cps).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_export_verifies_with_the_public_key_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let (key, _) = SigningKey::generate().unwrap();
        let public = key.public();
        let cps = dir.path().join("checkpoints");
        let checkpointer =
            Checkpointer::new(cps.clone(), key, 1000, Duration::from_secs(3600)).unwrap();
        let (auditor, _task) = Auditor::start(store.clone(), Some(checkpointer.clone()));
        for i in 0..6 {
            auditor.append(entry(i)).await.unwrap();
        }
        let cp = checkpointer.checkpoint(&store).await.unwrap().unwrap();
        let out = dir.path().join("export");
        let n = export(&store, &out, cp.seq, Some(&cps), Some(&public))
            .await
            .unwrap();
        assert_eq!(n, 6);
        drop(store);
        let v = verify_export(&out, &public).unwrap();
        assert_eq!((v.problem, v.entries, v.sealed), (None, 6, 6));

        // An edited line, hashes recomputed, is a rewrite; so is a line removed from the end.
        let path = out.join(EXPORT_ENTRIES);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rows: Vec<Stored> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        rows[2].purpose = Some("audit".into());
        let mut prev = GENESIS.to_string();
        for r in rows.iter_mut() {
            r.prev_hash = prev;
            r.hash = r.computed_hash();
            prev = r.hash.clone();
        }
        let lines: Vec<String> = rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let p = verify_export(&out, &public).unwrap().problem.unwrap();
        assert_eq!((p.kind, p.seq), (ProblemKind::Rewritten, 1), "{p:?}");
        std::fs::write(&path, text.lines().take(4).collect::<Vec<_>>().join("\n")).unwrap();
        let p = verify_export(&out, &public).unwrap().problem.unwrap();
        assert_eq!((p.kind, p.seq), (ProblemKind::Truncated, 5), "{p:?}");

        let (other, _) = SigningKey::generate().unwrap();
        let p = verify_export(&out, &other.public())
            .unwrap()
            .problem
            .unwrap();
        assert_eq!(p.kind, ProblemKind::BadCheckpoint, "{p:?}");
    }
}
