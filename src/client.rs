//! The machine side: the identity the bootstrap script leaves on a host, and request
//! signing.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;

use crate::protocol::{body_digest, canonical_request};

/// Why the host's identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {source}; has the bootstrap script run on this host?")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: missing key {key:?}")]
    Missing { path: PathBuf, key: &'static str },
    #[error("{path}: not an Ed25519 private key in PKCS#8 PEM form")]
    Key { path: PathBuf },
}

/// What the bootstrap script wrote beside the private key.
pub struct Identity {
    pub server: String,
    pub vault: String,
    pub machine_id: String,
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("server", &self.server)
            .field("vault", &self.vault)
            .field("machine_id", &self.machine_id)
            .finish_non_exhaustive()
    }
}

/// The directory the bootstrap script uses: `$TEMPVAULT_HOME`, else `$HOME/.tempvault`.
pub fn default_home() -> PathBuf {
    std::env::var_os("TEMPVAULT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".tempvault")
        })
}

impl Identity {
    /// Loads `{home}/config` and the private key it names.
    pub fn load(home: &Path) -> Result<Self, IdentityError> {
        let path = home.join("config");
        let text = std::fs::read_to_string(&path).map_err(|source| IdentityError::Read {
            path: path.clone(),
            source,
        })?;
        let get = |key: &'static str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_owned())
                .ok_or_else(|| IdentityError::Missing {
                    path: path.clone(),
                    key,
                })
        };
        let key_path = PathBuf::from(get("key")?);
        // The PEM text holds the private key: wiped when dropped, like the `SigningKey`
        // made from it (ed25519-dalek zeroises signing keys on drop).
        let pem =
            zeroize::Zeroizing::new(std::fs::read_to_string(&key_path).map_err(|source| {
                IdentityError::Read {
                    path: key_path.clone(),
                    source,
                }
            })?);
        let key =
            SigningKey::from_pkcs8_pem(&pem).map_err(|_| IdentityError::Key { path: key_path })?;
        Ok(Self {
            server: get("server")?,
            vault: get("vault")?,
            machine_id: get("machine_id")?,
            key,
        })
    }

    /// The four authentication headers for a request, signed now with a fresh nonce.
    pub fn sign(&self, method: &str, target: &str, body: &[u8]) -> SignedHeaders {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        sign_with(
            &self.key,
            &self.machine_id,
            method,
            target,
            body,
            &timestamp,
            &fresh_nonce(),
        )
    }
}

/// The authentication headers of one request.
#[derive(Debug, Clone)]
pub struct SignedHeaders {
    pub machine_id: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

impl SignedHeaders {
    /// Header name and value pairs, ready to send.
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            ("X-Machine-Id", &self.machine_id),
            ("X-Timestamp", &self.timestamp),
            ("X-Nonce", &self.nonce),
            ("X-Signature", &self.signature),
        ]
    }
}

/// A random 24-character nonce.
pub fn fresh_nonce() -> String {
    let mut raw = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Signs a request with the given timestamp and nonce.
pub fn sign_with(
    key: &SigningKey,
    machine_id: &str,
    method: &str,
    target: &str,
    body: &[u8],
    timestamp: &str,
    nonce: &str,
) -> SignedHeaders {
    let message = canonical_request(
        method,
        target,
        machine_id,
        timestamp,
        nonce,
        &body_digest(body),
    );
    SignedHeaders {
        machine_id: machine_id.to_owned(),
        timestamp: timestamp.to_owned(),
        nonce: nonce.to_owned(),
        signature: STANDARD.encode(key.sign(&message).to_bytes()),
    }
}
