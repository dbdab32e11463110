//! DKIM keys: generation (RSA-2048 with the `rsa` crate, Ed25519 with ring),
//! selectors, the DNS record each key needs, and the Vault context that binds
//! a sealed private key to its row.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use uuid::Uuid;

use super::model::DkimKeyRow;
use crate::crypto::Vault;

/// The DKIM signing algorithms Postline offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "rsa-sha256" => Some(Algorithm::RsaSha256),
            "ed25519-sha256" => Some(Algorithm::Ed25519Sha256),
            _ => None,
        }
    }

    /// The `k=` tag of the DKIM record.
    fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

/// AEAD context of a key's sealed private key: bound to the key row, so a
/// sealed key copied onto another row (or tenant) does not open.
pub fn private_key_context(key_id: Uuid) -> String {
    format!("dkim_key:{key_id}:private_key")
}

/// A fresh, unique-per-key selector: `pl` + date + 6 random hex digits (and
/// `e` for Ed25519), e.g. `pl20261201a1b2c3`. DNS labels are case-insensitive,
/// so it is lower-case.
pub fn new_selector(alg: Algorithm, now: DateTime<Utc>) -> String {
    let suffix: u32 = rand::thread_rng().gen_range(0..0x100_0000);
    let tag = match alg {
        Algorithm::RsaSha256 => "",
        Algorithm::Ed25519Sha256 => "e",
    };
    format!("pl{}{suffix:06x}{tag}", now.format("%Y%m%d"))
}

/// A generated key pair: PKCS#8 DER private key and the `p=` value.
pub struct KeyPair {
    pub pkcs8: Vec<u8>,
    pub public_b64: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair([redacted])")
    }
}

/// Generates a key pair (CPU-bound: RSA-2048 takes ~0.1-1 s; run it on the
/// blocking pool).
pub fn generate(alg: Algorithm) -> anyhow::Result<KeyPair> {
    match alg {
        Algorithm::RsaSha256 => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
            let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?;
            let pkcs8 = private.to_pkcs8_der()?.as_bytes().to_vec();
            // p= is the base64 SubjectPublicKeyInfo (RFC 6376 §3.6.1).
            let spki = private.to_public_key().to_public_key_der()?;
            Ok(KeyPair {
                pkcs8,
                public_b64: B64.encode(spki.as_bytes()),
            })
        }
        Algorithm::Ed25519Sha256 => {
            use ring::signature::KeyPair as _;
            let rng = ring::rand::SystemRandom::new();
            let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| anyhow::anyhow!("Ed25519 key generation failed"))?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref())
                .map_err(|_| anyhow::anyhow!("generated Ed25519 key does not parse"))?;
            // p= is the raw 32-byte public key (RFC 8463 §4.2).
            Ok(KeyPair {
                pkcs8: doc.as_ref().to_vec(),
                public_b64: B64.encode(pair.public_key().as_ref()),
            })
        }
    }
}

/// A new `pending` key row for a domain, its private key sealed.
pub fn new_key_row(
    vault: &Vault,
    tenant_id: Uuid,
    domain_id: Uuid,
    alg: Algorithm,
) -> anyhow::Result<DkimKeyRow> {
    let now = Utc::now();
    let pair = generate(alg)?;
    let id = Uuid::new_v4();
    Ok(DkimKeyRow {
        tenant_id,
        domain_id,
        id,
        selector: new_selector(alg, now),
        algorithm: alg.as_str().to_string(),
        status: "pending".into(),
        private_key_enc: vault.seal(&pair.pkcs8, &private_key_context(id)),
        public_key: pair.public_b64,
        created_at: now,
        activated_at: None,
        retire_at: None,
    })
}

/// The TXT value to publish for a key.
pub fn record_value(k: &DkimKeyRow) -> String {
    let alg = Algorithm::parse(&k.algorithm).unwrap_or(Algorithm::RsaSha256);
    format!("v=DKIM1; k={}; p={}", alg.key_type(), k.public_key)
}

/// The TXT name of a key: `<selector>._domainkey.<domain>`.
pub fn record_name(k: &DkimKeyRow, domain: &str) -> String {
    format!("{}._domainkey.{domain}", k.selector)
}

/// Whether a published TXT value carries this key: tags parsed per RFC 6376
/// §3.6.1 (whitespace inside `p=` is ignored), `k=` defaulting to rsa.
pub fn record_matches(k: &DkimKeyRow, published: &str) -> bool {
    let alg = Algorithm::parse(&k.algorithm).unwrap_or(Algorithm::RsaSha256);
    let mut key_type = "rsa".to_string();
    let mut p = None;
    let mut version_ok = true;
    for (i, tag) in published.split(';').enumerate() {
        let Some((name, value)) = tag.split_once('=') else {
            continue;
        };
        let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        match name.trim() {
            "v" => version_ok = i == 0 && value == "DKIM1",
            "k" => key_type = value.to_ascii_lowercase(),
            "p" => p = Some(value),
            _ => {}
        }
    }
    version_ok && key_type == alg.key_type() && p.as_deref() == Some(k.public_key.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_unique_dns_labels() {
        let now = Utc::now();
        let a = new_selector(Algorithm::RsaSha256, now);
        let b = new_selector(Algorithm::Ed25519Sha256, now);
        assert_ne!(a, b);
        for s in [a, b] {
            assert!(s.len() <= 63 && s.starts_with("pl"));
            assert!(s
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        }
    }

    #[test]
    fn record_matching() {
        let vault = Vault::new(&[3u8; 32]);
        let k = new_key_row(
            &vault,
            Uuid::new_v4(),
            Uuid::new_v4(),
            Algorithm::Ed25519Sha256,
        )
        .unwrap();
        let value = record_value(&k);
        assert!(value.starts_with("v=DKIM1; k=ed25519; p="));
        assert!(record_matches(&k, &value));
        // Whitespace inside p= (long records split by publishers) is fine.
        let spaced = value.replacen("p=", "p= ", 1);
        assert!(record_matches(&k, &spaced));
        assert!(!record_matches(&k, &value.replace("k=ed25519", "k=rsa")));
        assert!(!record_matches(&k, "v=DKIM1; k=ed25519; p=AAAA"));
        assert!(!record_matches(&k, "k=ed25519; v=DKIM1"));
        // The private key is sealed, bound to its row.
        let opened = vault
            .open(&k.private_key_enc, &private_key_context(k.id))
            .unwrap();
        assert!(vault
            .open(&k.private_key_enc, &private_key_context(Uuid::new_v4()))
            .is_err());
        assert!(!opened.is_empty());
    }
}
