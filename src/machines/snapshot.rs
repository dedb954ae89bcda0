use std::collections::{HashMap, HashSet};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;

use super::record::{MachineRecord, MachineState};
use crate::domain::{MachineId, ProjectName, SecretName, VaultName};
use crate::guardrails::Guardrails;

/// What the read path needs to know about a machine, frozen at one moment.
///
/// Built by the machine's actor from its record and swapped in whole; readers never see a
/// half-applied change.
#[derive(Debug)]
pub struct MachineSnapshot {
    pub id: MachineId,
    pub vault: VaultName,
    pub state: MachineState,
    /// Unix seconds of the expiry in force, if the machine has one.
    pub expires_at: Option<i64>,
    pub key: Option<VerifyingKey>,
    projects: HashSet<ProjectName>,
    grants: HashMap<ProjectName, HashSet<SecretName>>,
    /// `None` when a stored rule no longer compiles: every read is then denied.
    pub guardrails: Option<Guardrails>,
}

/// Whether a machine may act at a given second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Active,
    Pending,
    Disabled,
    Expired,
}

impl MachineSnapshot {
    /// Compiles a record into a snapshot. A key or rule that does not parse leaves the
    /// machine unable to authenticate or unable to read: it never widens access.
    pub fn from_record(record: &MachineRecord) -> Self {
        let key = record.public_key.as_deref().and_then(parse_key);
        let guardrails = match Guardrails::compile(&record.guardrails) {
            Ok(g) => Some(g),
            Err(err) => {
                tracing::warn!(machine.id = %record.id, error = %err, "stored guardrail does not compile; reads denied");
                None
            }
        };
        let mut grants: HashMap<ProjectName, HashSet<SecretName>> = HashMap::new();
        for g in &record.grants {
            grants
                .entry(g.project.clone())
                .or_default()
                .insert(g.secret.clone());
        }
        Self {
            id: record.id,
            vault: record.vault.clone(),
            state: record.state,
            expires_at: record.expires_at().map(|t| t.timestamp()),
            key,
            projects: record.projects.iter().cloned().collect(),
            grants,
            guardrails,
        }
    }

    /// The machine's standing at Unix second `now`; expiry wins over everything else but
    /// a manual disable.
    pub fn lifecycle(&self, now: i64) -> Lifecycle {
        if self.state == MachineState::Disabled {
            return Lifecycle::Disabled;
        }
        if self.state == MachineState::Expired || self.expires_at.is_some_and(|at| now >= at) {
            return Lifecycle::Expired;
        }
        match self.state {
            MachineState::Active => Lifecycle::Active,
            _ => Lifecycle::Pending,
        }
    }

    pub fn is_member(&self, project: &str) -> bool {
        self.projects.contains(project)
    }

    pub fn is_granted(&self, project: &str, secret: &str) -> bool {
        self.grants.get(project).is_some_and(|s| s.contains(secret))
    }
}

fn parse_key(b64: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = STANDARD.decode(b64).ok()?.try_into().ok()?;
    let key = VerifyingKey::from_bytes(&bytes).ok()?;
    crate::protocol::key_is_usable(&key).then_some(key)
}
