//! Weft: an inter-agency information-sharing gateway for children's services.
//!
//! The layers, from the bottom up; each imports only from the layers above it in this list
//! (see ARCHITECTURE.md for what each may and may not depend on):
//!
//! - [`foundation`]: configuration, the store (SQLite or PostgreSQL), the vocabulary of the
//!   domain, JSON Schemas of inputs, metrics, the hash-chained audit log and the TLS server.
//! - [`sources`]: the configured sources, each with its adapter, retries, circuit breaker and
//!   health; every call to a partner system goes through one.
//! - [`pipeline`]: the read pipeline's stages, in the order a request passes through them —
//!   authenticate, resolve (the master child index), fan out, authorise, merge.
//! - [`delivery`]: who concerns and alerts go to, and the durable outbox that delivers them.
//! - [`gateway`]: all of the above built once from the configuration, and the audit entry
//!   every read and write ends with.
//! - [`read`] and [`write`](mod@write): one function per thing a practitioner can do, which any
//!   interface calls; policy, audit and failing closed live there, never in an interface.
//! - [`web`]: the web pages practitioners use — as thin as the JSON API, over the same functions.
//! - [`http`]: the JSON API — thin handlers that parse, call and render; its router also serves
//!   the pages, behind the same middleware.
//! - [`app`]: the gateway built from its configuration, and its lifecycle.
//! - [`cli`]: the `weft` command line, with the demo and the benchmarks; [`dev`]: the
//!   throwaway credentials and configuration they run with.
//!
//! Identifiers live in the `weft-ids` crate, matching in `weft-matching`, adapters in
//! `weft-adapters` and the simulated partner systems in `weft-sim`.

pub mod app;
pub mod cli;
pub mod delivery;
pub mod dev;
pub mod foundation;
pub mod gateway;
pub mod http;
pub mod pipeline;
pub mod read;
pub mod sources;
pub mod web;
pub mod write;
