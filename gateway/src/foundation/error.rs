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
        Error::Internal(format!("database: {e}"))
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
