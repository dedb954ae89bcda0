use std::thread::JoinHandle;
use std::time::Instant;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::event::{AuditEvent, NewEvent, GENESIS_HASH};
use crate::metrics::Metrics;
use crate::storage::{self, Cf, Store, StoreError, Writes};

/// Most events written in one batch; more wait for the next.
const MAX_BATCH: usize = 4096;

/// When a request may be answered relative to its audit event being on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The response waits until the event's batch is synced to the write-ahead log.
    #[default]
    Sync,
    /// The response does not wait, and batches of such events are written without syncing
    /// the write-ahead log: a process crash loses only what was still queued, a machine
    /// crash also what the operating system had not yet written.
    Async,
}

/// The event recording a change, and the log to write it to in one batch with the change.
/// `None` writes the change alone (start-up, tools, benches).
pub type ChangeEvent = Option<(NewEvent, AuditLog)>;

/// The audit store could not be written; the request must fail closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit log cannot be written")]
pub struct AuditUnavailable;

struct Pending {
    event: NewEvent,
    ack: Ack,
    /// The change this event records, written in the same synced batch.
    writes: Option<Writes>,
}

/// What the writer thread is sent.
#[allow(
    clippy::large_enum_variant,
    reason = "events are the traffic and drains rare; boxing would allocate per event"
)]
enum Item {
    Event(Pending),
    /// Answered once every item sent before it is written and the write-ahead log synced.
    Drain(oneshot::Sender<Result<(), AuditUnavailable>>),
}

/// Who waits for an event to be durable, and how.
enum Ack {
    None,
    /// An async task (a request).
    Task(oneshot::Sender<Result<u64, AuditUnavailable>>),
    /// A thread that may block (an actor's arbiter, the blocking pool).
    Thread(std::sync::mpsc::SyncSender<Result<u64, AuditUnavailable>>),
}

impl Ack {
    /// Whether somebody waits for the event to be durable.
    fn waits(&self) -> bool {
        !matches!(self, Ack::None)
    }

    fn send(self, result: Result<u64, AuditUnavailable>) {
        match self {
            Ack::None => {}
            Ack::Task(tx) => {
                let _ = tx.send(result);
            }
            Ack::Thread(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// The sending side of the audit writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Item>,
    durability: Durability,
    metrics: Metrics,
}

impl AuditLog {
    /// Starts the writer thread over `store`, continuing the chain stored there.
    pub fn start(
        store: Store,
        metrics: Metrics,
        durability: Durability,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        let (seq, head) = chain_head(&store)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            store,
            metrics: metrics.clone(),
            rx,
            next_seq: seq + 1,
            head,
            broken_since: None,
            lost_since_drain: false,
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())
            .map_err(StoreError::Io)?;
        Ok((
            Self {
                tx,
                durability,
                metrics,
            },
            thread,
        ))
    }

    /// Records a machine request's event; in `sync` mode waits until it is durable.
    pub async fn record(&self, event: NewEvent) -> Result<(), AuditUnavailable> {
        match self.durability {
            Durability::Sync => self.record_durable(event).await.map(drop),
            Durability::Async => self.send(event, Ack::None, None),
        }
    }

    /// Records an event and waits until it is durable, whatever the mode. Returns the
    /// event's sequence number.
    async fn record_durable(&self, event: NewEvent) -> Result<u64, AuditUnavailable> {
        let (ack, done) = oneshot::channel();
        self.send(event, Ack::Task(ack), None)?;
        done.await.map_err(|_| AuditUnavailable)?
    }

    /// Applies `writes` and records `event` in one synced batch, so that a change is never
    /// on disk without its event nor its event without it; blocks until both are durable.
    /// Call only from a thread that may block, never from a request worker.
    pub fn commit_with(&self, event: NewEvent, writes: Writes) -> Result<u64, AuditUnavailable> {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        self.send(event, Ack::Thread(ack), Some(writes))?;
        done.recv().map_err(|_| AuditUnavailable)?
    }

    /// Whether the writer thread is still taking events.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Waits until every event queued before the call is written and the write-ahead log is
    /// synced; for shutdown, after the last request. Fails if the log could not be synced
    /// or any batch failed since the last drain.
    pub async fn drain(&self) -> Result<(), AuditUnavailable> {
        let (done, drained) = oneshot::channel();
        self.tx
            .send(Item::Drain(done))
            .map_err(|_| AuditUnavailable)?;
        drained.await.map_err(|_| AuditUnavailable)?
    }

    /// Queues an event without waiting for it.
    pub fn record_later(&self, event: NewEvent) {
        let _ = self.send(event, Ack::None, None);
    }

    fn send(
        &self,
        event: NewEvent,
        ack: Ack,
        writes: Option<Writes>,
    ) -> Result<(), AuditUnavailable> {
        self.metrics.audit_queue_depth.inc();
        let item = Item::Event(Pending { event, ack, writes });
        self.tx.send(item).map_err(|_| {
            self.metrics.audit_queue_depth.dec();
            AuditUnavailable
        })
    }
}

/// Sequence number and hash of the newest stored event.
fn chain_head(store: &Store) -> Result<(u64, String), StoreError> {
    let Some(key) = store.last_key(Cf::Audit)? else {
        return Ok((0, GENESIS_HASH.to_owned()));
    };
    let event: Option<AuditEvent> = store.get(Cf::Audit, &key)?;
    Ok(event.map_or((0, GENESIS_HASH.to_owned()), |e| (e.seq, e.hash)))
}

struct Writer {
    store: Store,
    metrics: Metrics,
    rx: mpsc::UnboundedReceiver<Item>,
    next_seq: u64,
    head: String,
    /// Set by a failed write: when the store was last found broken. The writer then
    /// reopens the store, at most every [`REOPEN_EVERY`], before writing again.
    broken_since: Option<Instant>,
    /// Whether a batch has failed since the last drain request was answered.
    lost_since_drain: bool,
}

/// How often a broken store is reopened while writes keep failing.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(64);
        let mut drains = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Item::Event(pending) => batch.push(pending),
                    Item::Drain(done) => drains.push(done),
                }
                if batch.len() < MAX_BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            self.metrics.audit_queue_depth.sub(batch.len() as i64);
            if !batch.is_empty() {
                self.flush(&mut batch);
            }
            // Everything sent before a drain request is in this batch or an earlier one.
            for done in drains.drain(..) {
                let drained = if std::mem::take(&mut self.lost_since_drain) {
                    Err(AuditUnavailable)
                } else {
                    self.store.sync_wal().map_err(|_| AuditUnavailable)
                };
                let _ = done.send(drained);
            }
        }
    }

    /// Reopens a store that failed a write, and picks the chain up from what is really
    /// on disk. Returns whether the store is usable.
    fn recover(&mut self) -> bool {
        let Some(since) = self.broken_since else {
            return true;
        };
        if since.elapsed() < REOPEN_EVERY {
            return false;
        }
        let reopened = self.store.reopen().and_then(|()| chain_head(&self.store));
        match reopened {
            Ok((seq, head)) => {
                tracing::warn!(audit.seq = seq, "audit store reopened; writing again");
                self.next_seq = seq + 1;
                self.head = head;
                self.broken_since = None;
                true
            }
            Err(err) => {
                tracing::error!(error = %err, "audit store still cannot be reopened");
                self.broken_since = Some(Instant::now());
                false
            }
        }
    }

    fn fail(&mut self, batch: &mut Vec<Pending>) {
        self.metrics.audit_write_failures.inc();
        self.lost_since_drain = true;
        for p in batch.drain(..) {
            p.ack.send(Err(AuditUnavailable));
        }
    }

    fn flush(&mut self, batch: &mut Vec<Pending>) {
        if !self.recover() {
            self.fail(batch);
            return;
        }
        let started = Instant::now();
        let mut head = self.head.clone();
        let mut events = Vec::with_capacity(batch.len());
        for (i, p) in batch.iter_mut().enumerate() {
            let event = AuditEvent::seal(p.event.clone(), self.next_seq + i as u64, &head);
            head.clone_from(&event.hash);
            events.push(event);
        }

        let result = self.write(&events, batch);
        self.metrics
            .audit_flush_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.audit_batch_size.observe(events.len() as f64);
        match result {
            Ok(()) => {
                self.next_seq += events.len() as u64;
                self.head = head;
                self.metrics.audit_events.inc_by(events.len() as u64);
                for (p, e) in batch.drain(..).zip(&events) {
                    p.ack.send(Ok(e.seq));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, events = events.len(), "audit batch not written; requests fail closed");
                self.broken_since = Some(Instant::now());
                self.fail(batch);
            }
        }
    }

    fn write(&self, events: &[AuditEvent], pending: &[Pending]) -> Result<(), StoreError> {
        let mut wb = self.store.batch();
        for (e, p) in events.iter().zip(pending) {
            if let Some(writes) = &p.writes {
                wb.extend(writes)?;
            }
            let seq = e.seq.to_be_bytes();
            wb.put(Cf::Audit, &seq, e)?;
            let mut by_vault = storage::prefix(&[e.vault.as_str()]);
            by_vault.extend_from_slice(&seq);
            wb.put_raw(Cf::AuditByVault, &by_vault, &[])?;
            if let Some(m) = e.machine {
                let mut by_machine = m.as_bytes().to_vec();
                by_machine.extend_from_slice(&seq);
                wb.put_raw(Cf::AuditByMachine, &by_machine, &[])?;
            }
        }
        wb.commit(needs_sync(pending))
    }
}

/// Whether a batch must be synced to the write-ahead log before it is acknowledged: when
/// anyone waits on it (a durable read, an admin change) or it carries a change. A batch of
/// events nobody waits for (async reads, failed authentications) is written unsynced; the
/// next synced batch makes it durable with itself.
fn needs_sync(pending: &[Pending]) -> bool {
    pending.iter().any(|p| p.ack.waits() || p.writes.is_some())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::audit::Outcome;
    use crate::domain::VaultName;

    fn pending(ack: Ack, writes: Option<Writes>) -> Pending {
        Pending {
            event: NewEvent {
                time: Utc::now(),
                vault: VaultName::parse("default").unwrap(),
                machine: None,
                actor: "system".to_owned(),
                action: "test",
                secret: None,
                outcome: Outcome::Ok,
                reason: None,
                source_ip: None,
                country: None,
                request_id: String::new(),
                detail: None,
            },
            ack,
            writes,
        }
    }

    #[test]
    fn a_batch_is_synced_exactly_when_someone_waits_or_it_carries_a_change() {
        let unwaited = || pending(Ack::None, None);
        assert!(!needs_sync(&[unwaited(), unwaited()]));

        let (task, _task_rx) = oneshot::channel();
        assert!(needs_sync(&[unwaited(), pending(Ack::Task(task), None)]));

        let (thread, _thread_rx) = std::sync::mpsc::sync_channel(1);
        assert!(needs_sync(&[
            pending(Ack::Thread(thread), None),
            unwaited()
        ]));

        let change = pending(Ack::None, Some(Writes::default()));
        assert!(needs_sync(&[unwaited(), change]));
    }
}
