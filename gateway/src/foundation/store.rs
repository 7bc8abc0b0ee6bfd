//! The gateway's own database: the master child index and the audit log. One schema, two
//! backends — SQLite embedded by default, PostgreSQL for real deployments and several nodes —
//! reached through sqlx's `Any` driver so that every query is written once. Queries stick to
//! the portable subset (`$n` parameters, TEXT timestamps, BIGINT) that both understand.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AnyPool, Executor, PgPool};

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL must start with sqlite: or postgres://")]
    Scheme,
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// SQLite's page cache, in KiB, on a connection making a bulk write. The default (2 MiB) is
/// a small part of the index a census batch writes into: SQLite then spills dirty pages to its
/// log in mid-transaction and reads back B-tree pages it has just evicted.
const SQLITE_BULK_CACHE_KIB: i64 = 256 * 1024;

/// A pool on the gateway's database, with the backend it speaks.
#[derive(Clone)]
pub struct Store {
    pub pool: AnyPool,
    pub backend: Backend,
    /// On PostgreSQL, a small pool of the driver's own connections, opened when first used:
    /// the bulk path's COPY ([`Staging`]), which sqlx's `Any` driver does not offer.
    copy: Option<PgPool>,
    /// Connections lent for the view path's short reads, outside the pool ([`Store::lend`]).
    warm: Arc<Warm>,
    /// The last write probe's time and result, shared by every caller within
    /// [`PROBE_REUSE`]: `/readyz` is unauthenticated, and must not let anyone make the database
    /// write at will.
    probe: Arc<tokio::sync::Mutex<Option<Probed>>>,
}

/// When the last write probe ran, and what it found.
type Probed = (Instant, Result<(), String>);

/// How long the write probe waits for the database's write lock (SQLite's busy timeout,
/// PostgreSQL's lock and statement timeouts) before saying the database cannot be written.
/// Shorter than a load balancer's usual probe timeout.
const PROBE_WAIT_MS: u64 = 1_000;

/// How long one probe's answer is reused.
const PROBE_REUSE: Duration = Duration::from_secs(1);

/// How long a connection may lie idle in the pool before it is pinged on its way out
/// ([`Store::open`]).
const PING_IDLE: Duration = Duration::from_secs(1);

/// The busy timeout every SQLite connection runs with (and goes back to after a probe).
const SQLITE_BUSY_MS: u64 = 5_000;

impl Store {
    /// Connects and runs the migrations kept in the repository. A SQLite file is created if it
    /// does not exist, in WAL mode so that reads never wait for the audit writer.
    pub async fn open(url: &SecretString, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let raw = url.expose_secret();
        let (backend, raw) = if raw.starts_with("sqlite:") {
            let sep = if raw.contains('?') { '&' } else { '?' };
            let url = if raw.contains("mode=") {
                raw.to_string()
            } else {
                format!("{raw}{sep}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            (Backend::Postgres, raw.to_string())
        } else {
            return Err(StoreError::Scheme);
        };
        let options = AnyConnectOptions::from_str(&raw).map_err(StoreError::Connect)?;
        // The warm connections are carved out of the configured number, never added to it.
        let warm = max_connections / WARM_SHARE;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections - warm)
            .acquire_timeout(Duration::from_secs(5))
            // sqlx pings every connection as it leaves the pool and again as it comes back: on
            // PostgreSQL two extra round trips for every statement, and on a busy gateway as
            // much of its CPU as the statement itself. The ping on return stays (sqlx always
            // makes it); the one on leaving is kept for a connection idle long enough for the
            // server or the network to have dropped it since that last ping showed it alive.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_MS}").as_str())
                            .await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        if backend == Backend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        let copy = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_lazy_with(
                        PgConnectOptions::from_str(&raw).map_err(StoreError::Connect)?,
                    ),
            ),
        };
        let store = Store {
            pool,
            backend,
            copy,
            warm: Arc::new(Warm::new(warm as usize)),
            probe: Arc::default(),
        };
        match backend {
            Backend::Sqlite => SQLITE.run(&store.pool).await?,
            Backend::Postgres => {
                POSTGRES.run(&store.pool).await?;
                if let Err(e) = store.sweep_staging().await {
                    // The next node to start tries again; the error is the database's.
                    tracing::warn!(error = %e, "left-behind staging tables were not dropped");
                }
            }
        }
        Ok(store)
    }

    /// Rows staged for one transaction's bulk writes (see [`Staging`]).
    pub(crate) fn staging(&self) -> Staging {
        Staging {
            copy: self.copy.clone(),
            tables: Vec::new(),
            copying: Vec::new(),
        }
    }

    /// Drops staging tables a node left behind when it stopped between staging and dropping
    /// them (a crash): they may hold records, and nothing reads them. Only tables staged more
    /// than [`STAGING_LEFT_SECS`] ago, so that another node's batch under way keeps its own.
    async fn sweep_staging(&self) -> Result<(), sqlx::Error> {
        let now = chrono::Utc::now().timestamp();
        let rows = sqlx::query(
            "SELECT CAST(tablename AS TEXT) AS tablename FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename LIKE 'weft_stage_%'",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let name: String = sqlx::Row::try_get(&row, "tablename")?;
            let staged = name
                .strip_prefix("weft_stage_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|secs| secs.parse::<i64>().ok());
            if staged.is_some_and(|at| now - at > STAGING_LEFT_SECS) && is_staging_name(&name) {
                sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// A connection for a short read on the view path (a statement or two), handed back with
    /// [`Lent::done`]. sqlx pings every connection its pool takes back — a round trip, and a
    /// wake-up of the database, for every statement — so a few connections are kept out of the
    /// pool (detached from it, their share of `max_connections` taken from the pool's) and lent
    /// from here without that ping. One idle for [`PING_IDLE`] or more is pinged before it is
    /// lent, as the pool would. A connection not handed back — its statement failed, or its
    /// future was dropped part-way — is closed rather than lent again, so no half-read answer
    /// reaches the next borrower. When every warm connection is out, the pool lends one.
    pub async fn lend(&self) -> Result<Lent, sqlx::Error> {
        loop {
            let kept = self
                .warm
                .idle
                .lock()
                .map(|mut idle| idle.pop())
                .ok()
                .flatten();
            let Some(mut kept) = kept else { break };
            if kept.since.elapsed() >= PING_IDLE
                && sqlx::Connection::ping(&mut kept.conn).await.is_err()
            {
                continue; // closed as it drops; its slot goes back
            }
            return Ok(Lent(Inner::Warm(kept, self.warm.clone())));
        }
        match self.warm.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let conn = self.pool.acquire().await?.detach();
                let kept = Kept {
                    conn,
                    since: Instant::now(),
                    _slot: slot,
                };
                Ok(Lent(Inner::Warm(kept, self.warm.clone())))
            }
            Err(_) => Ok(Lent(Inner::Pooled(self.pool.acquire().await?))),
        }
    }

    /// A transaction that reads, then writes. On SQLite it takes the write lock at the start
    /// (`BEGIN IMMEDIATE`): a deferred transaction that has read is refused the upgrade at once,
    /// whatever `busy_timeout` says, if another writer (the audit writer) committed meanwhile.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        self.pool.begin_with(self.begin_statement()).await
    }

    /// The statement a write transaction begins with (see [`Store::begin_write`]).
    fn begin_statement(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// A connection of its own for one bulk write (an import, a batch of the index). On
    /// SQLite its page cache is made large enough for the tables being written
    /// ([`SQLITE_BULK_CACHE_KIB`]), and it is closed when dropped rather than returned to the
    /// pool, so that memory goes with it.
    pub async fn bulk_connection(
        &self,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Sqlite {
            conn.execute(format!("PRAGMA cache_size = -{SQLITE_BULK_CACHE_KIB}").as_str())
                .await?;
            // The rows of each multi-row statement are materialised first
            // ([`insert_json_rows`]): in memory, not in a temporary file, which the default
            // `temp_store` spills them to once they pass the temporary cache's 2 MiB.
            conn.execute("PRAGMA temp_store = MEMORY").await?;
            conn.close_on_drop();
        }
        Ok(conn)
    }

    /// [`Store::begin_write`] on a connection the caller holds.
    pub async fn begin_write_on<'c>(
        &self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> Result<sqlx::Transaction<'c, sqlx::Any>, sqlx::Error> {
        use sqlx::Connection;
        conn.begin_with(self.begin_statement()).await
    }

    /// Refreshes PostgreSQL's statistics of the master child index's tables (a bulk import
    /// can grow them many times over between two autovacuum runs). SQLite plans from its
    /// indexes alone and is left as it is.
    pub async fn analyse_index(&self) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            sqlx::query(
                "ANALYZE children, source_records, record_identifiers, match_links, \
                 match_keys, match_terms",
            )
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Takes the master child index's write lock for the rest of `tx` and returns the
    /// index's epoch, which the lock moves on by one: every change to the index (an upsert, a
    /// bulk placement, a person's decision, a rebuild) holds it, so that two nodes placing
    /// records at the same moment never both decide a record is new (two children, or a
    /// duplicate key on the second insert), and a writer that finds the epoch one past its
    /// own last knows nobody else changed the index in between. The lock is the epoch row's
    /// (on SQLite `BEGIN IMMEDIATE`, see [`Store::begin_write`], already holds the database's),
    /// released at commit or rollback.
    pub async fn lock_index(&self, tx: &mut sqlx::AnyConnection) -> Result<i64, sqlx::Error> {
        let row = sqlx::query("UPDATE index_epoch SET n = n + 1 WHERE id = 1 RETURNING n")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::Row::try_get(&row, "n")
    }

    /// Takes the lock named `name` (an import's source) for the rest of `tx`, as
    /// [`Store::lock_index`] does for the index: two nodes importing the same drop at once
    /// apply it one after the other, and the second finds it applied, rather than both adding
    /// the same records (a duplicate key). Names hash into a key space of their own.
    pub async fn lock_named(
        &self,
        tx: &mut sqlx::AnyConnection,
        name: &str,
    ) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            sqlx::query(
                "SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(1467118693, hashtext($1))) AS l",
            )
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Whether the database takes writes, for readiness: one committed write to
    /// `readiness_probe`, waiting at most [`PROBE_WAIT_MS`] for the write lock. A database that
    /// answers `SELECT 1` but is write-locked, read-only or out of space cannot keep the audit
    /// log, so the gateway could serve nothing. Callers within [`PROBE_REUSE`] of a probe share
    /// its answer (and wait for one under way). The error is the database's, which names no
    /// person.
    pub async fn probe_write(&self) -> Result<(), String> {
        let mut last = self.probe.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < PROBE_REUSE {
                return result.clone();
            }
        }
        let result = self.write_once().await.map_err(|e| e.to_string());
        *last = Some((Instant::now(), result.clone()));
        result
    }

    async fn write_once(&self) -> Result<(), sqlx::Error> {
        let now = chrono::Utc::now().to_rfc3339();
        let mut conn = self.pool.acquire().await?;
        match self.backend {
            Backend::Sqlite => {
                conn.execute(format!("PRAGMA busy_timeout = {PROBE_WAIT_MS}").as_str())
                    .await?;
                let result = probe_sqlite(&mut conn, &now).await;
                let restored = conn
                    .execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_MS}").as_str())
                    .await;
                if restored.is_err() {
                    // Never hand the pool a connection that gives up on locks after a second.
                    conn.close_on_drop();
                }
                result
            }
            Backend::Postgres => {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                tx.execute(format!("SET LOCAL lock_timeout = {PROBE_WAIT_MS}").as_str())
                    .await?;
                tx.execute(format!("SET LOCAL statement_timeout = {}", 2 * PROBE_WAIT_MS).as_str())
                    .await?;
                sqlx::query("UPDATE readiness_probe SET checked_at = $1 WHERE id = 1")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            }
        }
    }
}

/// SQLite's half of [`Store::probe_write`]: `BEGIN IMMEDIATE` takes the write lock at once, so
/// a lock held elsewhere shows here rather than at commit.
async fn probe_sqlite(conn: &mut sqlx::AnyConnection, now: &str) -> Result<(), sqlx::Error> {
    let mut tx = sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await?;
    sqlx::query("UPDATE readiness_probe SET checked_at = $1 WHERE id = 1")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// One value of a row written by [`insert_rows`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    Text(Option<&'a str>),
    Int(i64),
    /// A `DOUBLE PRECISION` value: bound as text and cast in SQL, since sqlx's `Any` driver
    /// cannot bind a float (or a null of one) that PostgreSQL accepts for such a column.
    Real(Option<f64>),
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(s: &'a str) -> Self {
        Cell::Text(Some(s))
    }
}

/// `$from, $from+1, …`: `n` numbered placeholders, for an `IN (…)` list of values bound in
/// that order.
pub(crate) fn placeholders(from: usize, n: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(n * 6);
    for i in from..from + n {
        let sep = if i == from { "" } else { ", " };
        let _ = write!(out, "{sep}${i}");
    }
    out
}

/// Rows per multi-row INSERT in [`insert_rows`].
const ROWS_PER_STATEMENT: usize = 1_000;

/// Writes many rows into `table` (`name (column, …)`) with multi-row INSERTs: at most
/// [`ROWS_PER_STATEMENT`] rows, and the backend's parameter limit (SQLite 32,766, PostgreSQL
/// 65,535), to a statement. For work that writes thousands of derived rows at once (a bulk
/// load, re-deriving the index's blocking keys), where a statement per row would dominate.
pub(crate) async fn insert_rows<'a, const N: usize>(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    table: &str,
    rows: impl IntoIterator<Item = [Cell<'a>; N]>,
) -> Result<(), sqlx::Error> {
    insert_rows_then(conn, backend, table, "", rows).await
}

/// As [`insert_rows`], with `then` after each statement's rows (an `ON CONFLICT …` clause).
/// Rows that a clause would apply twice in one statement must be merged by the caller first:
/// PostgreSQL refuses a statement that updates one row twice.
pub(crate) async fn insert_rows_then<'a, const N: usize>(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    table: &str,
    then: &str,
    rows: impl IntoIterator<Item = [Cell<'a>; N]>,
) -> Result<(), sqlx::Error> {
    use std::fmt::Write as _;
    let rows: Vec<[Cell; N]> = rows.into_iter().collect();
    let limit = match backend {
        Backend::Sqlite => 32_766,
        Backend::Postgres => 65_535,
    };
    for chunk in rows.chunks(ROWS_PER_STATEMENT.min(limit / N.max(1))) {
        let mut sql = format!("INSERT INTO {table} VALUES ");
        for (r, row) in chunk.iter().enumerate() {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for (c, cell) in row.iter().enumerate() {
                let sep = if c == 0 { "" } else { ", " };
                let k = r * N + c + 1;
                let _ = match cell {
                    Cell::Real(_) => write!(sql, "{sep}CAST(${k} AS DOUBLE PRECISION)"),
                    _ => write!(sql, "{sep}${k}"),
                };
            }
            sql.push(')');
        }
        if !then.is_empty() {
            sql.push(' ');
            sql.push_str(then);
        }
        let mut q = sqlx::query(&sql);
        for row in chunk {
            for v in row {
                q = match *v {
                    Cell::Text(t) => q.bind(t),
                    Cell::Int(n) => q.bind(n),
                    Cell::Real(f) => q.bind(f.map(|f| f.to_string())),
                };
            }
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// How old a staging table must be before a starting node drops it as left behind.
const STAGING_LEFT_SECS: i64 = 3_600;

/// Whether `name` is one of [`Staging`]'s own table names (`weft_stage_<secs>_<hex>`), and so
/// safe to put into a statement unquoted.
fn is_staging_name(name: &str) -> bool {
    name.strip_prefix("weft_stage_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_digit() || c == '_' || c.is_ascii_hexdigit())
    })
}

/// Bulk writes within one transaction of sqlx's `Any` driver, the fastest way each backend
/// offers.
///
/// On PostgreSQL the rows are sent with `COPY` — several times faster than multi-row INSERTs
/// with bound parameters, for the server (no parameters to parse) and for the gateway (no
/// `Any` values to build) — into an unlogged staging table, on a connection of the driver's
/// own (the `Any` driver has no COPY, and does not hand out its PostgreSQL connection). The
/// transaction then moves them with one `INSERT … SELECT`: the rows reach the real tables
/// only through it, so a transaction that fails or rolls back leaves nothing applied, as
/// before. [`Staging::stage`] starts a COPY and returns: a transaction writing several tables
/// has the next table's rows copied while it moves the last one's, rather than waiting for
/// each COPY in turn. The staging tables are dropped by [`Staging::finish`] once the transaction has
/// ended (a `DROP` waits for it), and by the next node to start if this one dies first. On
/// SQLite, rows packed as JSON and unpacked by SQLite ([`insert_json_rows`]).
pub(crate) struct Staging {
    copy: Option<PgPool>,
    tables: Vec<String>,
    /// The COPYs still running, by the staging table each fills.
    copying: Vec<(String, Copying)>,
}

type Copying = tokio::task::JoinHandle<Result<(), sqlx::Error>>;

/// Bytes of COPY data sent in one message.
const COPY_CHUNK: usize = 1 << 20;

/// Rows on their way into one table: staged by [`Staging::stage`], moved into the table by
/// [`Staging::apply`] within the transaction.
pub(crate) struct Staged<'a, const N: usize> {
    table: String,
    columns: String,
    rows: StagedRows<'a, N>,
}

enum StagedRows<'a, const N: usize> {
    None,
    /// Being copied into this staging table (PostgreSQL).
    Copying(String),
    /// Held until applied (SQLite).
    Held(Vec<[Cell<'a>; N]>),
}

impl Staging {
    /// Writes `rows` into `table` (`name (column, …)`) within `conn`'s transaction, with
    /// `then` after the insert (an `ON CONFLICT …` clause; rows it would apply twice must be
    /// merged first, as for [`insert_rows_then`]).
    pub(crate) async fn insert<'a, const N: usize>(
        &mut self,
        conn: &mut sqlx::AnyConnection,
        table: &str,
        then: &str,
        rows: impl IntoIterator<Item = [Cell<'a>; N]>,
    ) -> Result<(), sqlx::Error> {
        let staged = self.stage(table, rows)?;
        self.apply(conn, staged, then).await
    }

    /// Starts `rows` on their way into `table` (`name (column, …)`). On PostgreSQL the COPY
    /// into the staging table runs on a connection of its own while the caller goes on — a
    /// transaction writing several tables stages the next while it moves the one before; on
    /// SQLite the rows are held for [`Staging::apply`].
    pub(crate) fn stage<'a, const N: usize>(
        &mut self,
        table: &str,
        rows: impl IntoIterator<Item = [Cell<'a>; N]>,
    ) -> Result<Staged<'a, N>, sqlx::Error> {
        let rows: Vec<[Cell; N]> = rows.into_iter().collect();
        let (name, columns) = table
            .split_once('(')
            .map(|(n, c)| (n.trim(), c.trim_end().trim_end_matches(')')))
            .ok_or_else(|| sqlx::Error::Protocol(format!("no columns in {table}")))?;
        let staged = |rows| Staged {
            table: table.to_string(),
            columns: columns.to_string(),
            rows,
        };
        if rows.is_empty() {
            return Ok(staged(StagedRows::None));
        }
        let Some(pool) = self.copy.clone() else {
            return Ok(staged(StagedRows::Held(rows)));
        };
        let stage = format!(
            "weft_stage_{}_{}",
            chrono::Utc::now().timestamp(),
            uuid::Uuid::new_v4().simple()
        );
        // The rows in COPY's text format, in messages of about COPY_CHUNK bytes, made here
        // while they are borrowed; the task owns what it sends.
        let mut chunks = Vec::new();
        let mut buf = String::with_capacity(COPY_CHUNK + 4096);
        for row in &rows {
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    buf.push('\t');
                }
                copy_text(&mut buf, cell);
            }
            buf.push('\n');
            if buf.len() >= COPY_CHUNK {
                chunks.push(std::mem::replace(
                    &mut buf,
                    String::with_capacity(COPY_CHUNK + 4096),
                ));
            }
        }
        if !buf.is_empty() {
            chunks.push(buf);
        }
        // Columns only, no constraints or indexes: the real table checks the rows as they
        // move, and an unlogged table writes no WAL for rows that live a moment.
        let create =
            format!("CREATE UNLOGGED TABLE {stage} AS SELECT {columns} FROM {name} WITH NO DATA");
        let copy = format!("COPY {stage} ({columns}) FROM STDIN");
        let task = tokio::spawn(async move {
            let mut pg = pool.acquire().await?;
            sqlx::query(&create).execute(&mut *pg).await?;
            let mut into = pg.copy_in_raw(&copy).await?;
            for chunk in &chunks {
                if let Err(e) = into.send(chunk.as_bytes()).await {
                    let _ = into.abort("the gateway stopped sending").await;
                    return Err(e);
                }
            }
            into.finish().await.map(|_| ())
        });
        self.tables.push(stage.clone());
        self.copying.push((stage.clone(), task));
        Ok(staged(StagedRows::Copying(stage)))
    }

    /// Moves staged rows into their table within `conn`'s transaction, with `then` after
    /// the insert (see [`Staging::insert`]); on PostgreSQL once their COPY has finished.
    pub(crate) async fn apply<const N: usize>(
        &mut self,
        conn: &mut sqlx::AnyConnection,
        staged: Staged<'_, N>,
        then: &str,
    ) -> Result<(), sqlx::Error> {
        let Staged {
            table,
            columns,
            rows,
        } = staged;
        let stage = match rows {
            StagedRows::None => return Ok(()),
            StagedRows::Held(rows) => {
                return insert_json_rows(conn, &table, &columns, then, &rows).await;
            }
            StagedRows::Copying(stage) => stage,
        };
        if let Some(at) = self.copying.iter().position(|(s, _)| *s == stage) {
            let (_, task) = self.copying.swap_remove(at);
            task.await
                .map_err(|e| sqlx::Error::Protocol(format!("a staging copy failed: {e}")))??;
        }
        let mut sql = format!("INSERT INTO {table} SELECT {columns} FROM {stage}");
        if !then.is_empty() {
            sql.push(' ');
            sql.push_str(then);
        }
        sqlx::query(&sql).execute(&mut *conn).await?;
        Ok(())
    }

    /// Drops the staging tables. Call once the transaction that read them has committed or
    /// rolled back: dropping one waits for every transaction that read it.
    pub(crate) async fn finish(mut self) {
        let tables = std::mem::take(&mut self.tables);
        let copying = std::mem::take(&mut self.copying);
        if let Some(pool) = &self.copy {
            drop_staged(pool, tables, copying).await;
        }
    }
}

impl Drop for Staging {
    /// A caller that returned early (an error between staging and committing) still has its
    /// staging tables dropped, in the background, once its transaction has rolled back and
    /// any COPY it started has ended.
    fn drop(&mut self) {
        let tables = std::mem::take(&mut self.tables);
        let copying = std::mem::take(&mut self.copying);
        if let (false, Some(pool), Ok(rt)) = (
            tables.is_empty(),
            self.copy.clone(),
            tokio::runtime::Handle::try_current(),
        ) {
            rt.spawn(async move { drop_staged(&pool, tables, copying).await });
        }
    }
}

async fn drop_staged(pool: &PgPool, tables: Vec<String>, copying: Vec<(String, Copying)>) {
    // A COPY never applied (its transaction failed first) ends before its table is dropped:
    // dropped first, the table could be created after.
    for (_, task) in copying {
        let _ = task.await;
    }
    for stage in tables {
        if let Err(e) = sqlx::query(&format!("DROP TABLE IF EXISTS {stage}"))
            .execute(pool)
            .await
        {
            // Swept by the next node to start; the error is the database's, naming no one.
            tracing::warn!(error = %e, "a bulk write's staging table was not dropped");
        }
    }
}

/// Rows per statement of [`insert_json_rows`].
const JSON_ROWS: usize = 10_000;

/// SQLite's bulk write: each statement's rows as one JSON array bound as one parameter and
/// unpacked by SQLite itself (`json_each`). Binding thousands of parameters a statement, and
/// preparing a statement as long, cost several times what SQLite spends inserting the rows.
/// Each row's array is turned into SQLite's binary JSON once, in a materialised table, before
/// its columns are taken out: read straight from `json_each`, it was rendered as text and
/// parsed again for every column. A float goes as text, as [`insert_rows`] binds it (JSON has
/// no NaN).
async fn insert_json_rows<const N: usize>(
    conn: &mut sqlx::AnyConnection,
    table: &str,
    columns: &str,
    then: &str,
    rows: &[[Cell<'_>; N]],
) -> Result<(), sqlx::Error> {
    use std::fmt::Write as _;
    let mut sql = format!(
        "WITH r (j) AS MATERIALIZED (SELECT jsonb(value) FROM json_each($1)) \
         INSERT INTO {table} SELECT "
    );
    for (i, column) in columns.split(',').enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(sql, "{sep}json_extract(j, '$[{i}]') AS {}", column.trim());
    }
    // `WHERE true` keeps an `ON CONFLICT` clause from being read as a join's.
    sql.push_str(" FROM r WHERE true");
    if !then.is_empty() {
        sql.push(' ');
        sql.push_str(then);
    }
    let encode = |e: serde_json::Error| sqlx::Error::Encode(e.into());
    // Bytes, so that serde_json writes each string in place (JSON text is UTF-8); one buffer
    // for every statement, grown once: a fresh one for each had the kernel zeroing new pages
    // for every statement.
    let mut json: Vec<u8> = Vec::new();
    for chunk in rows.chunks(JSON_ROWS) {
        json.clear();
        json.push(b'[');
        for (r, row) in chunk.iter().enumerate() {
            json.extend_from_slice(if r == 0 { b"[" } else { b",[" });
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    json.push(b',');
                }
                match *cell {
                    Cell::Text(None) | Cell::Real(None) => json.extend_from_slice(b"null"),
                    Cell::Text(Some(t)) => serde_json::to_writer(&mut json, t).map_err(encode)?,
                    Cell::Int(n) => serde_json::to_writer(&mut json, &n).map_err(encode)?,
                    Cell::Real(Some(f)) => {
                        serde_json::to_writer(&mut json, &f.to_string()).map_err(encode)?
                    }
                }
            }
            json.push(b']');
        }
        json.push(b']');
        let text = std::str::from_utf8(&json).map_err(|e| sqlx::Error::Encode(e.into()))?;
        sqlx::query(&sql).bind(text).execute(&mut *conn).await?;
    }
    Ok(())
}

/// One cell in COPY's text format: `\N` for a null, and backslash, tab, newline and carriage
/// return escaped.
fn copy_text(buf: &mut String, cell: &Cell<'_>) {
    use std::fmt::Write as _;
    match *cell {
        Cell::Text(None) | Cell::Real(None) => buf.push_str("\\N"),
        Cell::Text(Some(t)) => {
            for ch in t.chars() {
                match ch {
                    '\\' => buf.push_str("\\\\"),
                    '\t' => buf.push_str("\\t"),
                    '\n' => buf.push_str("\\n"),
                    '\r' => buf.push_str("\\r"),
                    c => buf.push(c),
                }
            }
        }
        Cell::Int(n) => {
            let _ = write!(buf, "{n}");
        }
        Cell::Real(Some(f)) => {
            let _ = write!(buf, "{f}");
        }
    }
}

/// One connection in [`WARM_SHARE`] of the configured number is kept warm for [`Store::lend`].
const WARM_SHARE: u32 = 4;

/// The connections kept out of the pool, idle ones last-in first-out (the most recently used
/// is the least likely to have been dropped by the server), and the slots that bound them.
struct Warm {
    idle: std::sync::Mutex<Vec<Kept>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Warm {
    fn new(slots: usize) -> Warm {
        Warm {
            idle: std::sync::Mutex::new(Vec::with_capacity(slots)),
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
        }
    }
}

/// A warm connection, since when it has been idle, and its slot (freed when it closes).
struct Kept {
    conn: sqlx::AnyConnection,
    since: Instant,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// A connection lent by [`Store::lend`]; it derefs to the connection.
pub struct Lent(Inner);

enum Inner {
    Warm(Kept, Arc<Warm>),
    Pooled(sqlx::pool::PoolConnection<sqlx::Any>),
}

impl Lent {
    /// Hands the connection back after statements that ran to their end. A `Lent` dropped
    /// without this closes its connection instead (or, from the pool, lets the pool test it).
    pub fn done(self) {
        if let Inner::Warm(mut kept, warm) = self.0 {
            kept.since = Instant::now();
            if let Ok(mut idle) = warm.idle.lock() {
                idle.push(kept);
            }
        }
    }
}

impl std::ops::Deref for Lent {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        match &self.0 {
            Inner::Warm(kept, _) => &kept.conn,
            Inner::Pooled(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for Lent {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        match &mut self.0 {
            Inner::Warm(kept, _) => &mut kept.conn,
            Inner::Pooled(conn) => conn,
        }
    }
}

/// A store for one unit test, on the backend this test run exercises (`WEFT_TEST_STORE`):
/// a fresh SQLite file, or a fresh PostgreSQL database that is dropped with the guard.
#[cfg(test)]
pub(crate) async fn test_store(dir: &std::path::Path) -> (Store, weft_adapters::testkit::FreshDb) {
    use weft_adapters::testkit;
    let db = match std::env::var("WEFT_TEST_STORE").as_deref() {
        Ok("postgres") => testkit::fresh_postgres()
            .await
            .expect("WEFT_TEST_STORE=postgres needs WEFT_TEST_POSTGRES_URL"),
        _ => testkit::fresh_sqlite(dir),
    };
    let store = Store::open(&SecretString::from(db.url.clone()), 4)
        .await
        .expect("test store opens");
    (store, db)
}

/// How many rows `table` holds, for tests that check what a write left behind.
#[cfg(test)]
pub(crate) async fn test_count(store: &Store, table: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .get("n")
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    #[test]
    fn placeholders_number_from_where_the_list_starts() {
        assert_eq!(placeholders(1, 0), "");
        assert_eq!(placeholders(1, 1), "$1");
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }

    /// Whether `conn` is the connection that made the marker table (a temporary table lives
    /// and dies with its connection, on both backends).
    async fn marked(conn: &mut sqlx::AnyConnection) -> bool {
        sqlx::query("SELECT COUNT(*) FROM lent_marker")
            .fetch_one(conn)
            .await
            .is_ok()
    }

    /// A warm connection handed back is lent again without going through the pool; while it
    /// is out the pool lends; one not handed back is closed, never lent again; one the server
    /// dropped while it lay idle is found out before it is lent; and the pool's connections and
    /// the warm ones together stay within the configured number.
    #[tokio::test]
    async fn a_lent_connection_comes_back_warm_and_one_not_handed_back_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await; // 4 connections: 1 warm, 3 pooled
        let mut warm = store.lend().await.unwrap();
        assert!(matches!(warm.0, Inner::Warm(..)));
        sqlx::query("CREATE TEMP TABLE lent_marker (x INTEGER)")
            .execute(&mut *warm)
            .await
            .unwrap();
        let mut pooled = store.lend().await.unwrap();
        assert!(
            matches!(pooled.0, Inner::Pooled(_)),
            "the one warm slot is out"
        );
        assert!(!marked(&mut pooled).await);
        pooled.done();
        warm.done();
        assert_eq!(
            store.pool.options().get_max_connections(),
            3,
            "the pool keeps to its share"
        );

        let mut again = store.lend().await.unwrap();
        assert!(marked(&mut again).await, "handed back, lent again");
        drop(again); // as a failed statement or a cancelled view leaves it
        let mut fresh = store.lend().await.unwrap();
        assert!(matches!(fresh.0, Inner::Warm(..)), "its slot came back");
        assert!(
            !marked(&mut fresh).await,
            "a connection not handed back is closed"
        );
        fresh.done();

        if store.backend == Backend::Postgres {
            let mut victim = store.lend().await.unwrap();
            let pid: i32 = sqlx::query("SELECT pg_backend_pid() AS pid")
                .fetch_one(&mut *victim)
                .await
                .unwrap()
                .get("pid");
            victim.done();
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&store.pool)
                .await
                .unwrap();
            tokio::time::sleep(PING_IDLE).await;
            let mut next = store.lend().await.unwrap();
            let now: i32 = sqlx::query("SELECT pg_backend_pid() AS pid")
                .fetch_one(&mut *next)
                .await
                .expect("the dropped connection is not lent")
                .get("pid");
            assert_ne!(now, pid);
            next.done();
        }
    }

    /// Every staging table still in the store (PostgreSQL), or none (SQLite stages nothing).
    async fn staged(store: &Store) -> Vec<String> {
        if store.backend == Backend::Sqlite {
            return Vec::new();
        }
        sqlx::query("SELECT CAST(tablename AS TEXT) AS tablename FROM pg_tables WHERE tablename LIKE 'weft_stage_%'")
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("tablename"))
            .collect()
    }

    fn rows(n: usize) -> Vec<(String, String, Option<f64>, Option<String>)> {
        (0..n)
            .map(|i| {
                (
                    format!("l{i:05}"),
                    // Every character COPY's text format and JSON escape.
                    format!("a\tb\nc\r\\N \\ \"q\" é {i}"),
                    (i % 3 != 0).then_some(i as f64 / 7.0),
                    (i % 2 == 0).then(|| format!("{i}")),
                )
            })
            .collect()
    }

    /// Bulk writes arrive exactly as given (tabs, newlines, backslashes, quotes, nulls and
    /// floats included) whichever way the backend stages them; an `ON CONFLICT` clause
    /// applies; a transaction that rolls back leaves none of its rows; and no staging table
    /// outlives its transaction.
    #[tokio::test]
    async fn staged_rows_arrive_as_given_and_a_rollback_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = test_store(dir.path()).await;
        let written = rows(2_500);
        type Written = (String, String, Option<f64>, Option<String>);
        fn cells(r: &[Written]) -> Vec<[Cell<'_>; 15]> {
            r.iter()
                .map(|(id, text, p, reason)| {
                    [
                        Cell::from(id.as_str()),
                        "school".into(),
                        text.as_str().into(),
                        "child".into(),
                        "review".into(),
                        "probabilistic".into(),
                        Cell::Real(*p),
                        Cell::Real(p.map(|p| -p)),
                        Cell::Text(None),
                        "[]".into(),
                        Cell::Text(None),
                        Cell::Text(None),
                        Cell::Text(reason.as_deref()),
                        "2026-01-01T00:00:00Z".into(),
                        Cell::Text(None),
                    ]
                })
                .collect()
        }
        const LINKS: &str = "match_links (id, source, local_id, child_id, status, method, \
            probability, match_weight, model_version, explanation, decided_by, decision, reason, \
            created_at, decided_at)";
        let mut tx = store.begin_write().await.unwrap();
        let mut staging = store.staging();
        staging
            .insert(
                &mut tx,
                "children (id, created_at)",
                "",
                [[Cell::from("child"), "2026-01-01T00:00:00Z".into()]],
            )
            .await
            .unwrap();
        staging
            .insert(&mut tx, LINKS, "", cells(&written))
            .await
            .unwrap();
        staging
            .insert(
                &mut tx,
                "match_terms (comparison, value, n, sq)",
                "ON CONFLICT (comparison, value) DO UPDATE SET n = match_terms.n + excluded.n",
                [[
                    Cell::from("given"),
                    "ruby\tx".into(),
                    Cell::Int(2),
                    Cell::Int(4),
                ]],
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        staging.finish().await;
        assert_eq!(staged(&store).await, Vec::<String>::new());

        type Read = (
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let read: Vec<Read> = sqlx::query(
            "SELECT id, local_id, CAST(probability AS TEXT) AS p, \
                 CAST(match_weight AS TEXT) AS w, reason FROM match_links ORDER BY id",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get("id"),
                r.get("local_id"),
                r.get("p"),
                r.get("w"),
                r.get("reason"),
            )
        })
        .collect();
        assert_eq!(read.len(), written.len());
        for ((id, text, p, reason), (rid, rtext, rp, rw, rreason)) in written.iter().zip(&read) {
            assert_eq!((id, text, reason), (rid, rtext, rreason));
            // SQLite prints a REAL with 15 significant digits.
            let close = |v: &Option<String>, want: Option<f64>| match (v, want) {
                (Some(v), Some(w)) => (v.parse::<f64>().unwrap() - w).abs() < 1e-12,
                (None, None) => true,
                _ => false,
            };
            assert!(close(rp, *p), "{id}: {rp:?} for {p:?}");
            assert!(close(rw, p.map(|p| -p)), "{id}: {rw:?}");
        }

        // The clause applies, and a rolled-back transaction leaves nothing of its rows.
        let mut tx = store.begin_write().await.unwrap();
        let mut staging = store.staging();
        staging
            .insert(
                &mut tx,
                "match_terms (comparison, value, n, sq)",
                "ON CONFLICT (comparison, value) DO UPDATE SET n = match_terms.n + excluded.n",
                [[
                    Cell::from("given"),
                    "ruby\tx".into(),
                    Cell::Int(3),
                    Cell::Int(9),
                ]],
            )
            .await
            .unwrap();
        let more: Vec<_> = rows(10)
            .into_iter()
            .map(|(id, text, p, reason)| (format!("m{id}"), text, p, reason))
            .collect();
        staging
            .insert(&mut tx, LINKS, "", cells(&more))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        staging.finish().await;
        let n: i64 = sqlx::query("SELECT n FROM match_terms WHERE value = $1")
            .bind("ruby\tx")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get("n");
        assert_eq!(n, 5);

        let mut tx = store.begin_write().await.unwrap();
        let mut staging = store.staging();
        let gone: Vec<_> = rows(10)
            .into_iter()
            .map(|(id, text, p, reason)| (format!("r{id}"), text, p, reason))
            .collect();
        staging
            .insert(&mut tx, LINKS, "", cells(&gone))
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        staging.finish().await;
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM match_links")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get("n");
        assert_eq!(count, (written.len() + more.len()) as i64);
        assert_eq!(staged(&store).await, Vec::<String>::new());

        // Rows staged ahead arrive once applied, in the order applied; rows staged and never
        // applied (the transaction failed first) arrive nowhere, and their staging table is
        // dropped once their COPY has ended.
        let ahead: Vec<_> = rows(2_000)
            .into_iter()
            .map(|(id, text, p, reason)| (format!("a{id}"), text, p, reason))
            .collect();
        let never: Vec<_> = rows(2_000)
            .into_iter()
            .map(|(id, text, p, reason)| (format!("n{id}"), text, p, reason))
            .collect();
        let mut tx = store.begin_write().await.unwrap();
        let mut staging = store.staging();
        let first = staging.stage(LINKS, cells(&ahead)).unwrap();
        let second = staging.stage(LINKS, cells(&never)).unwrap();
        staging.apply(&mut tx, first, "").await.unwrap();
        drop(second);
        tx.commit().await.unwrap();
        staging.finish().await;
        let prefixed = |prefix: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query("SELECT COUNT(*) AS n FROM match_links WHERE id LIKE $1")
                    .bind(format!("{prefix}%"))
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    .get::<i64, _>("n")
            }
        };
        assert_eq!((prefixed("a").await, prefixed("n").await), (2_000, 0));
        assert_eq!(staged(&store).await, Vec::<String>::new());

        // A staging table left by a node that stopped is swept by the next to start.
        if store.backend == Backend::Postgres {
            let old = format!(
                "weft_stage_{}_deadbeef",
                chrono::Utc::now().timestamp() - 7_200
            );
            let fresh = format!("weft_stage_{}_cafe", chrono::Utc::now().timestamp());
            for t in [&old, &fresh] {
                sqlx::query(&format!("CREATE UNLOGGED TABLE {t} (x TEXT)"))
                    .execute(&store.pool)
                    .await
                    .unwrap();
            }
            store.sweep_staging().await.unwrap();
            assert_eq!(staged(&store).await, vec![fresh.clone()]);
            sqlx::query(&format!("DROP TABLE {fresh}"))
                .execute(&store.pool)
                .await
                .unwrap();
        }
    }
}
