//! What everything else stands on, and which itself uses nothing above it.

pub mod audit;
pub mod config;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod schema;
pub mod server;
pub mod store;
