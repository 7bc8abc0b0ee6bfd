//! Development environments — the demo, the benchmarks, the end-to-end tests: throwaway
//! credentials ([`pki`]) and the configuration that uses them ([`config`]). Nothing here is
//! used by `weft serve`.

pub mod config;
pub mod pki;
