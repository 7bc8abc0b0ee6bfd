//! Why a read or a write did not happen, in words any interface can pass on: the JSON API maps
//! each to a status code, a web page to a message beside the field. None carries anything the
//! request held that is personal (no rejected value is ever echoed).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is wrong; every problem names its field as a JSON pointer.
    #[error("invalid: {message}")]
    Invalid {
        message: String,
        errors: Vec<SchemaError>,
    },
    /// The input is well formed (it matches its schema) but cannot be acted on: an identifier
    /// whose check digit fails, a child or agency that does not exist, a date that does not, a
    /// period that ends before it starts. Every problem names its field as a JSON pointer.
    #[error("unprocessable: {message}")]
    Unprocessable {
        message: String,
        errors: Vec<SchemaError>,
    },
    /// The practitioner may not do this (role, relationship or policy).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// The request contradicts what is stored (an idempotency key reused for another body, a
    /// step backwards on a concern, a decision on a closed match).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The audit entry could not be written, so nothing was returned and nothing changed.
    #[error("audit unavailable")]
    AuditUnavailable,
    /// Something the gateway needs is out of reach for now (overload, a queue).
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    /// A fault of the gateway's own; the cause is logged, never shown.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            message: message.into(),
            errors: Vec::new(),
        }
    }

    /// Invalid input at one field, named by its JSON pointer.
    pub fn field(pointer: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Error::Invalid {
            message: format!("{pointer}: {message}"),
            errors: vec![SchemaError {
                pointer: pointer.into(),
                message,
            }],
        }
    }

    /// Well-formed input that cannot be acted on, at one field named by its JSON pointer.
    pub fn unprocessable(pointer: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Error::Unprocessable {
            message: format!("{pointer}: {message}"),
            errors: vec![SchemaError {
                pointer: pointer.into(),
                message,
            }],
        }
    }

    /// The audit log's word for a refusal of this kind.
    pub fn outcome(&self) -> &'static str {
        match self {
            Error::Forbidden(_) => "denied",
            _ => "rejected",
        }
    }
}

/// Most items one page of a list returns.
pub const PAGE_MAX: u32 = 1000;
/// Items a page returns when `limit` is not given.
pub const PAGE_DEFAULT: u32 = 100;

/// The page size asked for (`limit`): [`PAGE_DEFAULT`] when absent, refused outside 1 to
/// [`PAGE_MAX`] rather than quietly changed, as the API description states the range.
pub fn page_limit(limit: Option<u32>) -> Result<u32, Error> {
    match limit {
        None => Ok(PAGE_DEFAULT),
        Some(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
        Some(_) => Err(Error::field("/limit", format!("between 1 and {PAGE_MAX}"))),
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if busy(&e) {
            // The store's own words: an error code and a lock, never a value of a record.
            tracing::warn!(error = %e, "store busy or out of reach");
            return Error::Unavailable("the store is busy or out of reach; try again shortly");
        }
        Error::Internal(format!("database: {e}"))
    }
}

/// Whether a store error is one of waiting, not of the request or the gateway: SQLite's
/// database busy or locked past its busy timeout (a long write elsewhere), PostgreSQL's
/// serialisation failure, deadlock, lock or connection limits, a pool with no connection to
/// give, a connection lost. Tried again a moment later the request may well succeed, so the
/// answer is 503, not 500.
fn busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|code| {
            // SQLite: SQLITE_BUSY and SQLITE_LOCKED, with their extended codes (the low byte).
            let sqlite = code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6));
            sqlite || matches!(&*code, "40001" | "40P01" | "55P03" | "53300" | "57P03")
        }),
        _ => false,
    }
}

/// One schema violation: where (a JSON pointer into the payload) and what.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SchemaError {
    /// JSON pointer to the offending value (`""` is the whole document).
    pub pointer: String,
    pub message: String,
}

impl SchemaError {
    /// The pointer as a configuration key: `/sources/0/deadline_ms` → `sources[0].deadline_ms`.
    pub fn key(&self) -> String {
        let mut key = String::new();
        for part in self.pointer.split('/').skip(1) {
            if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
                key.push_str(&format!("[{part}]"));
            } else {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(&part.replace("~1", "/").replace("~0", "~"));
            }
        }
        if key.is_empty() {
            "(root)".into()
        } else {
            key
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{ConnectOptions, Connection};

    use super::*;

    /// A write that meets another connection's write lock past its busy timeout is a store
    /// that is busy, not a fault: 503, and nothing of the database's message in the answer.
    #[tokio::test]
    async fn a_locked_store_is_unavailable_not_internal() {
        let dir = tempfile::tempdir().unwrap();
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("busy.db"))
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let mut holder = opts.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut holder)
            .await
            .unwrap();
        let mut held = holder.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *held)
            .await
            .unwrap();
        let mut other = opts.connect().await.unwrap();
        let e = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut other)
            .await
            .unwrap_err();
        assert!(matches!(Error::from(e), Error::Unavailable(_)));
        assert!(matches!(
            Error::from(sqlx::Error::PoolTimedOut),
            Error::Unavailable(_)
        ));
        // Anything else stays the gateway's own fault.
        assert!(matches!(
            Error::from(sqlx::Error::RowNotFound),
            Error::Internal(_)
        ));
        held.rollback().await.unwrap();
    }
}
