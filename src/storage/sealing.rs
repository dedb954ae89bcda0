//! Encryption of secret values at rest.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};

const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// Why the sealing key could not be loaded or a value not opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read the secrets key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create the secrets key file {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("the secrets key file {path} must hold exactly 32 bytes, or 64 hex digits")]
    BadKey { path: String },
    #[error("a stored secret could not be decrypted: wrong key or damaged record")]
    Open,
}

/// Seals and opens secret values with XChaCha20-Poly1305.
///
/// Each value gets a random 192-bit nonce, and the record's location (vault, project,
/// name, version) is bound in as associated data, so a sealed value copied to another
/// secret's key does not open there.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Loads the key from `path`, creating a fresh random one (mode 0600) if the file does
    /// not exist. Returns whether it was created, so the caller can warn.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), SealError> {
        let shown = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => Ok((Self::from_file_bytes(&bytes, &shown)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
                rand::rngs::OsRng.fill_bytes(key.expose_secret_mut());
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|source| SealError::Create {
                        path: shown.clone(),
                        source,
                    })?;
                file.write_all(key.expose_secret())
                    .and_then(|()| file.sync_all())
                    .map_err(|source| SealError::Create {
                        path: shown,
                        source,
                    })?;
                Ok((Self::from_key(key.expose_secret()), true))
            }
            Err(source) => Err(SealError::Read {
                path: shown,
                source,
            }),
        }
    }

    fn from_file_bytes(bytes: &[u8], shown: &str) -> Result<Self, SealError> {
        let bad = || SealError::BadKey {
            path: shown.to_owned(),
        };
        if bytes.len() == KEY_LEN {
            return Ok(Self::from_key(bytes));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?.trim();
        let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
        hex::decode_to_slice(text, key.expose_secret_mut()).map_err(|_| bad())?;
        Ok(Self::from_key(key.expose_secret()))
    }

    fn from_key(key: &[u8]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    /// Encrypts `plain`; the output is the nonce followed by the ciphertext and tag.
    pub fn seal(&self, plain: &[u8], location: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: location,
                },
            )
            // Encryption fails only for inputs beyond 256 GiB, far past any size limit here.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`Sealer::seal`] produced for the same location.
    pub fn open(&self, sealed: &[u8], location: &[u8]) -> Result<SecretBox<Vec<u8>>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: location,
                },
            )
            .map_err(|_| SealError::Open)?;
        Ok(SecretBox::new(Box::new(plain)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_at_its_own_location() {
        let dir = tempfile::tempdir().unwrap();
        let (sealer, created) = Sealer::load_or_create(&dir.path().join("k")).unwrap();
        assert!(created);
        let sealed = sealer.seal(b"hunter2", b"v/p/s/1");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            sealer.open(&sealed, b"v/p/s/1").unwrap().expose_secret(),
            b"hunter2"
        );
        assert!(sealer.open(&sealed, b"v/p/s/2").is_err());
    }

    #[test]
    fn the_key_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let (a, _) = Sealer::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = Sealer::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(
            b.open(&a.seal(b"x", b"l"), b"l").unwrap().expose_secret(),
            b"x"
        );
    }

    #[test]
    fn a_key_file_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, [1u8; 31]).unwrap();
        assert!(matches!(
            Sealer::load_or_create(&path),
            Err(SealError::BadKey { .. })
        ));
    }
}
