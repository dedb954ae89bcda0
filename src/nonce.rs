//! Memory of recently used nonces, so that no signed request is accepted twice.
//!
//! Each entry is a 16-byte digest of (machine id, nonce) and the Unix second after which the
//! nonce's timestamp falls out of the skew window. Past that second the request would be
//! refused as stale anyway, so the entry can go: memory is bounded by the request rate times
//! the window, never by history. The map is a [`DashMap`], sharded so that request workers
//! consuming nonces in parallel rarely meet on a lock.

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::domain::MachineId;
use crate::protocol::Nonce;

/// The nonce was already used by this machine inside its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nonce already used")]
pub struct Replayed;

/// The set of nonces seen inside the skew window, per machine.
#[derive(Debug)]
pub struct NonceCache {
    seen: DashMap<[u8; 16], i64>,
    skew: i64,
}

impl NonceCache {
    pub fn new(skew_seconds: u64) -> Self {
        Self {
            seen: DashMap::new(),
            skew: i64::try_from(skew_seconds).unwrap_or(i64::MAX),
        }
    }

    /// Records the nonce, or refuses it if this machine used it within the window.
    ///
    /// Call only after the request's signature is verified, or anyone could burn a
    /// machine's nonces. `timestamp` is the request's own, already checked for skew.
    pub fn consume(
        &self,
        machine: MachineId,
        nonce: &Nonce,
        timestamp: i64,
        now: i64,
    ) -> Result<(), Replayed> {
        let forget_after = timestamp.saturating_add(self.skew);
        match self.seen.entry(key(machine, nonce)) {
            Entry::Occupied(e) if *e.get() >= now => Err(Replayed),
            Entry::Occupied(mut e) => {
                e.insert(forget_after);
                Ok(())
            }
            Entry::Vacant(e) => {
                e.insert(forget_after);
                Ok(())
            }
        }
    }

    /// Drops every nonce whose window has closed by `now`. Returns how many remain.
    pub fn purge(&self, now: i64) -> usize {
        self.seen.retain(|_, forget_after| *forget_after >= now);
        self.seen.len()
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn key(machine: MachineId, nonce: &Nonce) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(machine.as_bytes())
        .chain_update(nonce.as_str().as_bytes())
        .finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce(s: &str) -> Nonce {
        Nonce::parse(s).unwrap()
    }

    #[test]
    fn a_nonce_is_accepted_once_within_its_window() {
        let cache = NonceCache::new(60);
        let m = MachineId::random();
        let n = nonce("aaaaaaaaaaaaaaaa");
        assert_eq!(cache.consume(m, &n, 1000, 1000), Ok(()));
        assert_eq!(cache.consume(m, &n, 1000, 1000), Err(Replayed));
        assert_eq!(cache.consume(m, &n, 1000, 1060), Err(Replayed));
    }

    #[test]
    fn the_same_nonce_is_independent_per_machine() {
        let cache = NonceCache::new(60);
        let n = nonce("aaaaaaaaaaaaaaaa");
        assert_eq!(cache.consume(MachineId::random(), &n, 1000, 1000), Ok(()));
        assert_eq!(cache.consume(MachineId::random(), &n, 1000, 1000), Ok(()));
    }

    #[test]
    fn purging_forgets_only_closed_windows() {
        let cache = NonceCache::new(60);
        let m = MachineId::random();
        cache
            .consume(m, &nonce("aaaaaaaaaaaaaaaa"), 1000, 1000)
            .unwrap();
        cache
            .consume(m, &nonce("bbbbbbbbbbbbbbbb"), 1030, 1030)
            .unwrap();
        assert_eq!(cache.purge(1060), 2);
        assert_eq!(cache.purge(1061), 1);
        assert_eq!(
            cache.consume(m, &nonce("bbbbbbbbbbbbbbbb"), 1030, 1061),
            Err(Replayed)
        );
        assert_eq!(cache.purge(1091), 0);
    }
}
