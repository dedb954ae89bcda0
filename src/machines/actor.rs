use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, Supervised};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};

use super::record::{Disabled, Extension, Grant, MachineRecord, MachineState, Revert};
use super::registry::{expiry_key, machine_key, MachineHandle};
use super::snapshot::MachineSnapshot;
use crate::audit::{AuditLog, AuditUnavailable, NewEvent};
use crate::bootstrap::BootstrapRecord;
use crate::domain::latest_expiry;
use crate::domain::ProjectName;
use crate::guardrails::{GuardrailSpec, Guardrails, RuleError};
use crate::metrics::Metrics;
use crate::storage::{Cf, Store, StoreError, Writes};

/// A bootstrap token's storage key and its record, marked used.
type ConsumedToken = (Vec<u8>, BootstrapRecord);

/// A change to one machine, applied by its actor.
#[derive(Debug)]
pub enum Command {
    /// Registers the machine's public key and consumes its bootstrap token, atomically.
    RegisterKey {
        public_key: [u8; 32],
        token_key: Vec<u8>,
        now: DateTime<Utc>,
    },
    Approve {
        now: DateTime<Utc>,
    },
    Disable {
        reason: String,
        by: String,
        now: DateTime<Utc>,
    },
    SetMember {
        project: ProjectName,
        member: bool,
    },
    SetGrant {
        grant: Grant,
        granted: bool,
    },
    SetGuardrails {
        spec: GuardrailSpec,
    },
    Extend {
        to: DateTime<Utc>,
        reason: String,
        by: String,
        now: DateTime<Utc>,
    },
    Revert {
        extension: u32,
        reason: String,
        by: String,
        now: DateTime<Utc>,
    },
    /// Sent by the sweep for a machine whose expiry has passed.
    MarkExpired {
        now: DateTime<Utc>,
    },
    /// Stops the actor as a crash would, so that its supervisor restarts it. A fault
    /// injection hook for tests and drills; it changes no state.
    Crash,
}

impl Message for Command {
    type Result = Result<MachineRecord, MachineError>;
}

/// A change together with the audit event that records it. The actor writes the new
/// record and the event in one synced batch, through the audit writer: after a crash the
/// change is either on disk with its event or not at all.
#[derive(Debug)]
pub struct Audited {
    pub cmd: Command,
    pub event: NewEvent,
    pub log: AuditLog,
}

impl Message for Audited {
    type Result = Result<MachineRecord, MachineError>;
}

/// Why a change to a machine was refused.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("machine is {state}; it cannot be {action}")]
    WrongState {
        state: MachineState,
        action: &'static str,
    },
    #[error("the bootstrap token is unknown, already used or expired")]
    TokenUnusable,
    #[error("the public key is a weak Ed25519 key (small-order, or with a small-order component)")]
    WeakKey,
    #[error("machine is not temporary and has no expiry to extend")]
    NotTemporary,
    #[error("new expiry {to} must be later than the current expiry {current}")]
    NotLater {
        to: DateTime<Utc>,
        current: DateTime<Utc>,
    },
    #[error("new expiry {to} is more than 12 months from now (latest allowed: {latest})")]
    TooFar {
        to: DateTime<Utc>,
        latest: DateTime<Utc>,
    },
    #[error("extension {0} does not exist")]
    NoSuchExtension(u32),
    #[error("extension {0} is already reverted")]
    AlreadyReverted(u32),
    #[error("guardrails: {0}")]
    Rule(#[from] RuleError),
    #[error("machine actor is restarting")]
    Restarting,
    #[error("machine actor is unavailable")]
    Unavailable,
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Audit(#[from] AuditUnavailable),
}

/// How often an actor whose write failed reads its record back until the store has been
/// reopened.
const SETTLE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The single writer of one machine's record.
///
/// It keeps the record in memory, applies each [`Command`] to a copy, writes the copy to
/// RocksDB (synced) and only then adopts it and publishes a new snapshot. A crash at any
/// point leaves either the old or the new record on disk, and the supervisor restarts the
/// actor from whatever is there.
pub struct MachineActor {
    record: MachineRecord,
    handle: Arc<MachineHandle>,
    store: Store,
    metrics: Metrics,
    /// Set by a write that failed: it may still have reached the disk (a write-ahead-log
    /// append whose sync failed is replayed when the store is reopened), so the record in
    /// memory may be behind the stored one. Holds the store's reopen count at the failure;
    /// the record is read back once the store has been reopened since.
    unsure_since: Option<u64>,
}

impl std::fmt::Debug for MachineActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineActor")
            .field("id", &self.record.id)
            .finish()
    }
}

impl MachineActor {
    pub(super) fn new(
        record: MachineRecord,
        handle: Arc<MachineHandle>,
        store: Store,
        metrics: Metrics,
    ) -> Self {
        Self {
            record,
            handle,
            store,
            metrics,
            unsure_since: None,
        }
    }

    /// Adopts `next` as the machine's record and publishes it.
    fn adopt(&mut self, next: MachineRecord) {
        if next.state != self.record.state {
            self.metrics
                .machines
                .with_label_values(&[self.record.state.as_str()])
                .dec();
            self.metrics
                .machines
                .with_label_values(&[next.state.as_str()])
                .inc();
        }
        self.record = next;
        self.publish();
    }

    /// After a failed write, reads the record back from the store, so that memory and the
    /// snapshot follow what the disk holds. The doubt ends only once the store has been
    /// reopened since the failure: until then a write-ahead-log record of the failed write
    /// may still be replayed. (Commands meanwhile work from the stored record; while the
    /// store is broken their own writes fail too.)
    fn settle(&mut self) -> Result<(), MachineError> {
        let Some(failed_at) = self.unsure_since else {
            return Ok(());
        };
        let reopened = self.store.reopened() != failed_at;
        let key = machine_key(&self.record.vault, self.record.id);
        if let Some(stored) = self.store.get::<MachineRecord>(Cf::Machines, &key)? {
            self.adopt(stored);
        }
        if reopened {
            self.unsure_since = None;
        }
        Ok(())
    }

    /// Repeats [`Self::settle`] until the doubt ends, so that a change that did reach the
    /// disk takes effect on the read path even if no further command comes.
    fn settle_later(&self, ctx: &mut Context<Self>) {
        use actix::AsyncContext as _;
        ctx.run_later(SETTLE_EVERY, |actor, ctx| {
            if actor.settle().is_err() || actor.unsure_since.is_some() {
                actor.settle_later(ctx);
            }
        });
    }

    fn publish(&self) {
        self.handle
            .publish(MachineSnapshot::from_record(&self.record));
    }

    /// The writes that store the next record, its expiry index entry and a consumed token.
    fn changes(
        &self,
        next: &MachineRecord,
        token: Option<&ConsumedToken>,
    ) -> Result<Writes, MachineError> {
        let mut writes = Writes::default();
        writes.put(Cf::Machines, &machine_key(&next.vault, next.id), next)?;
        let old_index = index_entry(&self.record);
        let new_index = index_entry(next);
        if old_index != new_index {
            if let Some(at) = old_index {
                writes.delete(Cf::Expiry, &expiry_key(at, next.id));
            }
            if let Some(at) = new_index {
                writes.put_raw(Cf::Expiry, &expiry_key(at, next.id), &[]);
            }
        }
        if let Some((key, record)) = token {
            writes.put(Cf::Bootstrap, key, record)?;
        }
        Ok(writes)
    }

    /// Writes `writes`, synced; with `audit`, in the same batch as its event.
    fn commit(
        &self,
        writes: Writes,
        audit: Option<(NewEvent, AuditLog)>,
    ) -> Result<(), MachineError> {
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
        Ok(())
    }

    /// Applies a command, persists the result and publishes the new snapshot.
    fn change(
        &mut self,
        cmd: Command,
        audit: Option<(NewEvent, AuditLog)>,
        ctx: &mut Context<Self>,
    ) -> Result<MachineRecord, MachineError> {
        if matches!(cmd, Command::Crash) {
            use actix::ActorContext as _;
            ctx.stop();
            return Err(MachineError::Restarting);
        }
        self.settle()?;
        let (next, token) = self.apply(cmd)?;
        let writes = self.changes(&next, token.as_ref())?;
        let reopened = self.store.reopened();
        if let Err(err) = self.commit(writes, audit) {
            if self.unsure_since.replace(reopened).is_none() {
                self.settle_later(ctx);
            }
            return Err(err);
        }
        self.adopt(next);
        Ok(self.record.clone())
    }

    fn apply(&self, cmd: Command) -> Result<(MachineRecord, Option<ConsumedToken>), MachineError> {
        let mut next = self.record.clone();
        let mut consumed = None;
        match cmd {
            Command::RegisterKey {
                public_key,
                token_key,
                now,
            } => {
                let record = self.register_key(&mut next, public_key, &token_key, now)?;
                consumed = Some((token_key, record));
            }
            Command::Approve { now } => {
                self.require(MachineState::Pending, "approved", now)?;
                next.state = MachineState::Active;
                next.approved_at = Some(now);
            }
            Command::Disable { reason, by, now } => {
                self.require_live("disabled", now)?;
                next.state = MachineState::Disabled;
                next.disabled = Some(Disabled {
                    reason,
                    by,
                    at: now,
                });
            }
            Command::SetMember { project, member } => {
                if member {
                    next.projects.insert(project);
                } else {
                    next.projects.remove(&project);
                }
            }
            Command::SetGrant { grant, granted } => {
                if granted {
                    next.grants.insert(grant);
                } else {
                    next.grants.remove(&grant);
                }
            }
            Command::SetGuardrails { spec } => {
                Guardrails::compile(&spec)?;
                next.guardrails = spec;
            }
            Command::Extend {
                to,
                reason,
                by,
                now,
            } => {
                self.require_live("extended", now)?;
                let current = next.expires_at().ok_or(MachineError::NotTemporary)?;
                if to <= current {
                    return Err(MachineError::NotLater { to, current });
                }
                let latest = latest_expiry(now).unwrap_or(DateTime::<Utc>::MAX_UTC);
                if to > latest {
                    return Err(MachineError::TooFar { to, latest });
                }
                let id = next.extensions.len() as u32 + 1;
                next.extensions.push(Extension {
                    id,
                    previous_expires_at: current,
                    new_expires_at: to,
                    reason,
                    by,
                    at: now,
                    reverted: None,
                });
            }
            Command::Revert {
                extension,
                reason,
                by,
                now,
            } => {
                let ext = next
                    .extensions
                    .iter_mut()
                    .find(|e| e.id == extension)
                    .ok_or(MachineError::NoSuchExtension(extension))?;
                if ext.reverted.is_some() {
                    return Err(MachineError::AlreadyReverted(extension));
                }
                ext.reverted = Some(Revert {
                    reason,
                    by,
                    at: now,
                });
            }
            Command::MarkExpired { now } => {
                if next.state.is_retained() || next.expires_at().is_none_or(|at| at > now) {
                    return Err(MachineError::WrongState {
                        state: next.state,
                        action: "expired",
                    });
                }
                next.state = MachineState::Expired;
                next.expired_at = Some(now);
            }
            Command::Crash => return Err(MachineError::Restarting),
        }
        Ok((next, consumed))
    }

    fn register_key(
        &self,
        next: &mut MachineRecord,
        public_key: [u8; 32],
        token_key: &[u8],
        now: DateTime<Utc>,
    ) -> Result<BootstrapRecord, MachineError> {
        let mut token: BootstrapRecord = self
            .store
            .get(Cf::Bootstrap, token_key)?
            .ok_or(MachineError::TokenUnusable)?;
        let live = next.expires_at().is_none_or(|at| now < at);
        if token.machine_id != next.id || !token.is_usable(now) || !live {
            return Err(MachineError::TokenUnusable);
        }
        self.require(MachineState::Created, "registered", now)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&public_key)
            .map_err(|_| MachineError::WeakKey)?;
        if !crate::protocol::key_is_usable(&key) {
            return Err(MachineError::WeakKey);
        }
        token.used_at = Some(now);
        next.public_key = Some(STANDARD.encode(public_key));
        next.registered_at = Some(now);
        next.state = MachineState::Pending;
        Ok(token)
    }

    fn require(
        &self,
        state: MachineState,
        action: &'static str,
        now: DateTime<Utc>,
    ) -> Result<(), MachineError> {
        let current = self.record.state_at(now);
        if current != state {
            return Err(MachineError::WrongState {
                state: current,
                action,
            });
        }
        Ok(())
    }

    fn require_live(&self, action: &'static str, now: DateTime<Utc>) -> Result<(), MachineError> {
        let current = self.record.state_at(now);
        if current.is_retained() {
            return Err(MachineError::WrongState {
                state: current,
                action,
            });
        }
        Ok(())
    }
}

/// The second the sweep should look at this machine, if it still needs to.
fn index_entry(record: &MachineRecord) -> Option<i64> {
    if record.state.is_retained() {
        return None;
    }
    record.expires_at().map(|t| t.timestamp())
}

impl Actor for MachineActor {
    type Context = Context<Self>;
}

impl Supervised for MachineActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.metrics.actor_restarts.inc();
        let key = machine_key(&self.record.vault, self.record.id);
        match self.store.get::<MachineRecord>(Cf::Machines, &key) {
            Ok(Some(record)) => self.adopt(record),
            Ok(None) => {
                tracing::error!(machine.id = %self.record.id, "machine record missing on restart")
            }
            Err(err) => {
                tracing::error!(machine.id = %self.record.id, error = %err, "cannot reload machine on restart")
            }
        }
        self.publish();
        tracing::info!(machine.id = %self.record.id, "machine actor restarted");
    }
}

impl Handler<Command> for MachineActor {
    type Result = Result<MachineRecord, MachineError>;

    fn handle(&mut self, cmd: Command, ctx: &mut Context<Self>) -> Self::Result {
        self.change(cmd, None, ctx)
    }
}

impl Handler<Audited> for MachineActor {
    type Result = Result<MachineRecord, MachineError>;

    fn handle(&mut self, msg: Audited, ctx: &mut Context<Self>) -> Self::Result {
        self.change(msg.cmd, Some((msg.event, msg.log)), ctx)
    }
}
