//! What a practitioner, an officer or a partner system can change, one function each, called
//! by every interface: each checks who may, validates its input against its JSON Schema, and
//! commits the change together with its audit entry — or, if the entry cannot be written,
//! changes nothing.
//!
//! - [`concerns`]: a concern raised, read, moved on, added to; [`child`]: the child a payload
//!   names.
//! - [`events`]: what partner systems push, the alerts they raise; subscriptions.
//! - [`area_alerts`]: a school or area whose persistent absence rises past a threshold.
//! - [`inbox`]: a person's inbox; the outbox for data administrators.
//! - [`consent`]: the consent register.
//! - [`breakglass`]: emergency access, and its review.
//! - [`matches`]: the identity review queue and decisions, link history.
//! - [`imports`]: `file` sources' drops, imported into the index.
//! - [`sar`]: releasing an access deferred from subject access reports.
//! - [`sessions`]: signing in and out of the web pages; a signed-in browser's session.

pub mod area_alerts;
pub mod breakglass;
pub mod child;
pub mod concerns;
pub mod consent;
pub mod events;
pub mod imports;
pub mod inbox;
pub mod matches;
pub mod sar;
pub mod sessions;
