//! What a practitioner or a partner system can change, one function each, called by every
//! interface: each change commits with its audit entry, or not at all.

pub mod breakglass;
pub mod concerns;
pub mod consent;
pub mod events;
pub mod imports;
pub mod matches;
