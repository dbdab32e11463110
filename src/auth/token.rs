//! API key format and hashing: `pl_<kind>_<key_id>_<secret>`. The key id is
//! public (lookup, listings); the secret (190 bits) is stored only as an
//! argon2id hash.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};

use zeroize::Zeroizing;

use crate::config::Secret;
use crate::domain::KeyKind;

pub const KEY_ID_LEN: usize = 16;
pub const SECRET_LEN: usize = 32;
const KEY_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A token split into its parts; only the format is known to be right.
/// It borrows from the caller's [`Secret`] token (no copy of the secret);
/// `Debug` leaves the secret out.
pub struct ParsedToken<'a> {
    pub kind: KeyKind,
    pub key_id: &'a str,
    pub secret: &'a str,
}

impl std::fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedToken")
            .field("kind", &self.kind)
            .field("key_id", &self.key_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A freshly generated key: the full token is shown once and then forgotten
/// (wiped on drop).
pub struct NewToken {
    pub key_id: String,
    pub token: Secret,
    pub secret_hash: String,
}

pub fn prefix(kind: KeyKind, key_id: &str) -> String {
    format!("pl_{}_{}", kind.as_str(), key_id)
}

pub fn parse(token: &str) -> Option<ParsedToken<'_>> {
    let rest = token.strip_prefix("pl_")?;
    let (kind, rest) = rest.split_once('_')?;
    let kind = KeyKind::parse(kind)?;
    let (key_id, secret) = rest.split_once('_')?;
    let key_id_ok =
        key_id.len() == KEY_ID_LEN && key_id.bytes().all(|b| KEY_ID_ALPHABET.contains(&b));
    let secret_ok = secret.len() == SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    (key_id_ok && secret_ok).then_some(ParsedToken {
        kind,
        key_id,
        secret,
    })
}

pub fn generate(kind: KeyKind) -> anyhow::Result<NewToken> {
    let mut rng = OsRng;
    let key_id: String = (0..KEY_ID_LEN)
        .map(|_| KEY_ID_ALPHABET[rng.gen_range(0..KEY_ID_ALPHABET.len())] as char)
        .collect();
    let secret = Zeroizing::new(Alphanumeric.sample_string(&mut rng, SECRET_LEN));
    let secret_hash = hash_secret(&secret)?;
    Ok(NewToken {
        token: Secret::new(format!("{}_{}", prefix(kind, &key_id), secret.as_str())),
        key_id,
        secret_hash,
    })
}

pub fn hash_secret(secret: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing key secret: {e}"))
}

/// One argon2id verification (~20 ms): only on a cache miss.
pub fn verify_secret(secret: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash)
        .map(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The verified-key cache is keyed by a digest of the whole token, so the
/// token itself never sits in memory longer than the request.
pub fn cache_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_parse_verify() {
        let t = generate(KeyKind::Live).unwrap();
        let p = parse(t.token.expose()).unwrap();
        assert!(!format!("{p:?}").contains(p.secret), "Debug redacts");
        assert_eq!(p.kind, KeyKind::Live);
        assert_eq!(p.key_id, t.key_id);
        assert!(verify_secret(p.secret, &t.secret_hash));
        assert!(!verify_secret("x", &t.secret_hash));
        assert!(!t.secret_hash.contains(p.secret));
    }

    #[test]
    fn malformed_tokens() {
        for bad in [
            "",
            "pl_",
            "pl_live_",
            "pl_root_aaaaaaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "pl_live_AAAAAAAAAAAAAAAA_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "pl_live_aaaa_bbbb",
            "pl_live_aaaaaaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb!",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
