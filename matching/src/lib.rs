//! Identity matching: is this the same child? The modules, in the order a record passes
//! through them:
//!
//! - [`record`]: the fields a record can have, read and normalised once.
//! - [`normalise`]: names (accents, hyphens, nicknames), dates of birth, sex codes, postcodes,
//!   addresses.
//! - [`block`]: blocking rules that choose which pairs are worth comparing.
//! - [`compare`]: one comparator per field, each answering with a graded agreement level.
//! - [`guard`]: rules the weights cannot outvote (twins, conflicting identifiers).
//! - [`model`]: Fellegi–Sunter `m` and `u` per level, trained without labels; scoring and
//!   explanations; the model file.
//! - [`link`]: linking two files and deduplicating one, clustering, and evaluation.
//! - [`search`]: an in-memory index that answers "who is this?" for one record.
//! - [`input`]: CSV files with a column mapping, for the `weft match` commands.
//!
//! The crate knows nothing of the gateway or its adapters: the gateway turns a source's record
//! into a [`Record`] and its master child index uses [`model`] and [`compare`] to score the
//! candidates it finds in its store; `weft match` and `weft bench match` drive [`link`].

pub mod block;
pub mod compare;
pub mod guard;
pub mod input;
pub mod link;
pub mod model;
pub mod normalise;
pub mod record;
pub mod search;

pub use compare::Comparison;
pub use guard::Guard;
pub use model::{Explained, Model, Score, Scorer, TermFrequencies};
pub use record::{Extra, Field, Record};
