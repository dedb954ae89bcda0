use serde::Serialize;

use chrono::{DateTime, Utc};

use super::event::{chain_hash, AuditEvent, Outcome, GENESIS_HASH};
use crate::domain::{MachineId, VaultName};
use crate::storage::{self, Cf, Store, StoreError};

/// Largest page a query returns.
pub const MAX_LIMIT: usize = 1000;

/// A cursor-paged request: events with a sequence number above `after`, oldest first,
/// that pass the filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub after: u64,
    pub limit: usize,
    pub filter: Filter,
}

/// Which events a query returns; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    /// Events at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Events before this instant.
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    fn matches(&self, e: &AuditEvent) -> bool {
        self.action.as_ref().is_none_or(|a| *a == e.action)
            && self.outcome.is_none_or(|o| o == e.outcome)
            && self.since.is_none_or(|t| e.time >= t)
            && self.until.is_none_or(|t| e.time < t)
    }
}

/// One page of events and the cursor for the next.
///
/// Sequence numbers only grow, so a cursor stays valid while events are appended: the next
/// page starts exactly after the last event returned, with no gap and no repeat.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub events: Vec<AuditEvent>,
    /// Pass as `after` to get the next page; absent when this page is not full.
    pub next_after: Option<u64>,
}

impl AuditQuery {
    /// A vault's events.
    pub fn vault(&self, store: &Store, vault: &VaultName) -> Result<Page, StoreError> {
        self.run(store, Cf::AuditByVault, &storage::prefix(&[vault.as_str()]))
    }

    /// One machine's events.
    pub fn machine(&self, store: &Store, machine: MachineId) -> Result<Page, StoreError> {
        self.run(store, Cf::AuditByMachine, machine.as_bytes())
    }

    fn run(&self, store: &Store, index: Cf, prefix: &[u8]) -> Result<Page, StoreError> {
        let limit = self.limit.clamp(1, MAX_LIMIT);
        let mut start = prefix.to_vec();
        start.extend_from_slice(&self.after.saturating_add(1).to_be_bytes());
        let mut events = Vec::with_capacity(limit.min(64));
        store.for_each_from(index, &start, |key, _| {
            if !key.starts_with(prefix) || events.len() >= limit {
                return Ok(false);
            }
            let seq = &key[prefix.len()..];
            if let Some(e) = store.get_uncached::<AuditEvent>(Cf::Audit, seq)? {
                if self.filter.matches(&e) {
                    events.push(e);
                }
            }
            Ok(true)
        })?;
        let next_after = (events.len() == limit)
            .then(|| events.last().map(|e| e.seq))
            .flatten();
        Ok(Page { events, next_after })
    }
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ChainVerdict {
    /// Every event is in place and chained.
    Intact,
    /// An event's content no longer matches its hash.
    Edited { seq: u64 },
    /// The sequence jumps: events are missing before this one.
    Missing { expected: u64, found: u64 },
    /// An event does not follow the one stored before it (moved or swapped).
    Reordered { seq: u64 },
    /// A record does not even decode.
    Unreadable { key: String },
}

/// The result of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    #[serde(flatten)]
    pub verdict: ChainVerdict,
    /// Events checked before the verdict.
    pub length: u64,
    /// Hash of the last good event.
    pub head: String,
}

/// Walks every stored event in order and checks numbering, content and chaining.
pub fn verify_chain(store: &Store) -> Result<ChainReport, StoreError> {
    let mut expected = 1u64;
    let mut prev = GENESIS_HASH.to_owned();
    let mut verdict = ChainVerdict::Intact;
    store.for_each_from(Cf::Audit, &[], |key, value| {
        let Ok(event) = serde_json::from_slice::<AuditEvent>(value) else {
            verdict = ChainVerdict::Unreadable {
                key: hex::encode(key),
            };
            return Ok(false);
        };
        let key_seq = <[u8; 8]>::try_from(key).map(u64::from_be_bytes).ok();
        if chain_hash(&event) != event.hash {
            verdict = ChainVerdict::Edited {
                seq: key_seq.unwrap_or(event.seq),
            };
            return Ok(false);
        }
        if key_seq != Some(event.seq) {
            // An intact event stored under another event's number: moved or swapped.
            verdict = ChainVerdict::Reordered {
                seq: key_seq.unwrap_or(event.seq),
            };
            return Ok(false);
        }
        if event.seq != expected {
            verdict = ChainVerdict::Missing {
                expected,
                found: event.seq,
            };
            return Ok(false);
        }
        if event.prev_hash != prev {
            verdict = ChainVerdict::Reordered { seq: event.seq };
            return Ok(false);
        }
        prev = event.hash;
        expected += 1;
        Ok(true)
    })?;
    Ok(ChainReport {
        verdict,
        length: expected - 1,
        head: prev,
    })
}
