use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{MachineId, VaultName};

/// The chain hash that precedes the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How a request or change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A machine request that was served.
    Allowed,
    /// A machine request refused by a rule (state, nonce, guardrail, grant).
    Denied,
    /// A request naming a real machine whose authentication failed.
    Failed,
    /// An admin change that took effect.
    Ok,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
            Outcome::Ok => "ok",
        }
    }
}

/// An event as the server reports it, before the writer numbers and chains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub time: DateTime<Utc>,
    pub vault: VaultName,
    pub machine: Option<MachineId>,
    /// `machine:{id}`, `admin:{token id}` or `system`; never a token.
    pub actor: String,
    pub action: &'static str,
    /// `project/name` of the secret concerned, if any.
    pub secret: Option<String>,
    pub outcome: Outcome,
    /// The stable error code of a denial or failure.
    pub reason: Option<&'static str>,
    pub source_ip: Option<String>,
    pub country: Option<String>,
    pub request_id: String,
    /// Extra facts of an admin change, such as an extension's reason. Never a secret value.
    pub detail: Option<serde_json::Value>,
}

/// An event as stored: numbered, and chained to the one before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub vault: VaultName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineId>,
    pub actor: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// Hash of the previous event ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// `SHA-256(prev_hash || this event without its hash)`, lower-case hex.
    pub hash: String,
}

impl AuditEvent {
    /// Numbers and chains a new event after the event whose hash is `prev_hash`.
    pub fn seal(new: NewEvent, seq: u64, prev_hash: &str) -> Self {
        let mut event = Self {
            seq,
            time: new.time,
            vault: new.vault,
            machine: new.machine,
            actor: new.actor,
            action: new.action.to_owned(),
            secret: new.secret,
            outcome: new.outcome,
            reason: new.reason.map(str::to_owned),
            source_ip: new.source_ip,
            country: new.country,
            request_id: new.request_id,
            detail: new.detail,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        event.hash = chain_hash(&event);
        event
    }
}

/// The hash an event should carry: over its previous hash and its content, hash excluded.
pub fn chain_hash(event: &AuditEvent) -> String {
    let mut body = event.clone();
    body.hash.clear();
    // Serialising a plain struct of strings and integers cannot fail.
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    hex::encode(
        Sha256::new()
            .chain_update(event.prev_hash.as_bytes())
            .chain_update(&bytes)
            .finalize(),
    )
}
