//! Vaults, their projects and secrets, and vault-wide settings.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use secrecy::SecretBox;
use serde::{Deserialize, Serialize};

use crate::audit::ChangeEvent;
use crate::domain::{ProjectName, SecretName, VaultName};
use crate::guardrails::{GuardrailSpec, Guardrails, IpAllowlist, RuleError};
use crate::read_cache::ReadCache;
use crate::storage::{self, Cf, SealError, Sealer, Store, StoreError};

/// Why a vault, project or secret operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault {0} already exists")]
    VaultExists(VaultName),
    #[error("vault {0} does not exist")]
    NoVault(VaultName),
    #[error("project {0} already exists")]
    ProjectExists(ProjectName),
    #[error("project {0} does not exist")]
    NoProject(ProjectName),
    #[error("secret value is larger than {0} bytes")]
    TooLarge(usize),
    #[error("policy: {0}")]
    Policy(#[from] RuleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditUnavailable),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaultRecord {
    pub name: VaultName,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectRecord {
    pub name: ProjectName,
    pub created_at: DateTime<Utc>,
}

/// The newest version of a secret and its access policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretHead {
    pub version: u32,
    #[serde(default)]
    pub policy: GuardrailSpec,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// The vault-wide IP allowlist as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAllowlistSetting {
    pub cidrs: Vec<String>,
}

/// A secret read from the store, with its compiled policy.
#[derive(Debug)]
pub struct SecretValue {
    pub version: u32,
    pub value: SecretBox<Vec<u8>>,
}

/// The compiled policy of a secret's newest version; `None` when it no longer compiles.
#[derive(Debug)]
pub struct CompiledHead {
    pub version: u32,
    pub policy: Option<Guardrails>,
}

/// Access to vault data. Secret values go through the [`Sealer`] both ways.
#[derive(Debug)]
pub struct Vaults {
    store: Store,
    sealer: Sealer,
    /// Serialises secret writes, so that two writers never pick the same version number.
    write_lock: Mutex<()>,
    heads: ReadCache<Vec<u8>, CompiledHead>,
    ip_allowlists: ReadCache<VaultName, VaultAllowlist>,
}

fn secret_key(vault: &VaultName, project: &str, name: &str) -> Vec<u8> {
    storage::key(&[vault.as_str(), project, name])
}

fn version_key(head_key: &[u8], version: u32) -> Vec<u8> {
    let mut k = head_key.to_vec();
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

const ALLOWLIST_SETTING: &str = "ip-allowlist";

impl Vaults {
    pub fn new(store: Store, sealer: Sealer) -> Self {
        Self {
            store,
            sealer,
            write_lock: Mutex::new(()),
            heads: ReadCache::new(100_000),
            ip_allowlists: ReadCache::new(10_000),
        }
    }

    pub fn exists(&self, vault: &VaultName) -> Result<bool, StoreError> {
        self.store.exists(Cf::Vaults, vault.as_str().as_bytes())
    }

    pub fn any(&self) -> Result<bool, StoreError> {
        Ok(self.store.last_key(Cf::Vaults)?.is_some())
    }

    /// Applies a change, synced; with an event, in one batch with it.
    fn commit(&self, writes: storage::Writes, audit: ChangeEvent) -> Result<(), VaultError> {
        match audit {
            Some((event, log)) => {
                log.commit_with(event, writes)?;
            }
            None => {
                let mut b = self.store.batch();
                b.extend(&writes)?;
                b.commit(true)?;
            }
        }
        Ok(())
    }

    pub fn create(&self, name: VaultName, audit: ChangeEvent) -> Result<VaultRecord, VaultError> {
        let _guard = self.write_lock.lock();
        if self.exists(&name)? {
            return Err(VaultError::VaultExists(name));
        }
        let record = VaultRecord {
            name,
            created_at: Utc::now(),
        };
        let mut writes = storage::Writes::default();
        writes.put(Cf::Vaults, record.name.as_str().as_bytes(), &record)?;
        self.commit(writes, audit)?;
        Ok(record)
    }

    pub fn create_project(
        &self,
        vault: &VaultName,
        name: ProjectName,
        audit: ChangeEvent,
    ) -> Result<ProjectRecord, VaultError> {
        let _guard = self.write_lock.lock();
        let key = storage::key(&[vault.as_str(), name.as_str()]);
        if self.store.exists(Cf::Projects, &key)? {
            return Err(VaultError::ProjectExists(name));
        }
        let record = ProjectRecord {
            name,
            created_at: Utc::now(),
        };
        let mut writes = storage::Writes::default();
        writes.put(Cf::Projects, &key, &record)?;
        self.commit(writes, audit)?;
        Ok(record)
    }

    pub fn project_exists(
        &self,
        vault: &VaultName,
        name: &ProjectName,
    ) -> Result<bool, StoreError> {
        self.store.exists(
            Cf::Projects,
            &storage::key(&[vault.as_str(), name.as_str()]),
        )
    }

    pub fn projects(&self, vault: &VaultName) -> Result<Vec<ProjectRecord>, StoreError> {
        let rows = self
            .store
            .scan_prefix(Cf::Projects, &storage::prefix(&[vault.as_str()]))?;
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }

    /// Writes a new version of a secret, sealed, and returns its number. With `audit`, the
    /// event (its detail set to the new version) is written in the same synced batch, so
    /// that no version exists without its event; blocks until durable.
    #[expect(clippy::too_many_arguments, reason = "one per part of a secret write")]
    pub fn put_secret(
        &self,
        vault: &VaultName,
        project: &ProjectName,
        name: &SecretName,
        value: &[u8],
        policy: Option<GuardrailSpec>,
        by: String,
        max_bytes: usize,
        audit: ChangeEvent,
    ) -> Result<u32, VaultError> {
        if value.len() > max_bytes {
            return Err(VaultError::TooLarge(max_bytes));
        }
        if let Some(p) = &policy {
            Guardrails::compile(p)?;
        }
        let _guard = self.write_lock.lock();
        if !self.project_exists(vault, project)? {
            return Err(VaultError::NoProject(project.clone()));
        }
        let head_key = secret_key(vault, project.as_str(), name.as_str());
        let previous: Option<SecretHead> = self.store.get(Cf::Secrets, &head_key)?;
        let version = previous.as_ref().map_or(1, |h| h.version + 1);
        let policy = policy
            .or_else(|| previous.map(|h| h.policy))
            .unwrap_or_default();
        let head = SecretHead {
            version,
            policy,
            updated_at: Utc::now(),
            updated_by: by,
        };
        let vkey = version_key(&head_key, version);
        let mut writes = storage::Writes::default();
        writes.put_raw(Cf::SecretVersions, &vkey, &self.sealer.seal(value, &vkey));
        writes.put(Cf::Secrets, &head_key, &head)?;
        let audit = audit.map(|(mut event, log)| {
            event.detail = Some(serde_json::json!({ "version": version }));
            (event, log)
        });
        let committed = self.commit(writes, audit);
        self.heads.written(&head_key);
        committed.map(|()| version)
    }

    /// The newest version's number and compiled policy, cached until the next write.
    pub fn head(
        &self,
        vault: &VaultName,
        project: &str,
        name: &str,
    ) -> Result<Option<Arc<CompiledHead>>, StoreError> {
        let head_key = secret_key(vault, project, name);
        self.heads
            .get_or_load(&head_key, || -> Result<_, StoreError> {
                let head = self.store.get::<SecretHead>(Cf::Secrets, &head_key)?;
                Ok(head.map(|head| CompiledHead {
                    version: head.version,
                    policy: Guardrails::compile(&head.policy).ok(),
                }))
            })
    }

    /// Decrypts one version of a secret.
    pub fn value(
        &self,
        vault: &VaultName,
        project: &str,
        name: &str,
        version: u32,
    ) -> Result<Option<SecretValue>, VaultError> {
        let vkey = version_key(&secret_key(vault, project, name), version);
        let Some(sealed) = self.store.get_raw(Cf::SecretVersions, &vkey)? else {
            return Ok(None);
        };
        let value = self.sealer.open(&sealed, &vkey)?;
        Ok(Some(SecretValue { version, value }))
    }

    /// Replaces the vault-wide IP allowlist; an empty list removes the rule.
    pub fn set_ip_allowlist(
        &self,
        vault: &VaultName,
        setting: &IpAllowlistSetting,
        audit: ChangeEvent,
    ) -> Result<(), VaultError> {
        IpAllowlist::parse(&setting.cidrs)?;
        let key = storage::key(&[vault.as_str(), ALLOWLIST_SETTING]);
        let mut writes = storage::Writes::default();
        writes.put(Cf::Settings, &key, setting)?;
        let committed = self.commit(writes, audit);
        self.ip_allowlists.written(vault);
        committed
    }

    pub fn ip_allowlist_setting(
        &self,
        vault: &VaultName,
    ) -> Result<IpAllowlistSetting, StoreError> {
        let key = storage::key(&[vault.as_str(), ALLOWLIST_SETTING]);
        Ok(self.store.get(Cf::Settings, &key)?.unwrap_or_default())
    }

    /// The compiled vault-wide allowlist, cached until the next change.
    pub fn ip_allowlist(&self, vault: &VaultName) -> Result<Arc<VaultAllowlist>, StoreError> {
        let loaded = self
            .ip_allowlists
            .get_or_load(vault, || -> Result<_, StoreError> {
                let setting = self.ip_allowlist_setting(vault)?;
                Ok(Some(match IpAllowlist::parse(&setting.cidrs) {
                    Ok(list) if list.is_empty() => VaultAllowlist::Open,
                    Ok(list) => VaultAllowlist::List(list),
                    Err(_) => VaultAllowlist::Invalid,
                }))
            })?;
        // The loader always gives a value; an absent one would be a bug, so deny.
        Ok(loaded.unwrap_or_else(|| Arc::new(VaultAllowlist::Invalid)))
    }
}

/// A vault-wide IP allowlist as the read path sees it.
#[derive(Debug)]
pub enum VaultAllowlist {
    /// No rule: every address passes this layer.
    Open,
    List(IpAllowlist),
    /// The stored rule no longer compiles: every read is denied.
    Invalid,
}
