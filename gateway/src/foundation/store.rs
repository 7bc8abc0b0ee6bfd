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
use sqlx::{AnyPool, Executor};

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

/// A pool on the gateway's database, with the backend it speaks.
#[derive(Clone)]
pub struct Store {
    pub pool: AnyPool,
    pub backend: Backend,
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
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
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
        let store = Store {
            pool,
            backend,
            probe: Arc::default(),
        };
        match backend {
            Backend::Sqlite => SQLITE.run(&store.pool).await?,
            Backend::Postgres => POSTGRES.run(&store.pool).await?,
        }
        Ok(store)
    }

    /// A transaction that reads, then writes. On SQLite it takes the write lock at the start
    /// (`BEGIN IMMEDIATE`): a deferred transaction that has read is refused the upgrade at once,
    /// whatever `busy_timeout` says, if another writer (the audit writer) committed meanwhile.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Takes the master child index's write lock for the rest of `tx`: every change to the
    /// index (an upsert, a bulk placement, a person's decision) holds it, so that two nodes
    /// placing records at the same moment never both decide a record is new (two children, or
    /// a duplicate key on the second insert). On SQLite `BEGIN IMMEDIATE` (see
    /// [`Store::begin_write`]) already is that lock; on PostgreSQL it is a transaction-level
    /// advisory lock, released at commit or rollback.
    pub async fn lock_index(&self, tx: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(1467118692)) AS l")
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
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
