use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{Addr, ArbiterHandle, Supervisor};
use arc_swap::ArcSwap;
use dashmap::DashMap;
use parking_lot::Mutex;

use super::actor::{Audited, Command, MachineActor, MachineError};
use super::record::{MachineRecord, MachineState};
use super::snapshot::MachineSnapshot;
use crate::audit::{AuditLog, ChangeEvent, NewEvent};
use crate::bootstrap::BootstrapRecord;
use crate::domain::{MachineId, VaultName};
use crate::metrics::Metrics;
use crate::storage::{self, Cf, Store, StoreError, Writes};

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

    /// Whether the machine's actor has been started.
    pub fn has_actor(&self) -> bool {
        self.addr.lock().is_some()
    }
}

/// Every machine the server knows, by id, with its actor.
///
/// A machine's actor is started the first time a change is sent to it, from the stored
/// record; until then only its snapshot is in memory. A server with a million registered
/// machines, few of which change on any one day, thus holds a million snapshots and a
/// handful of actors. Actors run on a small pool of arbiters (threads) of their own, so that
/// their synced writes never block a request worker.
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

    /// Publishes the snapshot of every stored machine. Returns how many there are.
    pub fn load_all(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        self.store.for_each_from(Cf::Machines, &[], |_, value| {
            let record: MachineRecord =
                serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
                    cf: Cf::Machines.name(),
                    source,
                })?;
            self.register(&record);
            n += 1;
            Ok(true)
        })?;
        Ok(n)
    }

    /// Publishes the snapshot of a machine whose record is already stored.
    fn register(&self, record: &MachineRecord) -> Arc<MachineHandle> {
        self.metrics
            .machines
            .with_label_values(&[record.state.as_str()])
            .inc();
        let handle = Arc::new(MachineHandle {
            snapshot: ArcSwap::from_pointee(MachineSnapshot::from_record(record)),
            addr: Mutex::new(None),
        });
        self.map.insert(record.id, handle.clone());
        handle
    }

    /// The address of a machine's actor, starting it from the stored record if it is not
    /// running yet. The handle's lock makes sure there is only ever one.
    fn actor(&self, handle: &Arc<MachineHandle>) -> Result<Addr<MachineActor>, MachineError> {
        let mut addr = handle.addr.lock();
        if let Some(addr) = addr.as_ref() {
            return Ok(addr.clone());
        }
        let (vault, id) = {
            let snapshot = handle.snapshot();
            (snapshot.vault.clone(), snapshot.id)
        };
        let record: MachineRecord = self
            .store
            .get(Cf::Machines, &machine_key(&vault, id))
            .map_err(|_| MachineError::Unavailable)?
            .ok_or(MachineError::Unavailable)?;
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len().max(1);
        let (store, metrics, h) = (self.store.clone(), self.metrics.clone(), handle.clone());
        let started = Supervisor::start_in_arbiter(&self.arbiters[i], move |_| {
            MachineActor::new(record, h, store, metrics)
        });
        *addr = Some(started.clone());
        Ok(started)
    }

    /// Stores a new machine with its bootstrap token (and, given one, the event recording
    /// its creation) in one synced write, then publishes its snapshot.
    pub fn create(
        &self,
        record: MachineRecord,
        token_key: &[u8],
        token: &BootstrapRecord,
        audit: ChangeEvent,
    ) -> Result<(), MachineError> {
        let mut writes = Writes::default();
        writes.put(
            Cf::Machines,
            &machine_key(&record.vault, record.id),
            &record,
        )?;
        if let Some(at) = record.expires_at() {
            writes.put_raw(Cf::Expiry, &expiry_key(at.timestamp(), record.id), &[]);
        }
        writes.put(Cf::Bootstrap, token_key, token)?;
        match audit {
            Some((event, log)) => {
                log.commit_with(event, writes)?;
            }
            None => {
                let mut batch = self.store.batch();
                batch.extend(&writes)?;
                batch.commit(true)?;
            }
        }
        self.register(&record);
        Ok(())
    }

    /// The published handle of a machine, if it exists.
    pub fn get(&self, id: MachineId) -> Option<Arc<MachineHandle>> {
        self.map.get(&id).map(|h| h.value().clone())
    }

    /// Sends a change with the audit event that records it to the machine's actor, and
    /// waits until both are durable (they are written in one batch).
    pub async fn command_audited(
        &self,
        id: MachineId,
        cmd: Command,
        event: NewEvent,
        log: AuditLog,
    ) -> Result<MachineRecord, MachineError> {
        let handle = self.get(id).ok_or(MachineError::Unavailable)?;
        let addr = self.actor(&handle)?;
        addr.send(Audited { cmd, event, log })
            .await
            .map_err(|_| MachineError::Unavailable)?
    }

    /// Sends a change to the machine's actor and waits for it to be durable.
    pub async fn command(
        &self,
        id: MachineId,
        cmd: Command,
    ) -> Result<MachineRecord, MachineError> {
        let handle = self.get(id).ok_or(MachineError::Unavailable)?;
        let addr = self.actor(&handle)?;
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
