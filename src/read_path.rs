//! The machine request pipeline: authenticate, check lifecycle and nonce, evaluate the
//! guardrails, check the grant, fetch the secret, and audit the result.
//!
//! Checks run cheapest first, as the protocol lays out: header syntax, timestamp window,
//! machine lookup and signature, lifecycle, nonce, then the vault's and the machine's
//! guardrails, membership and grant, and last the secret's own policy.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::audit::{NewEvent, Outcome};
use crate::domain::{MachineId, VaultName};
use crate::engine::{Engine, RequestMeta};
use crate::guardrails::{Denial, Source};
use crate::machines::{Lifecycle, MachineSnapshot};
use crate::nonce::Replayed;
use crate::protocol::{
    body_digest, check_skew, verify, AuthHeaders, HeaderError, SkewError, Verified,
};
use crate::vaults::{SecretValue, VaultAllowlist, VaultError};

/// Why a machine request was refused. Each variant has one stable code.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Header(#[from] HeaderError),
    #[error("{0}")]
    Skew(#[from] SkewError),
    #[error("authentication failed")]
    AuthenticationFailed,
    #[error("the machine has expired")]
    Expired,
    #[error("the machine is disabled")]
    Disabled,
    #[error("the machine is waiting for approval")]
    Pending,
    #[error("this nonce was already used; sign every request with a fresh one")]
    Replayed,
    #[error("{0}")]
    Guardrail(Denial),
    #[error("the machine is not a member of this project")]
    NotMember,
    #[error("the machine is not granted this secret")]
    NotGranted,
    #[error("no such secret")]
    SecretNotFound,
    #[error("the audit log cannot be written; try again later")]
    AuditUnavailable,
    #[error("internal error")]
    Internal(String),
}

impl ReadError {
    /// The stable code clients and audit records see.
    pub fn code(&self) -> &'static str {
        match self {
            ReadError::Header(_) => "missing_or_malformed_auth",
            ReadError::Skew(_) => "stale_timestamp",
            ReadError::AuthenticationFailed => "authentication_failed",
            ReadError::Expired => "machine_expired",
            ReadError::Disabled => "machine_disabled",
            ReadError::Pending => "machine_pending",
            ReadError::Replayed => "nonce_replayed",
            ReadError::Guardrail(d) => d.code(),
            ReadError::NotMember => "not_project_member",
            ReadError::NotGranted => "secret_not_granted",
            ReadError::SecretNotFound => "secret_not_found",
            ReadError::AuditUnavailable => "audit_unavailable",
            ReadError::Internal(_) => "internal_error",
        }
    }
}

impl From<Denial> for ReadError {
    fn from(d: Denial) -> Self {
        ReadError::Guardrail(d)
    }
}

impl From<Replayed> for ReadError {
    fn from(_: Replayed) -> Self {
        ReadError::Replayed
    }
}

impl From<VaultError> for ReadError {
    fn from(e: VaultError) -> Self {
        ReadError::Internal(e.to_string())
    }
}

impl From<crate::storage::StoreError> for ReadError {
    fn from(e: crate::storage::StoreError) -> Self {
        match e {
            // The store is being reopened after a failed audit write: fail closed, briefly.
            crate::storage::StoreError::Unavailable => ReadError::AuditUnavailable,
            other => ReadError::Internal(other.to_string()),
        }
    }
}

/// A machine request as it came off the wire.
#[derive(Debug)]
pub struct MachineRequest<'a> {
    pub vault: &'a VaultName,
    pub method: &'a str,
    /// The request target exactly as sent: path and query.
    pub target: &'a str,
    pub body: &'a [u8],
    pub auth: Result<AuthHeaders, HeaderError>,
    pub meta: RequestMeta,
}

impl MachineRequest<'_> {
    fn ip(&self) -> IpAddr {
        self.meta.source_ip
    }

    /// The audit event of this request by `machine`; callers add the secret and country.
    fn event(
        &self,
        machine: MachineId,
        action: &'static str,
        outcome: Outcome,
        reason: Option<&'static str>,
        now: DateTime<Utc>,
    ) -> NewEvent {
        NewEvent {
            time: now,
            vault: self.vault.clone(),
            machine: Some(machine),
            actor: format!("machine:{machine}"),
            action,
            secret: None,
            outcome,
            reason,
            source_ip: Some(self.meta.source_ip.to_string()),
            country: None,
            request_id: self.meta.request_id.clone(),
            detail: None,
        }
    }
}

impl Engine {
    /// Reads the newest version of a secret for a signed machine request.
    pub async fn read_secret(
        &self,
        req: MachineRequest<'_>,
        project: &str,
        name: &str,
    ) -> Result<SecretValue, ReadError> {
        let now = Utc::now();
        let snapshot = self.authenticate(&req, now, "secret.read").await?;
        let source = Source::new(now, req.ip(), &self.geo);

        let result = self.authorize(&snapshot, &source, req.vault, project, name);
        let (outcome, reason) = match &result {
            Ok(_) => (Outcome::Allowed, None),
            Err(e) => (Outcome::Denied, Some(e.code())),
        };
        let mut event = req.event(snapshot.id, "secret.read", outcome, reason, now);
        event.secret = Some(format!("{project}/{name}"));
        event.country = source.looked_up_country().map(|c| c.to_string());
        match result {
            Ok(value) => {
                self.audit
                    .record(event)
                    .await
                    .map_err(|_| ReadError::AuditUnavailable)?;
                Ok(value)
            }
            Err(e) => {
                let _ = self.audit.record(event).await;
                Err(e)
            }
        }
    }

    /// Answers a machine's question about itself.
    pub async fn whoami(&self, req: MachineRequest<'_>) -> Result<Arc<MachineSnapshot>, ReadError> {
        let now = Utc::now();
        let snapshot = self.authenticate(&req, now, "machine.whoami").await?;
        let event = req.event(snapshot.id, "machine.whoami", Outcome::Allowed, None, now);
        self.audit
            .record(event)
            .await
            .map_err(|_| ReadError::AuditUnavailable)?;
        Ok(snapshot)
    }

    /// Steps 1 to 5 of the protocol. Returns the machine's snapshot once the signature
    /// holds, the machine is active and the nonce was fresh; audits every refusal that
    /// names a real machine of this vault.
    async fn authenticate(
        &self,
        req: &MachineRequest<'_>,
        now: DateTime<Utc>,
        action: &'static str,
    ) -> Result<Arc<MachineSnapshot>, ReadError> {
        let (snapshot, verified) = self.verify_request(req, now, action).await?;
        let Err(err) = self.admit(&snapshot, &verified, now) else {
            return Ok(snapshot);
        };
        // A verified machine's refusals are audited as durably as its reads.
        let event = req.event(snapshot.id, action, Outcome::Denied, Some(err.code()), now);
        let _ = self.audit.record(event).await;
        Err(err)
    }

    /// Steps 1 to 3: headers, timestamp, machine and signature. Failures that name a real
    /// machine of this vault are audited, under the per-machine rate limit.
    async fn verify_request(
        &self,
        req: &MachineRequest<'_>,
        now: DateTime<Utc>,
        action: &'static str,
    ) -> Result<(Arc<MachineSnapshot>, Verified), ReadError> {
        let headers = req.auth.clone()?;
        let snapshot = self
            .machines
            .get(headers.machine_id)
            .map(|h| Arc::clone(&h.snapshot()))
            .filter(|s| &s.vault == req.vault);
        let failed = |err: ReadError| {
            if let Some(s) = &snapshot {
                let event = req.event(s.id, action, Outcome::Failed, Some(err.code()), now);
                self.record_failed_auth(event, s.id);
            }
            err
        };

        let skew = self.config.auth.skew_seconds;
        check_skew(headers.timestamp, now.timestamp(), skew, self.started_at)
            .map_err(|e| failed(e.into()))?;
        let Some(key) = snapshot.as_ref().and_then(|s| s.key) else {
            return Err(failed(ReadError::AuthenticationFailed));
        };
        let digest = body_digest(req.body);
        let verified = verify(
            &self.verifier,
            key,
            headers,
            req.method,
            req.target,
            &digest,
        )
        .await;
        let Some(verified) = verified else {
            self.metrics
                .signature_verifications
                .with_label_values(&["invalid"])
                .inc();
            return Err(failed(ReadError::AuthenticationFailed));
        };
        self.metrics
            .signature_verifications
            .with_label_values(&["valid"])
            .inc();
        let snapshot = snapshot.ok_or(ReadError::AuthenticationFailed)?;
        Ok((snapshot, verified))
    }

    /// Steps 4 and 5: the machine must be active, and only then is the nonce consumed.
    fn admit(
        &self,
        snapshot: &MachineSnapshot,
        verified: &Verified,
        now: DateTime<Utc>,
    ) -> Result<(), ReadError> {
        match snapshot.lifecycle(now.timestamp()) {
            Lifecycle::Active => {}
            Lifecycle::Expired => return Err(ReadError::Expired),
            Lifecycle::Disabled => return Err(ReadError::Disabled),
            Lifecycle::Pending => return Err(ReadError::Pending),
        }
        self.nonces.consume(
            verified.machine_id(),
            verified.nonce(),
            verified.timestamp(),
            now.timestamp(),
        )?;
        Ok(())
    }

    /// Step 6: guardrails in their layers, membership and grant, then the secret's policy.
    fn authorize(
        &self,
        snapshot: &MachineSnapshot,
        source: &Source<'_>,
        vault: &VaultName,
        project: &str,
        name: &str,
    ) -> Result<SecretValue, ReadError> {
        match &*self.vaults.ip_allowlist(vault)? {
            VaultAllowlist::Open => {}
            VaultAllowlist::List(list) if list.contains(source.ip) => {}
            VaultAllowlist::List(_) => return Err(Denial::IpNotAllowed.into()),
            VaultAllowlist::Invalid => return Err(Denial::GuardrailInvalid.into()),
        }
        let guardrails = snapshot
            .guardrails
            .as_ref()
            .ok_or(Denial::GuardrailInvalid)?;
        guardrails.evaluate(source)?;

        if !snapshot.is_member(project) {
            return Err(ReadError::NotMember);
        }
        if !snapshot.is_granted(project, name) {
            return Err(ReadError::NotGranted);
        }

        let head = self
            .vaults
            .head(vault, project, name)?
            .ok_or(ReadError::SecretNotFound)?;
        let policy = head.policy.as_ref().ok_or(Denial::GuardrailInvalid)?;
        policy.evaluate(source)?;
        self.vaults
            .value(vault, project, name, head.version)?
            .ok_or(ReadError::SecretNotFound)
    }
}
