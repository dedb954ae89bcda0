//! The parts of tempvault that decide things from bytes alone, with no storage behind them:
//! the signed request protocol ([`protocol`]), the names, ids and lifetimes of the domain
//! ([`domain`]) and the guardrail rules ([`guardrails`]).
//!
//! They live in a crate of their own so that they can be fuzzed and benchmarked without
//! building RocksDB; the `tempvault` crate re-exports all three.

pub mod domain;
pub mod guardrails;
pub mod protocol;
