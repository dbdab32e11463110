//! Secrets at rest (SMTP passwords, webhook secrets): AES-256-GCM under the
//! master key. A sealed value is `0x01 | key fingerprint (4) | nonce (12) |
//! ciphertext+tag`; the fingerprint lets a rotation keep old keys readable, and
//! the associated data binds a ciphertext to its row and column so it cannot be
//! copied onto another tenant.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const VERSION: u8 = 1;

#[derive(Clone)]
struct MasterKey {
    fingerprint: [u8; 4],
    cipher: Aes256Gcm,
}

impl MasterKey {
    fn new(bytes: &[u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        let mut fingerprint = [0u8; 4];
        fingerprint.copy_from_slice(&digest[..4]);
        Self {
            fingerprint,
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)),
        }
    }
}

/// Seals with the primary key; opens with any key it knows. Clones share
/// one copy of the key schedules (an `Arc`), so the master key is not copied
/// around with the state; with aes-gcm's `zeroize` feature they are wiped
/// when the last clone goes.
#[derive(Clone)]
pub struct Vault {
    keys: Arc<Keys>,
}

#[derive(Clone)]
struct Keys {
    primary: MasterKey,
    previous: Vec<MasterKey>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value was made with an unknown master key")]
    UnknownKey,
    #[error("sealed value failed authentication")]
    Tampered,
}

impl Vault {
    pub fn new(primary: &[u8; 32]) -> Self {
        Self {
            keys: Arc::new(Keys {
                primary: MasterKey::new(primary),
                previous: Vec::new(),
            }),
        }
    }

    /// Adds an older key that can still open values (used during rotation).
    pub fn with_previous(mut self, key: &[u8; 32]) -> Self {
        Arc::make_mut(&mut self.keys)
            .previous
            .push(MasterKey::new(key));
        self
    }

    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .keys
            .primary
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_default(); // AES-GCM encryption cannot fail for in-memory sizes.
        let mut out = Vec::with_capacity(1 + 4 + 12 + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&self.keys.primary.fingerprint);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// The plaintext is wiped when the caller drops it.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        if sealed.len() < 1 + 4 + 12 + 16 || sealed[0] != VERSION {
            return Err(VaultError::Malformed);
        }
        let fingerprint = &sealed[1..5];
        let key = std::iter::once(&self.keys.primary)
            .chain(self.keys.previous.iter())
            .find(|k| k.fingerprint == fingerprint)
            .ok_or(VaultError::UnknownKey)?;
        key.cipher
            .decrypt(
                Nonce::from_slice(&sealed[5..17]),
                Payload {
                    msg: &sealed[17..],
                    aad: context.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Tampered)
    }

    /// True when `sealed` was made with the primary key (rotation skips it).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.len() > 5 && sealed[1..5] == self.keys.primary.fingerprint
    }
}

/// Generates a new random master key, base64-encoded.
pub fn generate_master_key() -> String {
    use base64::Engine;
    let key = Aes256Gcm::generate_key(&mut OsRng);
    base64::engine::general_purpose::STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let vault = Vault::new(&[7u8; 32]);
        let sealed = vault.seal(b"hunter2", "tenant:a:smtp");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            *vault.open(&sealed, "tenant:a:smtp").unwrap(),
            b"hunter2".to_vec()
        );
        assert!(matches!(
            vault.open(&sealed, "tenant:b:smtp"),
            Err(VaultError::Tampered)
        ));
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let old = Vault::new(&[1u8; 32]);
        let sealed = old.seal(b"s", "c");
        let new = Vault::new(&[2u8; 32]).with_previous(&[1u8; 32]);
        assert_eq!(*new.open(&sealed, "c").unwrap(), b"s".to_vec());
        assert!(!new.is_current(&sealed));
        assert!(matches!(
            Vault::new(&[2u8; 32]).open(&sealed, "c"),
            Err(VaultError::UnknownKey)
        ));
    }
}
