//! End-to-end tests: the real `weft` binary over real HTTPS, against real partner systems on
//! loopback and a real database for its store (SQLite, or PostgreSQL with
//! `WEFT_TEST_STORE=postgres`).

mod harness;

mod area;
mod audit;
mod auth;
mod browser;
mod config;
mod connections;
mod contract;
mod governance;
mod imports;
mod index_export;
mod matching;
mod notify;
mod oidc;
mod policy;
mod quality;
mod readiness;
mod sar;
mod scale;
mod sources;
mod view;
mod web;
mod web_admin;
mod web_ig;
