//! Weft's adapters: the one trait every partner system is reached through, and one module per
//! protocol.
//!
//! - [`record`]: what an adapter hands back — source records for the master child index, and
//!   categorised items for a view. Adapters report what a source says; the gateway judges it
//!   (identifier checks, policy, merging).
//! - [`fhir`]: FHIR R4 JSON over HTTP (health: PDS-style Patient search, Flag resources).
//! - [`sql`]: configured, parameterised queries against a source's reporting database
//!   (PostgreSQL, MariaDB/MySQL, SQLite).
//! - [`http_json`]: JSON over HTTP with a declarative JSON-pointer mapping (police and others),
//!   authenticated by bearer token and/or client certificate ([`ClientTls`]).
//! - [`file`]: files dropped in a folder (school census/MIS CSV, Common Transfer File, CIN
//!   census, SSDA903), imported into a store and served from it.
//!
//! An adapter is chosen by the `kind` of its [`AdapterConfig`], never in code.

pub mod fhir;
pub mod file;
mod http;
pub mod http_json;
pub mod record;
pub mod sql;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use http::ClientTls;
pub use record::{
    marks_restriction, Address, Demographics, Identifier, Item, Probe, SourceRecord,
    RESTRICTION_MARKERS,
};

/// One partner system, seen through its protocol.
///
/// Implementations hold pooled connections and are shared across requests, hence `Send + Sync`.
/// Deadlines are applied by the caller (each source has its own); adapters only need to avoid
/// blocking the runtime and to report failures precisely, because the reason becomes the
/// `unavailable` reason a practitioner sees.
#[async_trait]
pub trait Adapter: Send + Sync {
    /// Every record the source can enumerate, so the master child index can link them ahead of
    /// any request. `Ok(None)` means the source only answers searches (as the NHS PDS does); the
    /// index then traces children into it with [`Adapter::find`].
    async fn list(&self) -> Result<Option<Vec<SourceRecord>>, AdapterError>;

    /// Records matching a probe — identifiers first, demographics otherwise. Used to trace a
    /// child into query-only sources.
    async fn find(&self, probe: &Probe) -> Result<Vec<SourceRecord>, AdapterError>;

    /// Everything the source holds on one of its records, as categorised items. `Ok(None)` means
    /// the source no longer holds that record: the view says `no_record`, never an empty `shown`.
    async fn fetch(&self, local_id: &str) -> Result<Option<Vec<Item>>, AdapterError>;
}

/// Why a source could not answer. The [`AdapterError::reason`] code is shown to users as the
/// source's `unavailable` reason, so the variants follow what an administrator would fix.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The source could not be reached at all (refused, reset, DNS, TLS).
    #[error("could not connect: {0}")]
    Connect(String),
    /// The source answered with an HTTP error status.
    #[error("source answered HTTP {0}")]
    Status(u16),
    /// The source answered, but not in the shape its protocol promises.
    #[error("unreadable response: {0}")]
    Protocol(String),
    /// The source refused the search as too broad (FHIR `TOO_MANY_MATCHES`).
    #[error("too many matches")]
    TooManyMatches,
    /// The source's database rejected or failed a query.
    #[error("database error: {0}")]
    Database(String),
    /// The adapter's configuration cannot work (bad URL, unknown driver).
    #[error("configuration: {0}")]
    Config(String),
}

impl AdapterError {
    /// A short, stable code for the view and for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            AdapterError::Connect(_) => "connection_failed",
            AdapterError::Status(_) => "source_error",
            AdapterError::Protocol(_) => "bad_response",
            AdapterError::TooManyMatches => "too_many_matches",
            AdapterError::Database(_) => "database_error",
            AdapterError::Config(_) => "misconfigured",
        }
    }

    /// Whether the same read might succeed if asked again shortly: the connection failed, or the
    /// source said it was overloaded or briefly broken (HTTP 408, 429, 5xx). A bad body, a
    /// refused query or a configuration error would fail the same way again, so those are not.
    pub fn is_transient(&self) -> bool {
        match self {
            AdapterError::Connect(_) => true,
            AdapterError::Status(s) => *s == 408 || *s == 429 || *s >= 500,
            _ => false,
        }
    }
}

/// An adapter's configuration, selected by `kind` in the configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
// Read once at start-up, a handful per deployment: the size does not matter, and boxing the
// JSON variant would change the shape callers construct and match on.
#[allow(clippy::large_enum_variant)]
pub enum AdapterConfig {
    Fhir(fhir::FhirConfig),
    Sql(sql::SqlConfig),
    HttpJson(http_json::HttpJsonConfig),
    File(file::FileConfig),
}

/// What an adapter may need from the gateway beyond its own configuration.
#[derive(Clone, Default)]
pub struct BuildContext {
    /// The source's id, for adapters whose data the gateway keeps by source.
    pub source: String,
    /// Where `file` sources' imported records are kept.
    pub imports: Option<Arc<dyn file::ImportStore>>,
}

impl AdapterConfig {
    /// The configuration's `kind`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AdapterConfig::Fhir(_) => "fhir",
            AdapterConfig::Sql(_) => "sql",
            AdapterConfig::HttpJson(_) => "http_json",
            AdapterConfig::File(_) => "file",
        }
    }

    /// Builds the adapter. Connection pools are created lazily, so a source that is down at
    /// start-up does not stop the gateway from starting; it shows as `unavailable` instead.
    pub fn build(&self) -> Result<Arc<dyn Adapter>, AdapterError> {
        self.build_with(&BuildContext::default())
    }

    /// Builds the adapter with what the gateway provides. A `file` source needs an import
    /// store; without one it is a configuration error.
    pub fn build_with(&self, ctx: &BuildContext) -> Result<Arc<dyn Adapter>, AdapterError> {
        Ok(match self {
            AdapterConfig::File(_) => {
                let store = ctx.imports.clone().ok_or_else(|| {
                    AdapterError::Config("a file source needs the gateway's import store".into())
                })?;
                Arc::new(file::FileAdapter::new(ctx.source.clone(), store))
            }
            AdapterConfig::Fhir(c) => Arc::new(fhir::FhirAdapter::new(c.clone())?),
            AdapterConfig::Sql(c) => Arc::new(sql::SqlAdapter::new(c.clone())?),
            AdapterConfig::HttpJson(c) => Arc::new(http_json::HttpJsonAdapter::new(c.clone())?),
        })
    }
}

/// A secret as Debug shows it: whether it is set, never what it is.
pub(crate) fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "***")
}

/// Maps a reqwest failure to the adapter error a user can act on.
///
/// The URL is stripped first: request URLs carry identifiers (an NHS number in a search, a local
/// id in a read), and error messages end up in logs. The cause chain is kept, because "error
/// sending request" alone does not tell an administrator that the port was refused.
pub(crate) fn http_error(e: reqwest::Error) -> AdapterError {
    let e = e.without_url();
    if let Some(status) = e.status() {
        AdapterError::Status(status.as_u16())
    } else if e.is_decode() {
        AdapterError::Protocol(error_chain(&e))
    } else {
        AdapterError::Connect(error_chain(&e))
    }
}

/// An error and its causes on one line, e.g. `error sending request: tcp connect error:
/// Connection refused (os error 111)`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // hyper and reqwest often repeat the inner message in the outer one.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
