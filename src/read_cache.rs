//! A read-through cache over stored records that a concurrent write cannot leave stale.
//!
//! The obvious scheme (on a miss read the store and insert; after a write invalidate) has a
//! hole: a reader that misses, reads the old record, and inserts it *after* a writer has
//! committed and invalidated puts the old record back, and it stays until the next write.
//! For an IP allowlist or a secret's policy that would keep an acknowledged change out of
//! force. Here every write bumps a counter after it commits; a reader notes the counter
//! before reading the store and, after inserting, drops its entry again if the counter
//! moved. Either the writer's bump comes before the reader's second look (the reader drops
//! its entry) or after its insert (the writer's own invalidation, which follows the bump,
//! drops it).

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct ReadCache<K, V> {
    entries: moka::sync::Cache<K, Arc<V>>,
    writes: AtomicU64,
}

impl<K, V> std::fmt::Debug for ReadCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

impl<K, V> ReadCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: moka::sync::Cache::new(capacity),
            writes: AtomicU64::new(0),
        }
    }

    /// The cached value for `key`, or what `load` reads from the store (`None`, not cached,
    /// when there is no such record).
    pub fn get_or_load<E>(
        &self,
        key: &K,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<Arc<V>>, E> {
        if let Some(hit) = self.entries.get(key) {
            return Ok(Some(hit));
        }
        let before = self.writes.load(Ordering::SeqCst);
        let Some(value) = load()? else {
            return Ok(None);
        };
        let value = Arc::new(value);
        self.entries.insert(key.clone(), value.clone());
        if self.writes.load(Ordering::SeqCst) != before {
            self.entries.invalidate(key);
        }
        Ok(Some(value))
    }

    /// Call after every write to `key`'s record, whether the write reported success or not
    /// (a failed write may still have reached the disk).
    pub fn written(&self, key: &K) {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[test]
    fn a_hit_does_not_load_and_a_write_forces_a_load() {
        let cache = ReadCache::<&str, u32>::new(16);
        let loads = std::cell::Cell::new(0);
        let load = |v| {
            loads.set(loads.get() + 1);
            Ok::<_, Infallible>(Some(v))
        };
        assert_eq!(*cache.get_or_load(&"k", || load(1)).unwrap().unwrap(), 1);
        assert_eq!(*cache.get_or_load(&"k", || load(2)).unwrap().unwrap(), 1);
        assert_eq!(loads.get(), 1);
        cache.written(&"k");
        assert_eq!(*cache.get_or_load(&"k", || load(2)).unwrap().unwrap(), 2);
        assert_eq!(loads.get(), 2);
    }

    #[test]
    fn a_record_read_before_a_concurrent_write_is_not_kept() {
        let cache = ReadCache::<&str, &str>::new(16);
        // The reader reads the old record; before it inserts, a writer commits the new one
        // and reports the write.
        let got = cache
            .get_or_load(&"allowlist", || {
                cache.written(&"allowlist");
                Ok::<_, Infallible>(Some("old"))
            })
            .unwrap();
        assert_eq!(*got.unwrap(), "old", "the reader answers with what it read");
        let next = cache
            .get_or_load(&"allowlist", || Ok::<_, Infallible>(Some("new")))
            .unwrap();
        assert_eq!(
            *next.unwrap(),
            "new",
            "the stale record must not stay cached"
        );
    }

    #[test]
    fn a_missing_record_is_not_cached() {
        let cache = ReadCache::<&str, u32>::new(16);
        assert!(cache
            .get_or_load(&"k", || Ok::<_, Infallible>(None))
            .unwrap()
            .is_none());
        assert_eq!(
            *cache
                .get_or_load(&"k", || Ok::<_, Infallible>(Some(7)))
                .unwrap()
                .unwrap(),
            7
        );
    }

    #[test]
    fn a_load_error_is_passed_on_and_nothing_is_cached() {
        let cache = ReadCache::<&str, u32>::new(16);
        assert_eq!(
            cache.get_or_load(&"k", || Err("store down")),
            Err("store down")
        );
        assert_eq!(
            *cache
                .get_or_load(&"k", || Ok::<_, &str>(Some(3)))
                .unwrap()
                .unwrap(),
            3
        );
    }
}
