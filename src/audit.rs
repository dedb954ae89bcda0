//! The audit trail: an append-only, hash-chained record of every machine request and every
//! admin change.
//!
//! Request workers hand events to the [`AuditLog`]; one writer thread collects whatever has
//! queued up, gives each event its sequence number and chain hash, and writes the whole
//! batch to RocksDB in one write (group commit), synced to the write-ahead log whenever
//! anyone waits on an event in it or it carries an admin change. A caller that needs
//! durability waits for its event's acknowledgement, which comes only after the sync.
//! Events never hold a secret value.

mod event;
mod query;
mod writer;

pub use event::{chain_hash, AuditEvent, NewEvent, Outcome, GENESIS_HASH};
pub use query::{verify_chain, AuditQuery, ChainReport, ChainVerdict, Filter, Page, MAX_LIMIT};
pub use writer::{AuditLog, AuditUnavailable, ChangeEvent, Durability};
