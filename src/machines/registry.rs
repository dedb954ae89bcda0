use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{Addr, ArbiterHandle, Supervisor};
use arc_swap::ArcSwap;
use dashmap::DashMap;
use parking_lot::Mutex;

use super::actor::{Command, MachineActor, MachineError};
use super::record::{MachineRecord, MachineState};
use super::snapshot::MachineSnapshot;
use crate::bootstrap::BootstrapRecord;
use crate::domain::{MachineId, VaultName};
use crate::metrics::Metrics;
use crate::storage::{self, Cf, Store, StoreError};

/// Storage key of a machine record: vault, then the id's 16 bytes.
pub fn machine_key(vault: &VaultName, id: MachineId) -> Vec<u8> {
    let mut k = storage::prefix(&[vault.as_str()]);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Storage key in the expiry index: big-endian seconds, then the machine id.
pub fn expiry_key(at: i64, id: MachineId) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(&at.max(0).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// A machine's published snapshot and the address of its actor.
#[derive(Debug)]
pub struct MachineHandle {
    snapshot: ArcSwap<MachineSnapshot>,
    addr: Mutex<Option<Addr<MachineActor>>>,
}

impl MachineHandle {
    /// The snapshot in force now. Cheap and lock-free.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<MachineSnapshot>> {
        self.snapshot.load()
    }

    pub(super) fn publish(&self, snapshot: MachineSnapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    fn addr(&self) -> Option<Addr<MachineActor>> {
        self.addr.lock().clone()
    }
}

/// Every machine the server knows, by id, with its actor.
///
/// Actors run on a small pool of arbiters (threads) of their own, so that their synced
/// writes never block a request worker.
#[derive(Debug)]
pub struct Machines {
    map: DashMap<MachineId, Arc<MachineHandle>>,
    store: Store,
    metrics: Metrics,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
}

impl Machines {
    /// A registry whose actors run on `arbiters`; must be called inside an actix system.
    pub fn new(store: Store, metrics: Metrics, arbiters: Vec<ArbiterHandle>) -> Self {
        Self {
            map: DashMap::new(),
            store,
            metrics,
            arbiters,
            next_arbiter: AtomicUsize::new(0),
        }
    }

    /// Starts an actor for every stored machine. Returns how many there are.
    pub fn load_all(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        self.store.for_each_from(Cf::Machines, &[], |_, value| {
            let record: MachineRecord =
                serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
                    cf: Cf::Machines.name(),
                    source,
                })?;
            self.spawn(record);
            n += 1;
            Ok(true)
        })?;
        Ok(n)
    }

    /// Starts the actor of a machine whose record is already stored.
    pub fn spawn(&self, record: MachineRecord) -> Arc<MachineHandle> {
        let id = record.id;
        self.metrics
            .machines
            .with_label_values(&[record.state.as_str()])
            .inc();
        let handle = Arc::new(MachineHandle {
            snapshot: ArcSwap::from_pointee(MachineSnapshot::from_record(&record)),
            addr: Mutex::new(None),
        });
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len().max(1);
        let (store, metrics, h) = (self.store.clone(), self.metrics.clone(), handle.clone());
        let addr = Supervisor::start_in_arbiter(&self.arbiters[i], move |_| {
            MachineActor::new(record, h, store, metrics)
        });
        *handle.addr.lock() = Some(addr);
        self.map.insert(id, handle.clone());
        handle
    }

    /// Stores a new machine with its bootstrap token in one synced write, then starts its
    /// actor.
    pub fn create(
        &self,
        record: MachineRecord,
        token_key: &[u8],
        token: &BootstrapRecord,
    ) -> Result<(), StoreError> {
        let mut batch = self.store.batch();
        batch.put(
            Cf::Machines,
            &machine_key(&record.vault, record.id),
            &record,
        )?;
        if let Some(at) = record.expires_at() {
            batch.put_raw(Cf::Expiry, &expiry_key(at.timestamp(), record.id), &[])?;
        }
        batch.put(Cf::Bootstrap, token_key, token)?;
        batch.commit(true)?;
        self.spawn(record);
        Ok(())
    }

    /// The published handle of a machine, if it exists.
    pub fn get(&self, id: MachineId) -> Option<Arc<MachineHandle>> {
        self.map.get(&id).map(|h| h.value().clone())
    }

    /// Sends a change to the machine's actor and waits for it to be durable.
    pub async fn command(
        &self,
        id: MachineId,
        cmd: Command,
    ) -> Result<MachineRecord, MachineError> {
        let addr = self
            .get(id)
            .and_then(|h| h.addr())
            .ok_or(MachineError::Unavailable)?;
        addr.send(cmd)
            .await
            .map_err(|_| MachineError::Unavailable)?
    }

    /// The stored record of a machine in a vault.
    pub fn record(
        &self,
        vault: &VaultName,
        id: MachineId,
    ) -> Result<Option<MachineRecord>, StoreError> {
        self.store.get(Cf::Machines, &machine_key(vault, id))
    }

    /// Every machine of a vault, optionally only those in `state` as of now.
    pub fn list(
        &self,
        vault: &VaultName,
        state: Option<MachineState>,
    ) -> Result<Vec<MachineRecord>, StoreError> {
        let now = chrono::Utc::now();
        let rows = self
            .store
            .scan_prefix::<MachineRecord>(Cf::Machines, &storage::prefix(&[vault.as_str()]))?;
        Ok(rows
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| state.is_none_or(|s| r.state_at(now) == s))
            .collect())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
