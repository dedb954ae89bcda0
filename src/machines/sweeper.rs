//! The timer actor that marks machines expired.
//!
//! It walks the expiry index from its start up to now, so a sweep costs what has expired,
//! not what exists. Requests never wait for it: the read path refuses an expired machine
//! on its own. The sweep only brings the stored state up to date and records
//! `machine.expired` in the audit log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, WrapFuture};
use chrono::{DateTime, Utc};

use super::actor::Command;
use crate::audit::{NewEvent, Outcome};
use crate::domain::MachineId;
use crate::engine::Engine;
use crate::storage::{Cf, Store, StoreError};

/// Runs [`sweep`] on a fixed interval.
#[derive(Debug)]
pub struct Sweeper {
    engine: Arc<Engine>,
    interval: Duration,
}

impl Sweeper {
    pub fn new(engine: Arc<Engine>, interval: Duration) -> Self {
        Self { engine, interval }
    }
}

impl Actor for Sweeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // One sweep right away catches machines that expired while the server was down.
        let engine = self.engine.clone();
        ctx.spawn(
            async move {
                sweep(&engine, Utc::now()).await;
            }
            .into_actor(self),
        );
        ctx.run_interval(self.interval, |act, ctx| {
            let engine = act.engine.clone();
            ctx.spawn(
                async move {
                    sweep(&engine, Utc::now()).await;
                }
                .into_actor(act),
            );
        });
    }
}

/// Ids of machines whose expiry is at or before `now`, from the index.
pub fn due(store: &Store, now: DateTime<Utc>) -> Result<Vec<MachineId>, StoreError> {
    let limit = now.timestamp();
    let mut ids = Vec::new();
    store.for_each_from(Cf::Expiry, &[], |key, _| {
        let (Some(at), Some(id)) = (key.get(..8), key.get(8..24)) else {
            return Ok(true);
        };
        let at = i64::from_be_bytes(at.try_into().unwrap_or_default());
        if at > limit {
            return Ok(false);
        }
        ids.push(MachineId::from_bytes(id.try_into().unwrap_or_default()));
        Ok(true)
    })?;
    Ok(ids)
}

/// One sweep: marks every due machine expired and audits it. Returns how many it marked.
pub async fn sweep(engine: &Engine, now: DateTime<Utc>) -> usize {
    let started = Instant::now();
    let ids = match due(&engine.store, now) {
        Ok(ids) => ids,
        Err(err) => {
            tracing::error!(error = %err, "expiry sweep cannot read its index");
            return 0;
        }
    };
    let mut marked = 0;
    for id in ids {
        let Some(snapshot) = engine.machines.get(id).map(|h| Arc::clone(&h.snapshot())) else {
            continue;
        };
        let expires_at = snapshot
            .expires_at
            .and_then(|at| chrono::DateTime::<Utc>::from_timestamp(at, 0));
        // The mark and its event are written in one batch.
        let event = NewEvent {
            time: now,
            vault: snapshot.vault.clone(),
            machine: Some(id),
            actor: "system".to_owned(),
            action: "machine.expired",
            secret: None,
            outcome: Outcome::Ok,
            reason: None,
            source_ip: None,
            country: None,
            request_id: uuid::Uuid::new_v4().simple().to_string(),
            detail: Some(serde_json::json!({ "expires_at": expires_at })),
        };
        let cmd = Command::MarkExpired { now };
        match engine
            .machines
            .command_audited(id, cmd, event, engine.audit.clone())
            .await
        {
            Ok(_) => {
                marked += 1;
                engine.metrics.expiries.inc();
                tracing::info!(machine.id = %id, "machine expired");
            }
            Err(err) => {
                tracing::warn!(machine.id = %id, error = %err, "sweep could not mark machine")
            }
        }
    }
    engine.metrics.sweeps.inc();
    engine
        .metrics
        .sweep_seconds
        .observe(started.elapsed().as_secs_f64());
    engine.metrics.last_sweep.set(Utc::now().timestamp());
    marked
}
