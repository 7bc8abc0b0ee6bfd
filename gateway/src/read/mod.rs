//! What a practitioner can look at, one function each, called by every interface.

pub mod policy;
