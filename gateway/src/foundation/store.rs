//! The gateway's own database: the master child index and the audit log. One schema, two
//! backends — SQLite embedded by default, PostgreSQL for real deployments and several nodes —
//! reached through sqlx's `Any` driver so that every query is written once. Queries stick to
//! the portable subset (`$n` parameters, TEXT timestamps, BIGINT) that both understand.

use std::str::FromStr;
use std::time::Duration;

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
}

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
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
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
        let store = Store { pool, backend };
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

    /// Whether the database answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// One value of a row written by [`insert_rows`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    Text(Option<&'a str>),
    Int(i64),
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
    use std::fmt::Write as _;
    let rows: Vec<[Cell; N]> = rows.into_iter().collect();
    let limit = match backend {
        Backend::Sqlite => 32_766,
        Backend::Postgres => 65_535,
    };
    for chunk in rows.chunks(ROWS_PER_STATEMENT.min(limit / N.max(1))) {
        let mut sql = format!("INSERT INTO {table} VALUES ");
        for r in 0..chunk.len() {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for c in 0..N {
                let sep = if c == 0 { "" } else { ", " };
                let _ = write!(sql, "{sep}${}", r * N + c + 1);
            }
            sql.push(')');
        }
        let mut q = sqlx::query(&sql);
        for row in chunk {
            for v in row {
                q = match *v {
                    Cell::Text(t) => q.bind(t),
                    Cell::Int(n) => q.bind(n),
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
