//! The read pipeline's stages, in the order a request passes through them (DESIGN.md):
//!
//! 1. [`authenticate`]: mutual TLS names the calling system, a signed token the practitioner
//!    ([`oidc`]: keys and sign-in from the agency's OpenID Connect provider).
//! 2. [`resolve`]: the master child index — child id to source records, identifier or
//!    demographics to child.
//! 3. [`fanout`]: every linked source, concurrently, each within its own deadline, through its
//!    retries and circuit breaker.
//! 4. [`authorise`]: casbin policy per data category, for role × agency × purpose; the consent
//!    register where policy asks for consent; break-glass grants.
//! 5. [`merge`]: one view, every value with its provenance, disagreements side by side.
//!
//! The audit entry that ends every read is written by the function that runs these stages
//! ([`crate::read`]), through [`crate::foundation::audit`].

pub mod authenticate;
pub mod authorise;
pub mod fanout;
pub mod merge;
pub mod oidc;
pub mod resolve;
