//! What a practitioner or an officer can look at, one function each, called by every
//! interface: each checks who may, runs what it must (for a child's view, the whole
//! [`crate::pipeline`]), writes its audit entry before returning anything, and fails closed.
//!
//! - [`view`]: a child's merged view for a purpose — the read path.
//! - [`search`]: finding a child.
//! - [`audit`]: the audit log, for IG officers.
//! - [`policy`]: the decision policy would make, explained.
//! - [`sources`]: each source's health, for data administrators.
//! - [`index_export`]: the master child index as CSV, for data teams and audits (`weft index
//!   export`).

pub mod audit;
pub mod index_export;
pub mod policy;
pub mod search;
pub mod sources;
pub mod view;
