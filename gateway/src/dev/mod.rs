//! Development environments — the demo, the benchmarks, the end-to-end tests: throwaway
//! credentials ([`pki`]), the configuration that uses them ([`config`]) and the people who
//! sign in to it (`people`, with the simulator). Nothing here is used by `weft serve`.

pub mod config;
#[cfg(feature = "sim")]
pub mod people;
pub mod pki;
