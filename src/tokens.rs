//! Admin bearer tokens: random, stored hashed, compared in constant time, scoped to one
//! vault or to the whole server.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::VaultName;
use crate::storage::{Cf, Store, StoreError};

const PREFIX: &str = "tvt_";
const ID_HEX: usize = 16;
const SECRET_B64: usize = 43;

/// What a token may touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scope {
    /// Every vault, and creating vaults.
    Operator,
    /// One vault only.
    Vault { vault: VaultName },
}

impl Scope {
    pub fn allows(&self, vault: &VaultName) -> bool {
        match self {
            Scope::Operator => true,
            Scope::Vault { vault: own } => own == vault,
        }
    }
}

/// A token as stored: never the token itself, only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub hash: String,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
}

/// The caller an admin request was authenticated as. Carries the token id, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub token_id: String,
    pub scope: Scope,
}

impl Admin {
    /// The actor string recorded in audit events.
    pub fn actor(&self) -> String {
        format!("admin:{}", self.token_id)
    }
}

/// Makes a token with `scope`, stores its hash and returns the token text, shown once.
pub fn issue(store: &Store, scope: Scope) -> Result<SecretString, StoreError> {
    let mut id = [0u8; ID_HEX / 2];
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let record = TokenRecord {
        id: id.clone(),
        hash: hex::encode(Sha256::digest(secret.as_bytes())),
        scope,
        created_at: Utc::now(),
    };
    let mut batch = store.batch();
    batch.put(Cf::Tokens, id.as_bytes(), &record)?;
    batch.commit(true)?;
    Ok(SecretString::from(format!("{PREFIX}{id}_{secret}")))
}

/// Checks a bearer token. `None` for anything that is not a live token, without saying why.
pub fn authenticate(store: &Store, token: &str) -> Result<Option<Admin>, StoreError> {
    let Some((id, secret)) = split(token) else {
        return Ok(None);
    };
    let Some(record) = store.get::<TokenRecord>(Cf::Tokens, id.as_bytes())? else {
        return Ok(None);
    };
    let presented = hex::encode(Sha256::digest(secret.as_bytes()));
    if !bool::from(presented.as_bytes().ct_eq(record.hash.as_bytes())) {
        return Ok(None);
    }
    Ok(Some(Admin {
        token_id: record.id,
        scope: record.scope,
    }))
}

fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    if rest.len() != ID_HEX + 1 + SECRET_B64 || rest.as_bytes()[ID_HEX] != b'_' {
        return None;
    }
    let (id, secret) = (&rest[..ID_HEX], &rest[ID_HEX + 1..]);
    id.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then_some((id, secret))
}

/// Writes a token to a new file readable by its owner only (mode 0600).
pub fn write_token_file(path: &Path, token: &SecretString) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.expose_secret().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_authenticates_and_a_changed_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let token = issue(&store, Scope::Operator).unwrap();
        let text = token.expose_secret();
        let admin = authenticate(&store, text).unwrap().unwrap();
        assert_eq!(admin.scope, Scope::Operator);
        let mut tampered = text.to_owned();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(authenticate(&store, &tampered).unwrap(), None);
        for junk in ["", "tvt_", "Bearer x", &text[..text.len() - 1]] {
            assert_eq!(authenticate(&store, junk).unwrap(), None);
        }
    }

    #[test]
    fn a_vault_scope_allows_only_its_vault() {
        let a = VaultName::parse("a").unwrap();
        let b = VaultName::parse("b").unwrap();
        let scope = Scope::Vault { vault: a.clone() };
        assert!(scope.allows(&a));
        assert!(!scope.allows(&b));
        assert!(Scope::Operator.allows(&b));
    }
}
