//! Throw-away databases for tests (feature `testkit`).
//!
//! Every test gets a database of its own, `weft_t_<16 hex digits>`, created on the server named
//! by an environment variable and dropped afterwards, so tests can run in parallel and never see
//! each other's rows or a previous run's leftovers.
//!
//! - PostgreSQL: `WEFT_TEST_POSTGRES_URL`, an admin URL such as
//!   `postgres://postgres@127.0.0.1:5432/postgres`.
//! - MariaDB/MySQL: `WEFT_TEST_MARIADB_URL`, e.g. `mysql://root@127.0.0.1:3306/test`
//!   (`mariadb://` is accepted too).
//! - SQLite needs no server: [`fresh_sqlite`] makes a file in a directory the test owns.
//!
//! When a variable is unset the helper prints why the test is not run and returns `None`; the
//! test should then return early. When it is set but the server cannot be used, the helper
//! panics: CI sets both, and a silently skipped test would hide a broken setup.
//!
//! ```no_run
//! # async fn example() {
//! let Some(db) = weft_adapters::testkit::fresh_postgres().await else { return };
//! db.execute("CREATE TABLE person (id INT PRIMARY KEY)").await.unwrap();
//! // … point the code under test at db.url …
//! db.drop_db().await.unwrap();
//! # }
//! ```

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Connection, MySqlConnection, PgConnection, SqliteConnection};
use url::Url;

/// Admin URL of the PostgreSQL server that test databases are created on.
pub const POSTGRES_ENV: &str = "WEFT_TEST_POSTGRES_URL";
/// Admin URL of the MariaDB/MySQL server that test databases are created on.
pub const MARIADB_ENV: &str = "WEFT_TEST_MARIADB_URL";

/// Which kind of server a [`FreshDb`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    MariaDb,
    Sqlite,
}

/// A database created for one test. Drop it with [`FreshDb::drop_db`]; if the test panics
/// first, `Drop` removes it (blocking, on a thread of its own).
#[derive(Debug)]
pub struct FreshDb {
    /// URL of the new database, ready for [`crate::sql::SqlConfig::url`] or a sqlx pool.
    pub url: String,
    pub backend: Backend,
    name: String,
    target: Target,
    dropped: bool,
}

#[derive(Debug, Clone)]
enum Target {
    Server { admin_url: String },
    File { path: PathBuf },
}

impl FreshDb {
    /// The database's name (`weft_t_…`), or the SQLite file's stem.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs SQL (several `;`-separated statements allowed) on a connection of its own, e.g. to
    /// create a schema and rows before the code under test connects.
    pub async fn execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self.backend {
            Backend::Postgres => {
                let mut c = PgConnection::connect(&self.url).await?;
                sqlx::raw_sql(sql).execute(&mut c).await?;
                c.close().await
            }
            Backend::MariaDb => {
                let mut c = MySqlConnection::connect(&self.url).await?;
                sqlx::raw_sql(sql).execute(&mut c).await?;
                c.close().await
            }
            Backend::Sqlite => {
                let mut c = SqliteConnection::connect(&self.url).await?;
                sqlx::raw_sql(sql).execute(&mut c).await?;
                c.close().await
            }
        }
    }

    /// Drops the database (PostgreSQL: terminating any connections still open to it) or
    /// deletes the SQLite file.
    pub async fn drop_db(mut self) -> Result<(), sqlx::Error> {
        self.dropped = true;
        remove(&self.target, &self.name).await
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let target = self.target.clone();
        let name = std::mem::take(&mut self.name);
        // Drop cannot await, and may run inside a runtime that must not be blocked on itself:
        // the clean-up gets a thread and a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    if let Err(e) = runtime.block_on(remove(&target, &name)) {
                        eprintln!("testkit: could not drop test database {name}: {e}");
                    }
                }
                Err(e) => eprintln!("testkit: no runtime to drop test database {name}: {e}"),
            }
        });
        let _ = cleanup.join();
    }
}

async fn remove(target: &Target, name: &str) -> Result<(), sqlx::Error> {
    match target {
        Target::Server { admin_url } if is_postgres(admin_url) => {
            let mut c = PgConnection::connect(admin_url).await?;
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut c)
                .await?;
            c.close().await
        }
        Target::Server { admin_url } => {
            let mut c = MySqlConnection::connect(admin_url).await?;
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS `{name}`"))
                .execute(&mut c)
                .await?;
            c.close().await
        }
        Target::File { path } => {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                match std::fs::remove_file(&file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(sqlx::Error::Io(e))
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres:") || url.starts_with("postgresql:")
}

/// `weft_t_` and 16 hex digits: unique across parallel tests and processes without a random
/// number crate (the standard library's hasher keys are random per process and thread).
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    format!("weft_t_{:016x}", hasher.finish())
}

fn admin_url(env: &str, what: &str) -> Option<String> {
    match std::env::var(env) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            eprintln!("{what} test not run: {env} is not set (set it to an admin URL to run it)");
            None
        }
    }
}

/// The admin URL with its path replaced by the new database's name.
fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = match Url::parse(admin_url) {
        Ok(url) => url,
        Err(e) => panic!("testkit: admin URL does not parse: {e}"),
    };
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A new, empty PostgreSQL database on the server at `WEFT_TEST_POSTGRES_URL`; `None` (with a
/// line on stderr) when the variable is unset.
pub async fn fresh_postgres() -> Option<FreshDb> {
    let admin = admin_url(POSTGRES_ENV, "PostgreSQL")?;
    Some(create_postgres(&admin).await)
}

/// A new, empty database on the MariaDB/MySQL server at `WEFT_TEST_MARIADB_URL`; `None` (with a
/// line on stderr) when the variable is unset. The URL handed back uses `mysql://`.
pub async fn fresh_mariadb() -> Option<FreshDb> {
    let admin = admin_url(MARIADB_ENV, "MariaDB")?;
    Some(create_mariadb(&admin).await)
}

/// A new SQLite database file in `dir` (created on first connection: the URL has
/// `mode=rwc`). Pass a directory the test owns, such as a `tempfile::TempDir`.
pub fn fresh_sqlite(dir: &Path) -> FreshDb {
    let name = unique_name();
    let path = dir.join(format!("{name}.db"));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    FreshDb {
        url,
        backend: Backend::Sqlite,
        name,
        target: Target::File { path },
        dropped: false,
    }
}

async fn create_postgres(admin: &str) -> FreshDb {
    let name = unique_name();
    let mut c = PgConnection::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("testkit: cannot connect to {POSTGRES_ENV}: {e}"));
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("testkit: cannot create a PostgreSQL database: {e}"));
    let _ = c.close().await;
    FreshDb {
        url: database_url(admin, &name),
        backend: Backend::Postgres,
        target: Target::Server {
            admin_url: admin.to_owned(),
        },
        name,
        dropped: false,
    }
}

async fn create_mariadb(admin: &str) -> FreshDb {
    let admin = match admin.strip_prefix("mariadb:") {
        Some(rest) => format!("mysql:{rest}"),
        None => admin.to_owned(),
    };
    let name = unique_name();
    let mut c = MySqlConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("testkit: cannot connect to {MARIADB_ENV}: {e}"));
    sqlx::raw_sql(&format!(
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .execute(&mut c)
    .await
    .unwrap_or_else(|e| panic!("testkit: cannot create a MariaDB database: {e}"));
    let _ = c.close().await;
    FreshDb {
        url: database_url(&admin, &name),
        backend: Backend::MariaDb,
        target: Target::Server { admin_url: admin },
        name,
        dropped: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_valid_identifiers() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert_eq!(a.len(), "weft_t_".len() + 16);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn database_url_replaces_only_the_path() {
        assert_eq!(
            database_url(
                "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
                "weft_t_1"
            ),
            "postgres://postgres@127.0.0.1:5432/weft_t_1?sslmode=disable"
        );
        assert_eq!(
            database_url("mysql://root@127.0.0.1:3306", "weft_t_2"),
            "mysql://root@127.0.0.1:3306/weft_t_2"
        );
    }
}
