//! Machine actors under supervision: a crashed actor is restarted from the stored state.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

use chrono::{TimeDelta, Utc};
use tempvault::bootstrap::{new_token, BootstrapRecord};
use tempvault::domain::{MachineId, ProjectName, SecretName, VaultName};
use tempvault::machines::{
    Command, Grant, Lifecycle, MachineError, MachineRecord, MachineState, Machines,
};
use tempvault::metrics::Metrics;
use tempvault::storage::Store;

fn record(vault: &VaultName) -> MachineRecord {
    let now = Utc::now();
    MachineRecord {
        id: MachineId::random(),
        vault: vault.clone(),
        name: "crashy".into(),
        description: None,
        temporary: true,
        state: MachineState::Created,
        created_at: now,
        created_by: "admin:test".into(),
        lifetime: None,
        original_expires_at: Some(now + TimeDelta::hours(2)),
        extensions: vec![],
        public_key: None,
        registered_at: None,
        approved_at: None,
        projects: Default::default(),
        grants: Default::default(),
        guardrails: Default::default(),
        disabled: None,
        expired_at: None,
    }
}

#[actix_rt::test]
async fn a_killed_machine_actor_comes_back_with_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = Metrics::new();
    let machines = Machines::new(
        store.clone(),
        metrics.clone(),
        vec![actix::Arbiter::new().handle()],
    );
    let vault = VaultName::parse("default").unwrap();
    let rec = record(&vault);
    let id = rec.id;
    let token = new_token();
    let token_record = BootstrapRecord {
        vault: vault.clone(),
        machine_id: id,
        expires_at: Utc::now() + TimeDelta::hours(1),
        used_at: None,
    };
    machines
        .create(rec, &token.key, &token_record, None)
        .unwrap();

    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let now = Utc::now();
    let cmd = Command::RegisterKey {
        public_key: key.verifying_key().to_bytes(),
        token_key: token.key.clone(),
        now,
    };
    machines.command(id, cmd).await.unwrap();
    machines
        .command(id, Command::Approve { now })
        .await
        .unwrap();
    let project = ProjectName::parse("app").unwrap();
    let before = machines
        .command(
            id,
            Command::SetMember {
                project: project.clone(),
                member: true,
            },
        )
        .await
        .unwrap();

    // Kill the actor.
    let crashed = machines.command(id, Command::Crash).await;
    assert!(
        matches!(crashed, Err(MachineError::Restarting)),
        "{crashed:?}"
    );
    let restarted = common_wait(|| metrics.actor_restarts.get() == 1).await;
    assert!(restarted, "supervisor did not restart the actor");

    // Same state, as published to the read path and as stored.
    let snapshot = machines.get(id).unwrap().snapshot().clone();
    assert_eq!(
        snapshot.lifecycle(Utc::now().timestamp()),
        Lifecycle::Active
    );
    assert!(snapshot.is_member("app"));
    assert_eq!(
        snapshot.key.map(|k| k.to_bytes()),
        Some(key.verifying_key().to_bytes())
    );
    assert_eq!(machines.record(&vault, id).unwrap().unwrap(), before);

    // The restarted actor is the writer again: a new change lands and persists.
    let grant = Grant {
        project,
        secret: SecretName::parse("key").unwrap(),
    };
    let after = machines
        .command(
            id,
            Command::SetGrant {
                grant,
                granted: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(after.grants.len(), 1);
    assert_eq!(after.projects, before.projects);
    assert_eq!(machines.record(&vault, id).unwrap().unwrap(), after);
    assert!(machines
        .get(id)
        .unwrap()
        .snapshot()
        .is_granted("app", "key"));

    // A second registration with the spent token is refused.
    let again = Command::RegisterKey {
        public_key: key.verifying_key().to_bytes(),
        token_key: token.key,
        now,
    };
    assert!(matches!(
        machines.command(id, again).await,
        Err(MachineError::TokenUnusable)
    ));
}

async fn common_wait(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    f()
}
