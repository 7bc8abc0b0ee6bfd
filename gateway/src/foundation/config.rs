//! Configuration: one TOML file, overridden by `WEFT_…` environment variables, checked against
//! `schemas/config.schema.json` before it is deserialised, so that every error names the key.
//!
//! Layering follows the usual order: the file, then the environment (`WEFT_LISTEN`,
//! `WEFT_DATABASE__URL`, …; a double underscore descends into a table).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use weft_adapters::AdapterConfig;

use crate::foundation::schema::Schemas;

/// The whole configuration, validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the gateway listens; port 0 picks a free port (printed at start-up).
    pub listen: SocketAddr,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Plain HTTP, allowed only on a loopback address (local development, the demo's own checks).
    #[serde(default)]
    pub insecure_plaintext: bool,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub index: IndexConfig,
    #[serde(default)]
    pub break_glass: BreakGlassConfig,
    /// Which relationships with a child let a practitioner in each role see it.
    #[serde(default)]
    pub relationships: RelationshipsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub web: WebConfig,
    #[serde(default)]
    pub matching: MatchingConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Area reports and their alert rule.
    #[serde(default)]
    pub reports: ReportsConfig,
    pub agencies: Vec<AgencyConfig>,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

/// Area reports (`crate::read::area`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// A ward lookup (`schemas/ward-lookup.schema.json`): areas are wards rather than postcode
    /// districts.
    #[serde(default)]
    pub ward_lookup: Option<PathBuf>,
    /// How often the area alert rule (`alerts.area_persistent_absence` in the routing file) is
    /// run, in seconds; 0 never.
    #[serde(default = "default_area_alert_secs")]
    pub alert_check_secs: u64,
}

fn default_area_alert_secs() -> u64 {
    300
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            ward_lookup: None,
            alert_check_secs: default_area_alert_secs(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain presented to callers.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM bundle of CAs whose client certificates identify calling agency systems. When set,
    /// mutual TLS is required: a caller without a certificate from this bundle never completes
    /// the handshake.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://weft.db` (created if missing) or `postgres://user@host/db`.
    pub url: SecretString,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    16
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Expected `iss` of practitioner tokens.
    pub issuer: String,
    /// Expected `aud` of practitioner tokens.
    pub audience: String,
    /// Public keys that may sign tokens.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// The identity provider's JWKS: its keys may sign tokens too, and are fetched again when
    /// the provider rotates them.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Longest a token may live: `exp − iat`, and `exp` from now. A practitioner's token is for
    /// a working day; one that outlives it is a leaked credential waiting to be used.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_secs: u64,
}

fn default_leeway() -> u64 {
    30
}
fn default_max_lifetime() -> u64 {
    12 * 3600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Matched against the token header's `kid`; a token without `kid` may use any key.
    pub kid: String,
    pub algorithm: KeyAlgorithm,
    /// PEM public key (SubjectPublicKeyInfo).
    pub public_key: PathBuf,
}

/// Only asymmetric algorithms: the gateway must never hold a secret that can mint tokens.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum KeyAlgorithm {
    RS256,
    ES256,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub model: PathBuf,
    pub policy: PathBuf,
    /// Routing and alert rules for concerns, events and notifications. Kept with the policies
    /// and reviewed like them: when unset, `routing.toml` beside `policy`.
    #[serde(default)]
    pub routing: Option<PathBuf>,
}

impl PolicyConfig {
    /// The routing file in force: the configured one, or `routing.toml` beside the policy.
    pub fn routing_path(&self) -> PathBuf {
        self.routing.clone().unwrap_or_else(|| {
            self.policy
                .parent()
                .unwrap_or(Path::new("."))
                .join("routing.toml")
        })
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("policies/model.conf"),
            policy: PathBuf::from("policies/policy.csv"),
            routing: None,
        }
    }
}

/// Emergency access past a denial.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassConfig {
    /// How long a grant lasts, in seconds.
    #[serde(default = "default_break_glass_ttl")]
    pub ttl_secs: u64,
}

fn default_break_glass_ttl() -> u64 {
    3600
}

impl Default for BreakGlassConfig {
    fn default() -> Self {
        Self {
            ttl_secs: default_break_glass_ttl(),
        }
    }
}

/// Signed checkpoints of the audit chain, kept where the database's administrators cannot
/// rewrite them: without them, whoever can write the database can rewrite the chain and its
/// head together and nothing would show it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where checkpoints and the public key are written. Unset: no checkpoints are made, and
    /// `weft audit verify` can only check the chain against itself.
    #[serde(default)]
    pub checkpoint_dir: Option<PathBuf>,
    /// A file holding the Ed25519 signing key (64 hex digits: the 32-byte seed). Never in the
    /// database; on a host the database's administrators cannot read.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// The signing key itself, for deployments that pass secrets in the environment
    /// (`WEFT_AUDIT__SIGNING_KEY`). Takes precedence over `signing_key_file`.
    #[serde(default)]
    pub signing_key: Option<SecretString>,
    /// A checkpoint once this many entries have been appended since the last one…
    #[serde(default = "default_checkpoint_entries")]
    pub checkpoint_every_entries: u64,
    /// …or once this many seconds have passed with new entries, whichever comes first: the
    /// most a forged append can hide among genuine entries before a signature covers it.
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_every_secs: u64,
    /// Agencies whose IG officers are the partnership's IG lead: they read the whole audit log
    /// and review every agency's break-glass. Every other IG officer sees the entries of their
    /// own agency's staff and the reads of their own agency's data, and reviews their own
    /// agency's grants.
    #[serde(default)]
    pub ig_lead_agencies: Vec<String>,
    /// Subject access reports name the person (the identity provider's subject) beside their
    /// role and agency. Off by default: a partnership decides this in its agreement.
    #[serde(default)]
    pub sar_names: bool,
    /// How long an access marked for a police investigation or a section 47 enquiry is kept
    /// out of subject access reports, unless an IG officer releases it sooner.
    #[serde(default = "default_sar_deferral_days")]
    pub sar_deferral_days: u32,
}

fn default_sar_deferral_days() -> u32 {
    180
}

fn default_checkpoint_entries() -> u64 {
    1000
}
fn default_checkpoint_secs() -> u64 {
    60
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_dir: None,
            signing_key_file: None,
            signing_key: None,
            checkpoint_every_entries: default_checkpoint_entries(),
            checkpoint_every_secs: default_checkpoint_secs(),
            ig_lead_agencies: Vec::new(),
            sar_names: false,
            sar_deferral_days: default_sar_deferral_days(),
        }
    }
}

/// The web pages: how long a signed-in session lasts and how people sign in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// A session unused this long ends: a browser left open on a shared desk stops showing
    /// children's records.
    #[serde(default = "default_session_idle")]
    pub session_idle_secs: u64,
    /// A session ends this long after sign-in however busy it is, so a stolen cookie is worth a
    /// working day at most.
    #[serde(default = "default_session_absolute")]
    pub session_absolute_secs: u64,
    /// Development only: a page listing `dev_people` to sign in as, with no password. The
    /// gateway refuses to start with it unless it listens on a loopback address.
    #[serde(default)]
    pub dev_sign_in: bool,
    #[serde(default)]
    pub dev_people: Vec<DevPerson>,
    /// Sign-in through the agency's OpenID Connect provider.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// A listener of its own for browsers, with the server certificate of `tls` and no client
    /// certificate asked for: browsers cannot present one, so with mutual TLS on (`tls.client_ca`)
    /// the pages are reachable only here. It serves the pages, and the API to signed-in people
    /// (their session cookie; bearer tokens are refused there, so agency systems still pass
    /// mutual TLS on `listen`).
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

fn default_session_idle() -> u64 {
    1800
}
fn default_session_absolute() -> u64 {
    8 * 3600
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            session_idle_secs: default_session_idle(),
            session_absolute_secs: default_session_absolute(),
            dev_sign_in: false,
            dev_people: Vec::new(),
            oidc: None,
            listen: None,
        }
    }
}

/// The relationships the data must show before a practitioner sees a child (as NHS Spine asks for
/// a legitimate relationship before a clinical record is opened).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationshipsConfig {
    /// A pupil who left a school this many days ago or fewer still counts as on its roll, so
    /// the school can pass on what it knows after a move.
    #[serde(default = "default_recently_left_days")]
    pub recently_left_days: u32,
    /// Per role, the relationships that count; a role not named keeps its default
    /// (`pipeline::authorise::relate::default_relations`). An empty list means the role reads no
    /// child's data directly.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<
        crate::foundation::domain::Role,
        Vec<crate::foundation::domain::Relation>,
    >,
}

fn default_recently_left_days() -> u32 {
    90
}

impl Default for RelationshipsConfig {
    fn default() -> Self {
        Self {
            recently_left_days: default_recently_left_days(),
            roles: Default::default(),
        }
    }
}

/// One person the development sign-in page offers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevPerson {
    /// The user id, as a token's `sub` would carry it.
    pub user: String,
    /// What the page calls them.
    pub name: String,
    pub agency: String,
    pub role: String,
    /// What this person can do in the demo, shown under their name.
    #[serde(default)]
    pub description: Option<String>,
}

/// The agency's OpenID Connect provider: authorization code with PKCE, keys from its JWKS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer; the discovery document is `issuer/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// This gateway's `/auth/callback` as browsers reach it.
    pub redirect_url: String,
    /// A PEM bundle trusted for the provider beside the public roots (a provider on a private CA).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The ID-token claim naming the agency.
    #[serde(default = "default_agency_claim")]
    pub agency_claim: String,
    /// The ID-token claim naming the role.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// The scopes asked for; they must bring the agency and role claims into the ID token.
    #[serde(default = "default_scope")]
    pub scope: String,
}

fn default_scope() -> String {
    "openid profile".into()
}

fn default_agency_claim() -> String {
    "agency".into()
}
fn default_role_claim() -> String {
    "role".into()
}

/// How the outbox delivers concerns, alerts and notifications. Every node runs a worker; several
/// nodes on one PostgreSQL share the work without delivering a row twice in normal operation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// How often an idle worker looks for due deliveries. New work wakes the worker of the node
    /// that enqueued it at once; the poll picks up retries and other nodes' work.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Delivery workers on this node; each claims its own batches.
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// Deliveries claimed at once by one worker.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// How long a claim holds: a worker that dies mid-delivery delays its rows by this much.
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
    /// Attempts before a delivery is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubled each attempt up to `backoff_max_ms`.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    /// How long a receiver may take to answer a webhook.
    #[serde(default = "default_webhook_timeout")]
    pub webhook_timeout_ms: u64,
    /// Receivers reached by signed webhook instead of an inbox: deliveries to `role` at
    /// `agency` (or to anyone at `agency` when no role is given) go to `url`.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

fn default_poll_ms() -> u64 {
    500
}
fn default_workers() -> u32 {
    4
}
fn default_batch() -> u32 {
    32
}
fn default_lease() -> u64 {
    30
}
fn default_max_attempts() -> u32 {
    12
}
fn default_backoff_initial() -> u64 {
    1_000
}
fn default_backoff_max() -> u64 {
    600_000
}
fn default_webhook_timeout() -> u64 {
    10_000
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            poll_ms: default_poll_ms(),
            workers: default_workers(),
            batch: default_batch(),
            lease_secs: default_lease(),
            max_attempts: default_max_attempts(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_ms: default_backoff_max(),
            webhook_timeout_ms: default_webhook_timeout(),
            webhooks: Vec::new(),
        }
    }
}

/// A receiver's webhook endpoint and the secret its deliveries are signed with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Stable id; subscriptions name it.
    pub id: String,
    /// The agency whose receiver this is (an `agencies[].id`).
    pub agency: String,
    /// The role whose deliveries it takes; all of the agency's when unset.
    #[serde(default)]
    pub role: Option<crate::foundation::domain::Role>,
    /// `https://…`, or `http://` to a loopback address.
    pub url: String,
    /// HMAC-SHA256 key shared with the receiver. Never printed.
    pub secret: SecretString,
}

/// How the master child index keeps up with the sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Seconds between re-reads of listable sources; 0 reads them only at start-up.
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
}

fn default_refresh() -> u64 {
    300
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            refresh_secs: default_refresh(),
        }
    }
}

/// How the master child index decides that two records are the same child when no verified
/// identifier links them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingConfig {
    /// Match probability at or above which a record links to a child automatically.
    #[serde(default = "default_upper")]
    pub upper: f64,
    /// Match probability at or above which (and below `upper`) a person reviews the match; the
    /// record starts a child of its own until then. Below it, the record is a new child.
    #[serde(default = "default_lower")]
    pub lower: f64,
    /// A model file written by `weft match train`; without one, the built-in model is used.
    #[serde(default)]
    pub model: Option<PathBuf>,
}

fn default_upper() -> f64 {
    0.95
}
fn default_lower() -> f64 {
    0.5
}

impl Default for MatchingConfig {
    fn default() -> Self {
        Self {
            upper: default_upper(),
            lower: default_lower(),
            model: None,
        }
    }
}

/// Bounds that protect the gateway and its partners from a caller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_body_bytes")]
    pub body_bytes: usize,
    /// Whole-request timeout; source deadlines should sit well inside it.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Requests in flight before new ones are shed with 503, rather than queued without bound.
    #[serde(default = "default_concurrency")]
    pub max_in_flight: usize,
    /// How long a client may take to send a request's headers over HTTP/1, counted from when
    /// the connection is ready for them (also between keep-alive requests).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_ms: u64,
    /// How long a request's body may take to arrive after its headers; then 408, and the
    /// connection is closed.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_ms: u64,
    /// How long a connection may stay open with no request in flight, whatever the protocol.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Open connections at most. At the cap, the connection idle longest is closed to make room,
    /// so idle or half-open connections cannot lock everyone out; keep it well under the
    /// process's open-file limit.
    #[serde(default = "default_max_connections_open")]
    pub max_connections: usize,
}

fn default_body_bytes() -> usize {
    64 * 1024
}
fn default_request_timeout() -> u64 {
    10_000
}
fn default_concurrency() -> usize {
    1024
}
fn default_header_timeout() -> u64 {
    10_000
}
fn default_body_timeout() -> u64 {
    10_000
}
fn default_idle_timeout() -> u64 {
    30_000
}
fn default_max_connections_open() -> usize {
    512
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: default_body_bytes(),
            request_timeout_ms: default_request_timeout(),
            max_in_flight: default_concurrency(),
            header_timeout_ms: default_header_timeout(),
            body_timeout_ms: default_body_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            max_connections: default_max_connections_open(),
        }
    }
}

/// An organisation whose practitioners or systems use Weft, or whose systems Weft reads.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgencyConfig {
    /// Stable id, used in tokens (`agency` claim) and policy overrides.
    pub id: String,
    pub name: String,
    pub kind: AgencyKind,
    /// The local authority the agency belongs to (a school's LA, the LA's own services): an
    /// education welfare officer sees children on the rolls of the schools of their own LA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_authority: Option<String>,
}

#[derive(
    Debug,
    Clone,
    Copy,
    Deserialize,
    Serialize,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AgencyKind {
    Education,
    SocialCare,
    Health,
    Police,
}

impl AgencyKind {
    pub const ALL: [AgencyKind; 4] = [
        AgencyKind::Education,
        AgencyKind::SocialCare,
        AgencyKind::Health,
        AgencyKind::Police,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgencyKind::Education => "education",
            AgencyKind::SocialCare => "social_care",
            AgencyKind::Health => "health",
            AgencyKind::Police => "police",
        }
    }
}

/// A system Weft reads, through the adapter its `adapter.kind` names.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Stable id; links in the master child index are scoped by it.
    pub id: String,
    /// The agency that owns the source (an `agencies[].id`).
    pub agency: String,
    /// How long a view waits for this source before showing it `unavailable`.
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    /// Retries and the circuit breaker; the defaults suit a source on a local network.
    #[serde(default)]
    pub resilience: Resilience,
    /// Whether this source can mark a child restricted (NHS `R`/`V`, a refuge, a protected
    /// address). A view asks such a source whenever the viewer is one a restriction would hold
    /// fields back from — even a viewer who may not know of it, since a restriction from any
    /// source restricts the child everywhere — while every other source whose kind the viewer
    /// may not know of is not asked at all. Unset: true for FHIR sources (where NHS `R`/`V`
    /// lives), false for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restrictions: Option<bool>,
    pub adapter: AdapterConfig,
}

fn default_deadline() -> u64 {
    1_500
}

/// How the gateway copes with a source that fails, so that a broken source costs a view
/// nothing: a read that fails transiently is retried within the deadline; after repeated
/// failures the breaker opens and the source is not asked at all until a cool-down has passed,
/// when one probe is let through.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Resilience {
    /// Attempts per read, the first included; 1 turns retries off. Only transient failures
    /// (connection failed, HTTP 408/429/5xx) are retried, and never past the deadline.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one, with jitter so that many
    /// views do not retry in step.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    /// Consecutive failed reads (after their retries) that open the breaker; 0 never opens it.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker stays open before a probe is let through.
    #[serde(default = "default_cool_down")]
    pub breaker_cool_down_ms: u64,
}

fn default_attempts() -> u32 {
    2
}
fn default_backoff() -> u64 {
    50
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_cool_down() -> u64 {
    30_000
}

impl Default for Resilience {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            backoff_ms: default_backoff(),
            breaker_failures: default_breaker_failures(),
            breaker_cool_down_ms: default_cool_down(),
        }
    }
}

/// A configuration problem, naming the key so an administrator can find it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Read(String),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Top-level keys that `WEFT_…` variables may override. Other `WEFT_` variables (`WEFT_LOG`,
/// `WEFT_CONFIG`, the test suite's) belong to the process, not to the configuration.
const OVERRIDABLE: &[&str] = &[
    "listen",
    "insecure_plaintext",
    "tls",
    "database",
    "auth",
    "policy",
    "index",
    "break_glass",
    "audit",
    "relationships",
    "matching",
    "limits",
    "delivery",
    "web",
];

/// A part of the configuration that a command may or may not use. Each command checks the parts
/// it uses; files named only by the others need not exist, so `weft policy lint` runs in CI
/// where the server's certificates and keys are not. The schema, agencies and sources are
/// always checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `listen`, `tls` and its files, `insecure_plaintext`: serving.
    Listen,
    /// `auth.keys[].public_key`: verifying tokens.
    Auth,
    /// `policy.model` and `policy.policy`.
    Policy,
    /// `policy.routing`.
    Routing,
    /// `matching`: its thresholds and model file.
    Matching,
}

impl Part {
    /// What serving uses: everything.
    pub const ALL: &'static [Part] = &[
        Part::Listen,
        Part::Auth,
        Part::Policy,
        Part::Routing,
        Part::Matching,
    ];
}

impl Config {
    /// Reads the file, applies `WEFT_…` overrides, validates against the schema, then checks
    /// what a schema cannot (references between sections, files that must exist), all of it.
    pub fn load(path: &Path, schemas: &Schemas) -> Result<Config, ConfigError> {
        Self::load_for(path, schemas, Part::ALL)
    }

    /// As [`Config::load`], checking beyond the schema, agencies and sources only the `parts` a
    /// command uses.
    pub fn load_for(path: &Path, schemas: &Schemas, parts: &[Part]) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Read(format!(
                "{} does not exist",
                path.display()
            )));
        }
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(
            Env::prefixed("WEFT_")
                .split("__")
                .filter(|key| OVERRIDABLE.contains(&key.as_str().split('.').next().unwrap_or(""))),
        );
        Self::from_figment(
            figment,
            path.parent().unwrap_or(Path::new(".")),
            schemas,
            parts,
        )
    }

    /// Parses configuration text, as the demo and tests build it.
    pub fn from_toml(text: &str, base: &Path, schemas: &Schemas) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)), base, schemas, Part::ALL)
    }

    fn from_figment(
        figment: Figment,
        base: &Path,
        schemas: &Schemas,
        parts: &[Part],
    ) -> Result<Config, ConfigError> {
        let value: serde_json::Value = figment
            .extract()
            .map_err(|e| ConfigError::Read(e.to_string()))?;
        if let Some(err) = schemas.config_errors(&value).into_iter().next() {
            return Err(ConfigError::invalid(err.key(), err.message));
        }
        let mut config: Config = serde_json::from_value(value)
            .map_err(|e| ConfigError::invalid("(root)", e.to_string()))?;
        config.resolve_paths(base);
        config.check(parts)?;
        Ok(config)
    }

    /// Relative paths in the file are relative to the file, not to wherever the process started.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            if let Some(ca) = &mut tls.client_ca {
                fix(ca);
            }
        }
        for k in &mut self.auth.keys {
            fix(&mut k.public_key);
        }
        if let Some(w) = &mut self.reports.ward_lookup {
            fix(w);
        }
        for s in &mut self.sources {
            match &mut s.adapter {
                AdapterConfig::File(f) => weft_adapters::file::resolve_folder(f, base),
                AdapterConfig::HttpJson(h) => {
                    if let Some(tls) = &mut h.tls {
                        tls.resolve(base);
                    }
                }
                AdapterConfig::Fhir(f) => {
                    if let Some(tls) = &mut f.tls {
                        tls.resolve(base);
                    }
                }
                AdapterConfig::Sql(_) => {}
            }
        }
        fix(&mut self.policy.model);
        fix(&mut self.policy.policy);
        if let Some(r) = &mut self.policy.routing {
            fix(r);
        }
        if let Some(m) = &mut self.matching.model {
            fix(m);
        }
        if let Some(d) = &mut self.audit.checkpoint_dir {
            fix(d);
        }
        if let Some(k) = &mut self.audit.signing_key_file {
            fix(k);
        }
        if let Some(ca) = self.web.oidc.as_mut().and_then(|o| o.ca.as_mut()) {
            fix(ca);
        }
    }

    fn check(&self, parts: &[Part]) -> Result<(), ConfigError> {
        if parts.contains(&Part::Listen) {
            self.check_listen()?;
        }
        if parts.contains(&Part::Auth) {
            for (i, k) in self.auth.keys.iter().enumerate() {
                must_exist(&format!("auth.keys[{i}].public_key"), &k.public_key)?;
            }
        }
        if parts.contains(&Part::Policy) {
            must_exist("policy.model", &self.policy.model)?;
            must_exist("policy.policy", &self.policy.policy)?;
        }
        if parts.contains(&Part::Routing) {
            must_exist("policy.routing", &self.policy.routing_path())?;
        }
        if parts.contains(&Part::Matching) {
            if self.matching.lower > self.matching.upper {
                return Err(ConfigError::invalid(
                    "matching.lower",
                    "must not be above matching.upper",
                ));
            }
            if let Some(m) = &self.matching.model {
                must_exist("matching.model", m)?;
            }
        }

        let mut agencies = BTreeSet::new();
        for (i, a) in self.agencies.iter().enumerate() {
            if !agencies.insert(a.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("agencies[{i}].id"),
                    format!("duplicate agency id {:?}", a.id),
                ));
            }
        }
        for (i, lead) in self.audit.ig_lead_agencies.iter().enumerate() {
            if !agencies.contains(lead.as_str()) {
                return Err(ConfigError::invalid(
                    format!("audit.ig_lead_agencies[{i}]"),
                    format!("no agency {lead:?} in agencies"),
                ));
            }
        }
        for (i, p) in self.web.dev_people.iter().enumerate() {
            if !agencies.contains(p.agency.as_str()) {
                return Err(ConfigError::invalid(
                    format!("web.dev_people[{i}].agency"),
                    format!("no agency with id {:?} in [[agencies]]", p.agency),
                ));
            }
            if let Err(e) = p.role.parse::<crate::foundation::domain::Role>() {
                return Err(ConfigError::invalid(
                    format!("web.dev_people[{i}].role"),
                    e.to_string(),
                ));
            }
        }
        let mut hooks = BTreeSet::new();
        for (i, w) in self.delivery.webhooks.iter().enumerate() {
            if !hooks.insert(w.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("delivery.webhooks[{i}].id"),
                    format!("duplicate webhook id {:?}", w.id),
                ));
            }
            if !agencies.contains(w.agency.as_str()) {
                return Err(ConfigError::invalid(
                    format!("delivery.webhooks[{i}].agency"),
                    format!("no agency with id {:?} in [[agencies]]", w.agency),
                ));
            }
            check_webhook_url(&w.url)
                .map_err(|p| ConfigError::invalid(format!("delivery.webhooks[{i}].url"), p))?;
        }
        let mut sources = BTreeSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            if !sources.insert(s.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("sources[{i}].id"),
                    format!("duplicate source id {:?}", s.id),
                ));
            }
            if !agencies.contains(s.agency.as_str()) {
                return Err(ConfigError::invalid(
                    format!("sources[{i}].agency"),
                    format!("no agency with id {:?} in [[agencies]]", s.agency),
                ));
            }
        }
        Ok(())
    }

    fn check_listen(&self) -> Result<(), ConfigError> {
        match (&self.tls, self.insecure_plaintext) {
            (None, false) => {
                return Err(ConfigError::invalid(
                    "tls",
                    "required (or set insecure_plaintext = true on a loopback address)",
                ))
            }
            (None, true) if !self.listen.ip().is_loopback() => {
                return Err(ConfigError::invalid(
                    "insecure_plaintext",
                    "plain HTTP is allowed only on a loopback listen address",
                ))
            }
            (Some(_), true) => {
                return Err(ConfigError::invalid(
                    "insecure_plaintext",
                    "cannot be set together with tls",
                ))
            }
            _ => {}
        }
        if self.web.dev_sign_in && !self.listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "web.dev_sign_in",
                "signing in without a password is allowed only on a loopback listen address",
            ));
        }
        if let Some(web) = self.web.listen {
            if self.tls.is_none() {
                return Err(ConfigError::invalid(
                    "web.listen",
                    "the browsers' listener needs tls (its certificate and key)",
                ));
            }
            if self.web.dev_sign_in && !web.ip().is_loopback() {
                return Err(ConfigError::invalid(
                    "web.dev_sign_in",
                    "signing in without a password is allowed only on a loopback web.listen address",
                ));
            }
        }
        if let Some(ca) = self.web.oidc.as_ref().and_then(|o| o.ca.as_ref()) {
            must_exist("web.oidc.ca", ca)?;
        }
        if let Some(tls) = &self.tls {
            must_exist("tls.cert", &tls.cert)?;
            must_exist("tls.key", &tls.key)?;
            if let Some(ca) = &tls.client_ca {
                must_exist("tls.client_ca", ca)?;
            }
        }
        Ok(())
    }

    pub fn agency(&self, id: &str) -> Option<&AgencyConfig> {
        self.agencies.iter().find(|a| a.id == id)
    }
}

/// Webhooks carry children's data: TLS everywhere, except to a receiver on the same host.
fn check_webhook_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err("plain http is allowed only to a loopback address; use https".into())
            }
        }
        other => Err(format!("scheme {other} is not http(s)")),
    }
}

fn must_exist(key: &str, path: &Path) -> Result<(), ConfigError> {
    if path.exists() {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("file {} does not exist", path.display()),
        ))
    }
}
