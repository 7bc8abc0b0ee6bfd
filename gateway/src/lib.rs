//! Weft: an inter-agency information-sharing gateway for children's services.
//!
//! A read follows the pipeline in DESIGN.md; each stage is one module, in the order a request
//! passes through them:
//!
//! - [`authenticate`]: mutual TLS names the calling system, a signed token the practitioner.
//! - [`domain`]: the purpose of use (required) and the role, parsed at the edge.
//! - [`resolve`]: the master child index — child id to source records, identifier to child.
//! - [`fanout`]: every linked source, concurrently, each within its own deadline, through its
//!   [`resilience`] (retries for transient failures, a circuit breaker).
//! - [`authorise`]: casbin policy per data category, for role × agency × purpose; the
//!   [`consent`] register where policy asks for consent; [`breakglass`] grants.
//! - [`merge`]: one view, every value with its provenance, disagreements side by side.
//! - [`audit`]: a hash-chained entry, durable before the response leaves.
//!
//! Writes take their own short paths: [`concerns`] (validated, matched, routed by [`routing`]),
//! [`events`] (pushed by partner systems, turned into alerts), both delivered through the
//! durable [`outbox`] to signed webhooks or to inboxes ([`mailbox`]).
//!
//! Around them: [`config`] (layered, schema-checked), [`schema`] (JSON Schemas of inputs),
//! [`identity`] (NHS number and UPN types), [`policyapi`] (explain, check, lint, reload),
//! [`imports`] (`file` sources' import store), [`sourcesapi`] (each source's health for
//! administrators), [`store`] (SQLite or PostgreSQL), [`api`] (HTTP
//! routes and OpenAPI), [`error`] (the one HTTP error type), [`server`] (rustls, graceful
//! shutdown), [`app`] (building and running it all), [`metrics`], and the command line in
//! [`cli`]. [`sim`] holds the simulated partner systems that the demo, the benchmark and the
//! end-to-end tests run against; [`devpki`] their throwaway certificates and token keys. The
//! `weft bench` commands: [`bench`] (views, policy), [`bench_import`], [`bench_concerns`] and
//! [`bench_search`] (the master child index's search at a million children).

pub mod api;
pub mod app;
pub mod audit;
pub mod authenticate;
pub mod authorise;
#[cfg(feature = "sim")]
pub mod bench;
#[cfg(feature = "sim")]
pub mod bench_concerns;
#[cfg(feature = "sim")]
pub mod bench_import;
#[cfg(feature = "sim")]
pub mod bench_search;
pub mod breakglass;
pub mod cli;
pub mod concerns;
pub mod config;
pub mod consent;
#[cfg(feature = "sim")]
pub mod demo;
pub mod devconfig;
pub mod devpki;
pub mod domain;
pub mod error;
pub mod events;
pub mod fanout;

#[cfg(feature = "sim")]
pub mod bench_match;
pub mod imports;
pub mod linkage;
pub mod mailbox;
pub mod match_job;
pub mod matches;
pub mod merge;
pub mod metrics;
pub mod outbox;
pub mod policyapi;
pub mod resilience;
pub mod resolve;
pub mod routing;
pub mod schema;
pub mod server;
pub mod sourcesapi;
pub mod store;
