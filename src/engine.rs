//! The running server's shared state: store, machines, nonces, audit, metrics, geo.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::audit::{AuditLog, NewEvent, Outcome};
use crate::config::Config;
use crate::domain::{MachineId, VaultName};
use crate::guardrails::{GeoDb, IpAllowlist};
use crate::machines::Machines;
use crate::metrics::Metrics;
use crate::nonce::NonceCache;
use crate::protocol::SignatureVerifier;
use crate::storage::Store;
use crate::vaults::Vaults;

/// Failed authentications recorded per machine per window (a minute by default); the rest
/// are counted and summarised.
pub const FAILED_AUTH_EVENTS_PER_MINUTE: u32 = 20;

/// Everything a request handler needs, shared by all workers.
#[derive(Debug)]
pub struct Engine {
    pub config: Config,
    /// Base URL that bootstrap commands point at.
    pub public_url: String,
    pub store: Store,
    pub vaults: Vaults,
    pub machines: Machines,
    pub nonces: NonceCache,
    pub audit: AuditLog,
    pub metrics: Metrics,
    /// Checks machine signatures, in batches across concurrent requests.
    pub verifier: SignatureVerifier,
    pub geo: GeoDb,
    pub trusted_proxies: IpAllowlist,
    /// Unix second the process started; requests signed at or before it are refused.
    pub started_at: i64,
    failed_auth: moka::sync::Cache<MachineId, Arc<FailedAuth>>,
}

/// Failed authentications of one machine in the current minute.
#[derive(Debug)]
struct FailedAuth {
    vault: VaultName,
    count: AtomicU32,
}

/// Who made a request and where from, for its audit event.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: String,
    pub source_ip: std::net::IpAddr,
}

impl Engine {
    #[expect(clippy::too_many_arguments, reason = "assembled once, at start-up")]
    pub fn new(
        config: Config,
        public_url: String,
        store: Store,
        vaults: Vaults,
        machines: Machines,
        audit: AuditLog,
        metrics: Metrics,
        geo: GeoDb,
        started_at: i64,
    ) -> Result<Self, crate::config::ConfigError> {
        let trusted_proxies = config.trusted_proxies()?;
        let summary_log = audit.clone();
        let window = config.audit.failed_auth_window;
        // When a machine's minute ends, the events the limit dropped are summarised in one.
        let summarise = move |machine: Arc<MachineId>, entry: Arc<FailedAuth>, _| {
            let seen = entry.count.load(Ordering::Relaxed);
            let Some(dropped) = seen
                .checked_sub(FAILED_AUTH_EVENTS_PER_MINUTE)
                .filter(|d| *d > 0)
            else {
                return;
            };
            summary_log.record_later(NewEvent {
                time: Utc::now(),
                vault: entry.vault.clone(),
                machine: Some(*machine),
                actor: "system".to_owned(),
                action: "auth.failures_dropped",
                secret: None,
                outcome: Outcome::Failed,
                reason: None,
                source_ip: None,
                country: None,
                request_id: uuid::Uuid::new_v4().simple().to_string(),
                detail: Some(
                    serde_json::json!({"dropped": dropped, "window_seconds": window.as_secs()}),
                ),
            });
        };
        Ok(Self {
            nonces: NonceCache::new(config.auth.skew_seconds),
            verifier: SignatureVerifier::new(
                config.auth.max_verify_batch,
                metrics.verify_batch_size.clone(),
                metrics.verify_batch_fallbacks.clone(),
            ),
            failed_auth: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .eviction_listener(summarise)
                .build(),
            config,
            public_url,
            store,
            vaults,
            machines,
            audit,
            metrics,
            geo,
            trusted_proxies,
            started_at,
        })
    }

    /// Builds an audit event for this request.
    #[expect(clippy::too_many_arguments, reason = "one field each of the event")]
    pub fn event(
        &self,
        meta: &RequestMeta,
        vault: &VaultName,
        machine: Option<MachineId>,
        actor: String,
        action: &'static str,
        secret: Option<String>,
        outcome: Outcome,
        reason: Option<&'static str>,
        country: Option<String>,
        time: DateTime<Utc>,
    ) -> NewEvent {
        NewEvent {
            time,
            vault: vault.clone(),
            machine,
            actor,
            action,
            secret,
            outcome,
            reason,
            source_ip: Some(meta.source_ip.to_string()),
            country,
            request_id: meta.request_id.clone(),
            detail: None,
        }
    }

    /// Records a failed authentication for a real machine, unless that machine has already
    /// had its share this minute; dropped events are counted.
    pub fn record_failed_auth(&self, event: NewEvent, machine: MachineId) {
        let entry = self.failed_auth.get_with(machine, || {
            Arc::new(FailedAuth {
                vault: event.vault.clone(),
                count: AtomicU32::new(0),
            })
        });
        if entry.count.fetch_add(1, Ordering::Relaxed) >= FAILED_AUTH_EVENTS_PER_MINUTE {
            self.metrics.audit_rate_limited.inc();
            return;
        }
        self.audit.record_later(event);
    }

    /// Lets time-based housekeeping run (the failed-authentication summaries); called by
    /// the once-a-second maintenance tick.
    pub fn housekeeping(&self) {
        self.failed_auth.run_pending_tasks();
    }

    /// Writes what is still pending before the process exits: the summaries of
    /// failed-authentication windows still open, then every queued audit event, synced;
    /// then closes the store.
    pub async fn shutdown(&self) {
        // Removing an entry summarises its window, as its expiry would.
        for (machine, _) in self.failed_auth.iter() {
            self.failed_auth.invalidate(&*machine);
        }
        self.failed_auth.run_pending_tasks();
        match self.audit.drain().await {
            Ok(()) => tracing::info!("audit log drained"),
            Err(_) => tracing::error!("audit events still queued at shutdown were not written"),
        }
        if let Err(err) = self.store.close() {
            tracing::error!(error = %err, "the store could not be closed cleanly");
        }
    }
}
