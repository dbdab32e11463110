//! Unsubscribe tokens (RFC 8058, issue 26): the tenant, the stream and the
//! recipient's address, with a 80-bit HMAC-SHA256 tag, in lower-case base32
//! (some MTAs fold the case of local parts; the same token is the local part
//! of the `mailto:` form). Self-contained: an unsubscribe works whatever
//! retention did to the message. The key is derived from the master key
//! (HMAC of a fixed label); tokens made under a key listed in
//! `security.previous_master_keys` still verify.

use data_encoding::BASE32_DNSSEC;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::config::{ConfigError, Settings};
use crate::emails::stream::Stream;

const LABEL: &[u8] = b"postline/unsubscribe/v1";
const TAG_BYTES: usize = 10;
/// The longest address a token carries (RFC 5321's path limit).
pub const MAX_ADDRESS: usize = 254;
const MIN_RAW: usize = 16 + 1 + 3 + TAG_BYTES;
const MAX_RAW: usize = 16 + 1 + MAX_ADDRESS + TAG_BYTES;
/// The local-part prefix of the `mailto:` form.
pub const PREFIX: &str = "u+";

/// What a verified token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    pub tenant_id: Uuid,
    pub stream: Stream,
    /// Bare, lower-case.
    pub recipient: String,
}

/// Signs and verifies tokens. `Debug` shows nothing of the keys.
#[derive(Clone)]
pub struct UnsubscribeKeys {
    primary: [u8; 32],
    previous: Vec<[u8; 32]>,
}

impl std::fmt::Debug for UnsubscribeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsubscribeKeys([redacted])")
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn stream_byte(s: Stream) -> u8 {
    match s {
        Stream::Transactional => b't',
        Stream::Broadcast => b'b',
    }
}

impl UnsubscribeKeys {
    pub fn new(master: &[u8; 32], previous: &[[u8; 32]]) -> Self {
        UnsubscribeKeys {
            primary: mac(master, &[LABEL]),
            previous: previous.iter().map(|k| mac(k, &[LABEL])).collect(),
        }
    }

    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let master = settings.master_key()?;
        let previous: Vec<[u8; 32]> = settings
            .previous_master_keys()?
            .iter()
            .map(|k| **k)
            .collect();
        Ok(Self::new(&master, &previous))
    }

    /// The token for `recipient` (bare; lower-cased here) of `tenant`'s
    /// `stream`; `None` for an address longer than [`MAX_ADDRESS`].
    pub fn token(&self, tenant_id: Uuid, stream: Stream, recipient: &str) -> Option<String> {
        let r = recipient.trim().to_ascii_lowercase();
        if r.len() > MAX_ADDRESS || r.len() < 3 {
            return None;
        }
        let mut raw = Vec::with_capacity(17 + r.len() + TAG_BYTES);
        raw.extend_from_slice(tenant_id.as_bytes());
        raw.push(stream_byte(stream));
        raw.extend_from_slice(r.as_bytes());
        let t = mac(&self.primary, &[&raw]);
        raw.extend_from_slice(&t[..TAG_BYTES]);
        Some(BASE32_DNSSEC.encode(&raw))
    }

    /// What a token names, when its tag verifies (constant-time compare).
    pub fn verify(&self, token: &str) -> Option<Unsubscribe> {
        let token = token.trim().to_ascii_lowercase();
        if token.len() > BASE32_DNSSEC.encode_len(MAX_RAW) {
            return None;
        }
        let raw = BASE32_DNSSEC.decode(token.as_bytes()).ok()?;
        if !(MIN_RAW..=MAX_RAW).contains(&raw.len()) {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_BYTES);
        let ok = std::iter::once(&self.primary)
            .chain(&self.previous)
            .any(|k| constant_eq(&mac(k, &[body])[..TAG_BYTES], tag));
        if !ok {
            return None;
        }
        let tenant_id = Uuid::from_slice(&body[..16]).ok()?;
        let stream = match body[16] {
            b't' => Stream::Transactional,
            b'b' => Stream::Broadcast,
            _ => return None,
        };
        let recipient = std::str::from_utf8(&body[17..]).ok()?.to_string();
        Some(Unsubscribe {
            tenant_id,
            stream,
            recipient,
        })
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_case_folding_and_forgery() {
        let k = UnsubscribeKeys::new(&[7; 32], &[]);
        let t = Uuid::new_v4();
        let tok = k
            .token(t, Stream::Broadcast, "Ann@Example.com")
            .expect("token");
        assert!(tok
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let u = k.verify(&tok.to_ascii_uppercase()).expect("verifies");
        assert_eq!(u.tenant_id, t);
        assert_eq!(u.stream, Stream::Broadcast);
        assert_eq!(u.recipient, "ann@example.com");
        // One changed character, another key, garbage: nothing.
        let mut bad = tok.clone().into_bytes();
        bad[3] = if bad[3] == b'a' { b'b' } else { b'a' };
        assert!(k.verify(std::str::from_utf8(&bad).unwrap()).is_none());
        assert!(UnsubscribeKeys::new(&[8; 32], &[]).verify(&tok).is_none());
        assert!(k.verify("not-a-token").is_none());
        assert!(k.verify(&"a".repeat(5000)).is_none());
        // A previous key still verifies.
        let rotated = UnsubscribeKeys::new(&[9; 32], &[[7; 32]]);
        assert!(rotated.verify(&tok).is_some());
    }

    #[test]
    fn address_bound() {
        let k = UnsubscribeKeys::new(&[7; 32], &[]);
        let long = format!("{}@x.com", "a".repeat(MAX_ADDRESS - 6));
        assert_eq!(long.len(), MAX_ADDRESS);
        let tok = k
            .token(Uuid::nil(), Stream::Broadcast, &long)
            .expect("at the bound");
        assert!(k.verify(&tok).is_some());
        let over = format!("a{long}");
        assert!(k.token(Uuid::nil(), Stream::Broadcast, &over).is_none());
    }
}
