//! What a practitioner or an officer can look at, one function each, called by every
//! interface: each checks who may, runs what it must (for a child's view, the whole
//! [`crate::pipeline`]), writes its audit entry before returning anything, and fails closed.
//!
//! - [`view`]: a child's merged view for a purpose — the read path.
//! - [`search`]: finding a child.
//! - [`audit`]: the audit log, for IG officers.
//! - [`policy`]: the decision policy would make, explained.
//! - [`sar`]: subject access — every access to a child, in plain words, for IG officers.
//! - [`sources`]: each source's health and the gateway's status, for data administrators;
//!   readiness, for anyone.
//! - [`area`]: area trends — attendance, persistent absence, exclusions and how many of those
//!   children are known to social care, by school, area and term, under disclosure control.
//! - [`quality`]: data quality for cleaning at source — each source's records that disagree
//!   with other systems, fail an identifier check, wait for review or are likely duplicates.
//! - [`index_export`]: the master child index as CSV, for data teams and audits (`weft index
//!   export`).

pub mod area;
pub mod audit;
pub mod index_export;
pub mod policy;
pub mod quality;
pub mod sar;
pub mod search;
pub mod sources;
pub mod view;

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;

/// A request an interface could not even read (its query parameters, say), from an
/// authenticated caller: audited under `action` (the method and route template), then refused.
pub async fn refused(gw: &Gateway, who: &Principal, action: &str, error: Error) -> Error {
    gw.refuse(who, action, None, None, error).await
}
