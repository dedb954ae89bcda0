//! tempvault: a self-hosted secret-read engine for temporary machines.
//!
//! Machines hold Ed25519 keys and read secrets with signed requests ([`protocol`]); each
//! read passes the machine's lifecycle, a nonce check ([`nonce`]), guardrails
//! ([`guardrails`]) and grants, and is recorded in a hash-chained audit log ([`audit`]).
//! Each machine is an actor ([`machines`]) owning its state; everything durable lives in
//! RocksDB ([`storage`]).

pub use tempvault_core::{domain, guardrails, protocol};

pub mod audit;
pub mod bootstrap;
pub mod cli;
pub mod client;
pub mod config;
pub mod engine;
pub mod http;
pub mod machines;
pub mod metrics;
pub mod nonce;
pub mod read_cache;
pub mod read_path;
pub mod server;
pub mod storage;
pub mod tokens;
pub mod vaults;
