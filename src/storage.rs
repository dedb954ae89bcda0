//! Durable state in RocksDB, one column family per kind of record.
//!
//! Records are JSON, keyed by their names joined with NUL bytes (names cannot contain NUL),
//! or by big-endian integers where order matters (audit sequence, expiry time). Every write
//! that acknowledges an admin change is synced to the write-ahead log before it returns.

pub mod sealing;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;

use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use sealing::{SealError, Sealer};

/// The kinds of record, each in its own column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    Vaults,
    Tokens,
    Projects,
    /// Head of each secret: latest version and policy.
    Secrets,
    /// Sealed values, one per secret version.
    SecretVersions,
    Machines,
    /// `expires_at` (big-endian seconds) followed by machine id: the sweep's index.
    Expiry,
    Bootstrap,
    Settings,
    Audit,
    AuditByMachine,
    AuditByVault,
    Meta,
}

impl Cf {
    pub const ALL: [Cf; 13] = [
        Cf::Vaults,
        Cf::Tokens,
        Cf::Projects,
        Cf::Secrets,
        Cf::SecretVersions,
        Cf::Machines,
        Cf::Expiry,
        Cf::Bootstrap,
        Cf::Settings,
        Cf::Audit,
        Cf::AuditByMachine,
        Cf::AuditByVault,
        Cf::Meta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Vaults => "vaults",
            Cf::Tokens => "tokens",
            Cf::Projects => "projects",
            Cf::Secrets => "secrets",
            Cf::SecretVersions => "secret_versions",
            Cf::Machines => "machines",
            Cf::Expiry => "expiry",
            Cf::Bootstrap => "bootstrap",
            Cf::Settings => "settings",
            Cf::Audit => "audit",
            Cf::AuditByMachine => "audit_by_machine",
            Cf::AuditByVault => "audit_by_vault",
            Cf::Meta => "meta",
        }
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("record in {cf} does not decode: {source}")]
    Corrupt {
        cf: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store is being reopened after a write failure")]
    Unavailable,
    #[error("column family {0} is missing")]
    MissingCf(&'static str),
}

/// Joins name parts into a key, separated by NUL bytes.
pub fn key(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// A key prefix that matches every key starting with these parts and a separator.
pub fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut out = key(parts);
    out.push(0);
    out
}

/// The RocksDB database with its column families.
///
/// The database sits behind an atomic pointer so that it can be closed and opened again in
/// place ([`Store::reopen`]): after a failed write-ahead-log write RocksDB refuses every
/// further write until it is reopened, and that is how the server gets back on its feet
/// once the disk has room again.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: ArcSwapOption<DB>,
    path: PathBuf,
    reopen: Mutex<()>,
    /// How many times the database has been reopened.
    reopened: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// Memory all column families' write buffers (memtables) may use together before RocksDB
/// flushes the largest; keeps the resident set flat under a steady stream of audit events.
const MEMTABLE_BUDGET: usize = 32 * 1024 * 1024;

/// One block cache shared by every column family, index and filter blocks included, so
/// that reads over a growing audit log cannot grow memory past it (RocksDB otherwise gives
/// each column family a cache of its own).
const BLOCK_CACHE: usize = 32 * 1024 * 1024;

fn open_read_write(path: &Path) -> Result<DB, StoreError> {
    let mut opts = Options::default();
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE);
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_cache_index_and_filter_blocks(true);
    let cfs = Cf::ALL.iter().map(|cf| {
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        ColumnFamilyDescriptor::new(cf.name(), cf_opts)
    });
    Ok(DB::open_cf_descriptors(&opts, path, cfs)?)
}

/// Read options that leave the block cache untouched.
fn uncached() -> rocksdb::ReadOptions {
    let mut opts = rocksdb::ReadOptions::default();
    opts.fill_cache(false);
    opts
}

/// Closes `db` once operations in flight have let go of it (at most five seconds); gives it
/// back if they have not.
fn release(db: Arc<DB>) -> Result<(), Arc<DB>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Arc::strong_count(&db) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Arc::try_unwrap(db).map(drop)
}

fn handle(db: &DB, cf: Cf) -> Result<&rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(cf.name())
        .ok_or(StoreError::MissingCf(cf.name()))
}

impl Store {
    fn wrap(db: DB, path: &Path) -> Self {
        Self {
            inner: Arc::new(Inner {
                db: ArcSwapOption::from_pointee(db),
                path: path.to_owned(),
                reopen: Mutex::new(()),
                reopened: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Opens or creates the database at `path` with every column family.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::wrap(open_read_write(path)?, path))
    }

    /// Opens an existing database read-only, for offline checks of a stopped server's data.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let opts = Options::default();
        let names = Cf::ALL.iter().map(|cf| cf.name());
        let db = DB::open_cf_for_read_only(&opts, path, names, false)?;
        Ok(Self::wrap(db, path))
    }

    fn db(&self) -> Result<Arc<DB>, StoreError> {
        self.inner.db.load_full().ok_or(StoreError::Unavailable)
    }

    /// Closes the database and opens it again, which clears RocksDB's stop-all-writes state
    /// after a failed write. Operations in between fail with [`StoreError::Unavailable`];
    /// if opening fails (the disk is still full), they keep failing until a later call
    /// succeeds.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.inner.reopen.lock();
        if let Some(old) = self.inner.db.swap(None) {
            // RocksDB allows one open handle per directory: the old one must be closed.
            if let Err(old) = release(old) {
                self.inner.db.store(Some(old));
                return Err(StoreError::Unavailable);
            }
        }
        let db = open_read_write(&self.inner.path)?;
        self.inner.db.store(Some(Arc::new(db)));
        self.inner
            .reopened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// How many times [`Store::reopen`] has succeeded: a write that failed before the count
    /// moved may still be replayed from the write-ahead log when the database is reopened.
    pub fn reopened(&self) -> u64 {
        self.inner
            .reopened
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes the database; every later call fails with [`StoreError::Unavailable`]. Call
    /// last before the process exits: RocksDB's threads still running while the process
    /// tears down its statics abort it.
    pub fn close(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.inner.reopen.lock();
        match self.inner.db.swap(None) {
            Some(db) => release(db).map_err(|_| StoreError::Unavailable),
            None => Ok(()),
        }
    }

    /// Bytes RocksDB reports for its memtables (all column families), its block cache and
    /// its table readers outside the cache, in that order.
    pub fn memory(&self) -> Result<[u64; 3], StoreError> {
        let db = self.db()?;
        let value = |cf: Cf, name: &str| -> Result<u64, StoreError> {
            let value = db.property_int_value_cf(handle(&db, cf)?, name)?;
            Ok(value.unwrap_or_default())
        };
        // One block cache is shared by every column family: read it once.
        let mut parts = [0, value(Cf::ALL[0], "rocksdb.block-cache-usage")?, 0];
        for cf in Cf::ALL {
            parts[0] += value(cf, "rocksdb.cur-size-all-mem-tables")?;
            parts[2] += value(cf, "rocksdb.estimate-table-readers-mem")?;
        }
        Ok(parts)
    }

    /// Syncs the write-ahead log: everything written so far survives a machine crash.
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        Ok(self.db()?.flush_wal(true)?)
    }

    pub fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db()?;
        Ok(db.get_cf(handle(&db, cf)?, key)?)
    }

    pub fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get_with(cf, key, &rocksdb::ReadOptions::default())
    }

    /// Like [`Store::get`], but leaves the block cache as it is: for walks over history
    /// (audit listings), whose blocks would otherwise push out the ones signed reads use.
    pub fn get_uncached<T: DeserializeOwned>(
        &self,
        cf: Cf,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.get_with(cf, key, &uncached())
    }

    fn get_with<T: DeserializeOwned>(
        &self,
        cf: Cf,
        key: &[u8],
        opts: &rocksdb::ReadOptions,
    ) -> Result<Option<T>, StoreError> {
        let db = self.db()?;
        let Some(bytes) = db.get_pinned_cf_opt(handle(&db, cf)?, key, opts)? else {
            return Ok(None);
        };
        decode(cf, &bytes).map(Some)
    }

    pub fn exists(&self, cf: Cf, key: &[u8]) -> Result<bool, StoreError> {
        let db = self.db()?;
        let found = db.get_pinned_cf(handle(&db, cf)?, key)?.is_some();
        Ok(found)
    }

    /// A new empty batch of writes.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            inner: WriteBatch::default(),
        }
    }

    /// Every record whose key starts with `prefix`, in key order, decoded.
    pub fn scan_prefix<T: DeserializeOwned>(
        &self,
        cf: Cf,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let mut out = Vec::new();
        self.for_each_from(cf, prefix, |k, v| {
            if !k.starts_with(prefix) {
                return Ok(false);
            }
            out.push((k.to_vec(), decode(cf, v)?));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Walks keys from `start` on, in order, until `visit` returns `false`.
    ///
    /// Every walk (start-up loading, sweeps, listings, audit queries and checks) reads
    /// past the block cache: a scan touches each block once, and caching it would only push
    /// out the blocks that signed reads come back to.
    pub fn for_each_from<F>(&self, cf: Cf, start: &[u8], mut visit: F) -> Result<(), StoreError>
    where
        F: FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    {
        let db = self.db()?;
        let iter = db.iterator_cf_opt(
            handle(&db, cf)?,
            uncached(),
            IteratorMode::From(start, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !visit(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// The last key in a column family, if any.
    pub fn last_key(&self, cf: Cf) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db()?;
        let mut iter = db.iterator_cf_opt(handle(&db, cf)?, uncached(), IteratorMode::End);
        let last = iter.next().transpose()?.map(|(k, _)| k.to_vec());
        Ok(last)
    }
}

/// Writes gathered to be applied later, together with something else (an audit event)
/// in one atomic batch. Unlike [`Batch`], they can be sent to another thread.
#[derive(Debug, Default)]
pub struct Writes(Vec<WriteOp>);

#[derive(Debug)]
enum WriteOp {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
}

impl Writes {
    pub fn put<T: Serialize>(&mut self, cf: Cf, key: &[u8], value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Corrupt {
            cf: cf.name(),
            source,
        })?;
        self.put_raw(cf, key, &bytes);
        Ok(())
    }

    pub fn put_raw(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.0.push(WriteOp::Put(cf, key.to_vec(), value.to_vec()));
    }

    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.0.push(WriteOp::Delete(cf, key.to_vec()));
    }
}

/// A set of writes applied atomically.
pub struct Batch<'s> {
    store: &'s Store,
    inner: WriteBatch,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.inner.len())
            .finish()
    }
}

impl Batch<'_> {
    pub fn put<T: Serialize>(&mut self, cf: Cf, key: &[u8], value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Corrupt {
            cf: cf.name(),
            source,
        })?;
        self.put_raw(cf, key, &bytes)
    }

    pub fn put_raw(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let db = self.store.db()?;
        self.inner.put_cf(handle(&db, cf)?, key, value);
        Ok(())
    }

    pub fn delete(&mut self, cf: Cf, key: &[u8]) -> Result<(), StoreError> {
        let db = self.store.db()?;
        self.inner.delete_cf(handle(&db, cf)?, key);
        Ok(())
    }

    /// Adds gathered writes to this batch.
    pub fn extend(&mut self, writes: &Writes) -> Result<(), StoreError> {
        let db = self.store.db()?;
        for op in &writes.0 {
            match op {
                WriteOp::Put(cf, key, value) => self.inner.put_cf(handle(&db, *cf)?, key, value),
                WriteOp::Delete(cf, key) => self.inner.delete_cf(handle(&db, *cf)?, key),
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Applies the batch; with `sync` the write-ahead log is flushed to disk first.
    pub fn commit(self, sync: bool) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.store.db()?.write_opt(self.inner, &opts)?;
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(cf: Cf, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        cf: cf.name(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut b = store.batch();
            b.put(
                Cf::Projects,
                &key(&["v", "p"]),
                &serde_json::json!({"x": 1}),
            )
            .unwrap();
            b.put(
                Cf::Projects,
                &key(&["v2", "p"]),
                &serde_json::json!({"x": 2}),
            )
            .unwrap();
            b.commit(true).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let rows: Vec<(Vec<u8>, serde_json::Value)> =
            store.scan_prefix(Cf::Projects, &prefix(&["v"])).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1["x"], 1);
    }

    #[test]
    fn walks_and_uncached_gets_leave_the_block_cache_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut b = store.batch();
        for i in 0u64..20_000 {
            b.put(Cf::Audit, &i.to_be_bytes(), &format!("event {i:>200}"))
                .unwrap();
        }
        b.commit(false).unwrap();
        // Into a table file, where reads go through blocks (the memtable has none).
        let db = store.db().unwrap();
        db.flush_cf(handle(&db, Cf::Audit).unwrap()).unwrap();
        drop(db);
        let cached = || store.memory().unwrap()[1];
        let before = cached();

        let mut walked = 0;
        store
            .for_each_from(Cf::Audit, &[], |_, _| {
                walked += 1;
                Ok(true)
            })
            .unwrap();
        assert_eq!(walked, 20_000);
        for i in (0u64..20_000).step_by(17) {
            let got: Option<String> = store.get_uncached(Cf::Audit, &i.to_be_bytes()).unwrap();
            assert!(got.is_some());
        }
        assert_eq!(
            store.last_key(Cf::Audit).unwrap(),
            Some(19_999u64.to_be_bytes().to_vec())
        );
        let after_walks = cached();
        assert!(
            after_walks <= before + 64 * 1024,
            "walks filled the block cache: {before} -> {after_walks} bytes"
        );

        // The same reads through the cache fill it: the check above can fail.
        for i in (0u64..20_000).step_by(17) {
            let got: Option<String> = store.get(Cf::Audit, &i.to_be_bytes()).unwrap();
            assert!(got.is_some());
        }
        let after_gets = cached();
        assert!(
            after_gets > after_walks + 1024 * 1024,
            "cached gets did not fill the block cache: {after_walks} -> {after_gets} bytes"
        );
    }
}
