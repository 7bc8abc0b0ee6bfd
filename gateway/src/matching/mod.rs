//! Identity matching: is this the same child? The modules, in the order a record passes
//! through them:
//!
//! - [`record`]: the fields a record can have, read and normalised once.
//! - [`normalise`]: names (accents, hyphens, nicknames), dates of birth, sex codes, postcodes,
//!   addresses.
//! - [`block`]: blocking rules that choose which pairs are worth comparing.
//! - [`compare`]: one comparator per field, each answering with a graded agreement level.
//! - [`model`]: Fellegi–Sunter `m` and `u` per level, trained without labels; scoring and
//!   explanations; the model file.
//! - [`link`]: linking two files and deduplicating one, clustering, and evaluation.
//! - [`search`]: an in-memory index that answers "who is this?" for one record.
//! - [`input`]: CSV files with a column mapping, for the `weft match` commands.
//! - [`job`]: the `weft match link | dedupe | train` commands; [`bench`]: `weft bench match`.
//!
//! The master child index ([`crate::resolve`]) uses [`model`] and [`compare`] to score the
//! candidates it finds in the store.

pub mod bench;
pub mod block;
pub mod compare;
pub mod input;
pub mod job;
pub mod link;
pub mod model;
pub mod normalise;
pub mod record;
pub mod search;

pub use compare::Comparison;
pub use model::{Explained, Model, Score, Scorer, TermFrequencies};
pub use record::{Field, Record};
