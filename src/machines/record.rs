use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Lifetime, MachineId, ProjectName, SecretName, VaultName};
use crate::guardrails::GuardrailSpec;

/// Where a machine is in its lifecycle, as stored.
///
/// A temporary machine past its expiry is expired whatever this says: the read path compares
/// the clock with the expiry on every request, and the sweep only catches the record up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    /// Created by an admin; waiting for the bootstrap script to register a key.
    Created,
    /// Key registered; waiting for an admin to approve it.
    Pending,
    Active,
    /// Disabled by an admin before its expiry.
    Disabled,
    /// Past its expiry and marked so by the sweep.
    Expired,
}

impl MachineState {
    pub const ALL: [MachineState; 5] = [
        MachineState::Created,
        MachineState::Pending,
        MachineState::Active,
        MachineState::Disabled,
        MachineState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Created => "created",
            MachineState::Pending => "pending",
            MachineState::Active => "active",
            MachineState::Disabled => "disabled",
            MachineState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Expired and disabled machines are kept on record but can do nothing.
    pub fn is_retained(self) -> bool {
        matches!(self, MachineState::Disabled | MachineState::Expired)
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Permission to read one secret of one project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    pub project: ProjectName,
    pub secret: SecretName,
}

/// How and why a machine was disabled by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    pub reason: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// One push of the expiry, kept forever, reverted or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    pub id: u32,
    pub previous_expires_at: DateTime<Utc>,
    pub new_expires_at: DateTime<Utc>,
    pub reason: String,
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<Revert>,
}

/// The undoing of an extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revert {
    pub reason: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// Everything durable about one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub id: MachineId,
    pub vault: VaultName,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub temporary: bool,
    pub state: MachineState,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Lifetime>,
    /// The expiry fixed at creation; extensions move the effective expiry, not this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub extensions: Vec<Extension>,
    /// Standard base64 of the 32-byte Ed25519 public key, once registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub projects: BTreeSet<ProjectName>,
    #[serde(default)]
    pub grants: BTreeSet<Grant>,
    #[serde(default)]
    pub guardrails: GuardrailSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<DateTime<Utc>>,
}

impl MachineRecord {
    /// The expiry in force: the target of the newest extension not reverted, or the
    /// original expiry when there is none.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.extensions
            .iter()
            .rev()
            .find(|e| e.reverted.is_none())
            .map(|e| e.new_expires_at)
            .or(self.original_expires_at)
    }

    /// The state as of `now`: a machine past its expiry is expired, whatever is stored.
    pub fn state_at(&self, now: DateTime<Utc>) -> MachineState {
        match self.expires_at() {
            Some(at) if at <= now && self.state != MachineState::Disabled => MachineState::Expired,
            _ => self.state,
        }
    }
}
