//! VERP return paths: `b+<token>@<bounce domain>`, where the token is the
//! tenant id, the message id and a 48-bit HMAC-SHA256 tag of both, in
//! lower-case base32 (61 characters, so the local part stays within RFC
//! 5321's 64 octets, and case-insensitive: some MTAs fold the case of local
//! parts). The same token is the `X-Postline-ID` header, the second way a
//! bounce finds its message. A token whose tag does not verify is ignored.
//!
//! The key is derived from the master key (HMAC-SHA256 of a fixed label), so
//! there is no extra secret to manage; tokens made under a previous master
//! key still verify while it is listed in `security.previous_master_keys`.

use data_encoding::BASE32_DNSSEC;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::config::{ConfigError, Settings};

const LABEL: &[u8] = b"postline/verp/v1";
const TAG_BYTES: usize = 6;
/// Bytes before encoding: tenant (16), message (16), tag.
const RAW_BYTES: usize = 32 + TAG_BYTES;
/// The local-part prefix of every return path.
pub const PREFIX: &str = "b+";

/// The message a token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ref {
    pub tenant_id: Uuid,
    pub email_id: Uuid,
}

/// Signs and verifies tokens. `Debug` shows nothing of the keys.
#[derive(Clone)]
pub struct VerpKeys {
    primary: [u8; 32],
    previous: Vec<[u8; 32]>,
}

impl std::fmt::Debug for VerpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerpKeys([redacted])")
    }
}

fn derive(master: &[u8; 32]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(master).expect("any key length");
    mac.update(LABEL);
    mac.finalize().into_bytes().into()
}

impl VerpKeys {
    pub fn new(master: &[u8; 32]) -> Self {
        VerpKeys {
            primary: derive(master),
            previous: Vec::new(),
        }
    }

    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let master = settings.master_key()?;
        let mut keys = Self::new(&master);
        keys.previous = settings
            .previous_master_keys()?
            .iter()
            .map(|k| derive(k))
            .collect();
        Ok(keys)
    }

    fn tag(key: &[u8; 32], r: &Ref) -> [u8; TAG_BYTES] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
        mac.update(r.tenant_id.as_bytes());
        mac.update(r.email_id.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    pub fn token(&self, r: &Ref) -> String {
        let mut raw = Vec::with_capacity(RAW_BYTES);
        raw.extend_from_slice(r.tenant_id.as_bytes());
        raw.extend_from_slice(r.email_id.as_bytes());
        raw.extend_from_slice(&Self::tag(&self.primary, r));
        BASE32_DNSSEC.encode(&raw)
    }

    /// `b+<token>@<domain>`.
    pub fn return_path(&self, r: &Ref, domain: &str) -> String {
        format!("{PREFIX}{}@{domain}", self.token(r))
    }

    /// The message of a token, if its tag verifies (constant-time compare).
    pub fn verify(&self, token: &str) -> Option<Ref> {
        let token = token.trim();
        if token.len() != BASE32_DNSSEC.encode_len(RAW_BYTES) {
            return None;
        }
        let raw = BASE32_DNSSEC
            .decode(token.to_ascii_lowercase().as_bytes())
            .ok()?;
        if raw.len() != RAW_BYTES {
            return None;
        }
        let r = Ref {
            tenant_id: Uuid::from_slice(&raw[..16]).ok()?,
            email_id: Uuid::from_slice(&raw[16..32]).ok()?,
        };
        let given = &raw[32..];
        let ok = std::iter::once(&self.primary)
            .chain(&self.previous)
            .any(|k| constant_eq(&Self::tag(k, &r), given));
        ok.then_some(r)
    }

    /// The message of a return-path address `b+<token>@…` (any domain: the
    /// caller checks the domain).
    pub fn verify_address(&self, address: &str) -> Option<Ref> {
        let local = address.trim().trim_matches(['<', '>']).rsplit_once('@')?.0;
        let token = local
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map(|_| &local[PREFIX.len()..])?;
        self.verify(token)
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Ref {
        Ref {
            tenant_id: Uuid::new_v4(),
            email_id: Uuid::new_v4(),
        }
    }

    #[test]
    fn round_trip_fits_a_local_part_and_ignores_case() {
        let keys = VerpKeys::new(&[3u8; 32]);
        let m = r();
        let addr = keys.return_path(&m, "bounces.example.com");
        let local = addr.split('@').next().unwrap();
        assert!(local.len() <= 64, "{local}");
        assert_eq!(keys.verify_address(&addr), Some(m));
        assert_eq!(keys.verify_address(&addr.to_ascii_uppercase()), Some(m));
    }

    #[test]
    fn forged_or_foreign_tokens_do_not_verify() {
        let keys = VerpKeys::new(&[3u8; 32]);
        let other = VerpKeys::new(&[4u8; 32]);
        let m = r();
        assert_eq!(keys.verify(&other.token(&m)), None);
        let mut t = keys.token(&m).into_bytes();
        t[3] = if t[3] == b'a' { b'b' } else { b'a' };
        assert_eq!(keys.verify(std::str::from_utf8(&t).unwrap()), None);
        assert_eq!(keys.verify(""), None);
        assert_eq!(keys.verify("not-a-token"), None);
        assert_eq!(keys.verify_address("someone@bounces.example.com"), None);
    }

    #[test]
    fn previous_master_keys_still_verify() {
        let old = VerpKeys::new(&[5u8; 32]);
        let mut rotated = VerpKeys::new(&[6u8; 32]);
        rotated.previous.push(derive(&[5u8; 32]));
        let m = r();
        assert_eq!(rotated.verify(&old.token(&m)), Some(m));
    }
}
