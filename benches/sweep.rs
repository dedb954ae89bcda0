//! The cost of finding expired machines, with few or many machines on record.
//!
//! What: `sweeper::due`, the part of a sweep that depends on how many machines exist: it
//! walks the expiry index from its start up to now. Marking each due machine costs the same
//! whatever the total, so it is left out.
//! Data: an index with 100 expired entries plus 0 or 99 900 entries that expire in the
//! future (100 and 100 000 machines on record), in RocksDB in a temporary directory.
//! Reproduce: `cargo bench --bench sweep`; the README reports the ratio of the two means.

#![expect(
    clippy::unwrap_used,
    reason = "a bench with a broken setup should stop at once"
)]

use chrono::{TimeDelta, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tempvault::domain::MachineId;
use tempvault::machines::sweeper::due;
use tempvault::storage::{Cf, Store};

fn index(total: usize, expired: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = Utc::now().timestamp();
    let mut batch = store.batch();
    for i in 0..total {
        // Expired entries lie in the past; the rest spread over the coming year.
        let at = if i < expired {
            now - 10 - i as i64
        } else {
            now + 3600 + i as i64 * 300
        };
        let mut key = at.to_be_bytes().to_vec();
        key.extend_from_slice(MachineId::random().as_bytes());
        batch.put_raw(Cf::Expiry, &key, &[]).unwrap();
    }
    batch.commit(false).unwrap();
    (dir, store)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sweep_due");
    for total in [100usize, 100_000] {
        let (_dir, store) = index(total, 100);
        let now = Utc::now() + TimeDelta::seconds(1);
        assert_eq!(due(&store, now).unwrap().len(), 100);
        group.bench_function(format!("{total}_machines_100_expired"), |b| {
            b.iter(|| black_box(due(&store, now).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
