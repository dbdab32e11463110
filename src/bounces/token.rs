//! VERP return paths: `b+<token>@<bounce domain>`, one per recipient. The
//! token is the tenant id, the message id, the recipient's index and a
//! 40-bit HMAC-SHA256 tag of the three, in lower-case base32: 38 bytes, 61
//! characters, so the local part stays within RFC 5321's 64 octets, and
//! case-insensitive (some MTAs fold the case of local parts). The index is
//! the recipient's position among the message's recipient addresses in byte
//! order ([`super::recipients::ordered`]). The same token is the recipient's
//! `X-Postline-ID` header, the second way a report finds its recipient. A
//! token whose tag does not verify is ignored.
//!
//! The tag is 8 bits shorter than the message-only form's to make room for
//! the index: a forger guesses online, one report per guess, for one
//! recipient of one message, so 2^40 guesses is out of reach.
//!
//! Tokens of the earlier, message-only form (tenant, message and a 48-bit
//! tag, the same length) still verify, for mail in flight at the upgrade;
//! they name no recipient ([`Ref::recipient`] is `None`), and a report
//! carrying one is applied only when the message had a single recipient
//! (`bounces::apply`). Nothing makes new ones.
//!
//! The keys are derived from the master key (HMAC-SHA256 of a fixed label,
//! one per form), so there is no extra secret to manage; tokens made under
//! a previous master key still verify while it is listed in
//! `security.previous_master_keys`.

use std::ops::Deref;

use data_encoding::BASE32_DNSSEC;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::config::{ConfigError, Settings};

const LABEL: &[u8] = b"postline/verp/v2";
const LEGACY_LABEL: &[u8] = b"postline/verp/v1";
const TAG_BYTES: usize = 5;
const LEGACY_TAG_BYTES: usize = 6;
/// Bytes before encoding: tenant (16), message (16), index (1), tag; the
/// message-only form has the same length (a longer tag, no index).
const RAW_BYTES: usize = 33 + TAG_BYTES;
const _: () = assert!(32 + LEGACY_TAG_BYTES == RAW_BYTES);
/// The local-part prefix of every return path.
pub const PREFIX: &str = "b+";

/// The message and recipient a token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ref {
    pub tenant_id: Uuid,
    pub email_id: Uuid,
    /// The recipient's index; `None` for a message-only token.
    pub recipient: Option<u8>,
}

/// The master-key-derived keys of one form.
#[derive(Clone)]
struct KeySet {
    primary: [u8; 32],
    previous: Vec<[u8; 32]>,
}

impl KeySet {
    fn new<K: Deref<Target = [u8; 32]>>(master: &[u8; 32], previous: &[K], label: &[u8]) -> Self {
        KeySet {
            primary: derive(master, label),
            previous: previous.iter().map(|k| derive(k, label)).collect(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &[u8; 32]> {
        std::iter::once(&self.primary).chain(&self.previous)
    }
}

/// Signs and verifies tokens. `Debug` shows nothing of the keys.
#[derive(Clone)]
pub struct VerpKeys {
    keys: KeySet,
    legacy: KeySet,
}

impl std::fmt::Debug for VerpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerpKeys([redacted])")
    }
}

fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(master).expect("any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// The first `N` bytes of HMAC-SHA256(key, parts…).
fn tag<const N: usize>(key: &[u8; 32], parts: &[&[u8]]) -> [u8; N] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; N];
    out.copy_from_slice(&full[..N]);
    out
}

impl VerpKeys {
    pub fn new(master: &[u8; 32]) -> Self {
        Self::with_previous::<Zeroizing<[u8; 32]>>(master, &[])
    }

    fn with_previous<K: Deref<Target = [u8; 32]>>(master: &[u8; 32], previous: &[K]) -> Self {
        VerpKeys {
            keys: KeySet::new(master, previous, LABEL),
            legacy: KeySet::new(master, previous, LEGACY_LABEL),
        }
    }

    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let master = settings.master_key()?;
        let previous = settings.previous_master_keys()?;
        Ok(Self::with_previous(&master, &previous))
    }

    /// The token of recipient `index` of a message.
    pub fn token(&self, tenant_id: Uuid, email_id: Uuid, index: u8) -> String {
        let mut raw = Vec::with_capacity(RAW_BYTES);
        raw.extend_from_slice(tenant_id.as_bytes());
        raw.extend_from_slice(email_id.as_bytes());
        raw.push(index);
        let t: [u8; TAG_BYTES] = tag(&self.keys.primary, &[&raw]);
        raw.extend_from_slice(&t);
        BASE32_DNSSEC.encode(&raw)
    }

    /// What a token names, if its tag verifies under any key of either
    /// form (constant-time compares).
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
        let tenant_id = Uuid::from_slice(&raw[..16]).ok()?;
        let email_id = Uuid::from_slice(&raw[16..32]).ok()?;
        let (signed, given) = raw.split_at(33);
        if self
            .keys
            .all()
            .any(|k| constant_eq(&tag::<TAG_BYTES>(k, &[signed]), given))
        {
            return Some(Ref {
                tenant_id,
                email_id,
                recipient: Some(raw[32]),
            });
        }
        let (signed, given) = raw.split_at(32);
        self.legacy
            .all()
            .any(|k| constant_eq(&tag::<LEGACY_TAG_BYTES>(k, &[signed]), given))
            .then_some(Ref {
                tenant_id,
                email_id,
                recipient: None,
            })
    }

    /// What a return-path address `b+<token>@…` names (any domain: the
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

/// `b+<token>@<domain>`.
pub fn return_path(token: &str, domain: &str) -> String {
    format!("{PREFIX}{token}@{domain}")
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Uuid, Uuid) {
        (Uuid::new_v4(), Uuid::new_v4())
    }

    /// The message-only form as the previous release made it.
    fn legacy_token(keys: &VerpKeys, t: Uuid, e: Uuid) -> String {
        let mut raw = Vec::new();
        raw.extend_from_slice(t.as_bytes());
        raw.extend_from_slice(e.as_bytes());
        let tag: [u8; LEGACY_TAG_BYTES] = tag(&keys.legacy.primary, &[&raw]);
        raw.extend_from_slice(&tag);
        BASE32_DNSSEC.encode(&raw)
    }

    #[test]
    fn round_trip_names_the_recipient_fits_a_local_part_and_ignores_case() {
        let keys = VerpKeys::new(&[3u8; 32]);
        let (t, e) = ids();
        for index in [0u8, 1, 49, 255] {
            let addr = return_path(&keys.token(t, e, index), "bounces.example.com");
            let local = addr.split('@').next().unwrap();
            assert!(local.len() <= 64, "{local}");
            let want = Some(Ref {
                tenant_id: t,
                email_id: e,
                recipient: Some(index),
            });
            assert_eq!(keys.verify_address(&addr), want);
            assert_eq!(keys.verify_address(&addr.to_ascii_uppercase()), want);
        }
        assert_ne!(keys.token(t, e, 0), keys.token(t, e, 1));
    }

    #[test]
    fn forged_or_foreign_tokens_do_not_verify() {
        let keys = VerpKeys::new(&[3u8; 32]);
        let other = VerpKeys::new(&[4u8; 32]);
        let (t, e) = ids();
        assert_eq!(keys.verify(&other.token(t, e, 0)), None);
        assert_eq!(keys.verify(&legacy_token(&other, t, e)), None);
        let mut tok = keys.token(t, e, 0).into_bytes();
        tok[3] = if tok[3] == b'a' { b'b' } else { b'a' };
        assert_eq!(keys.verify(std::str::from_utf8(&tok).unwrap()), None);
        assert_eq!(keys.verify(""), None);
        assert_eq!(keys.verify("not-a-token"), None);
        assert_eq!(keys.verify_address("someone@bounces.example.com"), None);
    }

    /// Changing the index of a token (recipient A's token rewritten to
    /// name recipient B) breaks its tag.
    #[test]
    fn a_token_rewritten_to_another_recipient_does_not_verify() {
        let keys = VerpKeys::new(&[3u8; 32]);
        let (t, e) = ids();
        let mut raw = BASE32_DNSSEC
            .decode(keys.token(t, e, 0).as_bytes())
            .unwrap();
        raw[32] = 1;
        assert_eq!(keys.verify(&BASE32_DNSSEC.encode(&raw)), None);
    }

    #[test]
    fn message_only_tokens_still_verify_without_a_recipient() {
        let keys = VerpKeys::new(&[3u8; 32]);
        let (t, e) = ids();
        let old = legacy_token(&keys, t, e);
        assert_eq!(old.len(), keys.token(t, e, 0).len());
        assert_eq!(
            keys.verify(&old),
            Some(Ref {
                tenant_id: t,
                email_id: e,
                recipient: None
            })
        );
    }

    #[test]
    fn previous_master_keys_still_verify() {
        let old = VerpKeys::new(&[5u8; 32]);
        let rotated = VerpKeys::with_previous(&[6u8; 32], &[Zeroizing::new([5u8; 32])]);
        let (t, e) = ids();
        assert_eq!(
            rotated.verify(&old.token(t, e, 7)).map(|r| r.recipient),
            Some(Some(7))
        );
        assert_eq!(
            rotated
                .verify(&legacy_token(&old, t, e))
                .map(|r| r.recipient),
            Some(None)
        );
    }
}
