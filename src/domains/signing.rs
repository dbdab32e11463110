//! DKIM signing of outgoing mail (relaxed/relaxed, RFC 6376; Ed25519 per RFC
//! 8463 as a second signature). The worker calls [`Signer::sign`] with the
//! bytes it is about to send and sends what it returns: the same bytes with
//! the DKIM-Signature header(s) prepended. A domain's decrypted keys are kept
//! in memory for `domains.cache_secs`, so the hot path does no database round
//! trip and no decryption per message.

use std::sync::Arc;
use std::time::Duration;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use moka::future::Cache;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use uuid::Uuid;

use super::keys::{private_key_context, Algorithm};
use super::model::{self, DkimKeyRow};
use super::sending::suffixes;
use crate::crypto::Vault;
use crate::db::{self, PgPool};
use crate::domain::TenantId;
use crate::error::AppError;

/// The headers signed when present (API.md: at least From, To, Cc, Subject,
/// Date, Message-ID, MIME-Version, Content-Type, Reply-To).
/// `List-Unsubscribe` and `List-Unsubscribe-Post` too (RFC 8058 §4: the
/// one-click headers must be covered by the signature).
pub const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Reply-To",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// One ready-to-use signing key.
pub enum LoadedKey {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

impl LoadedKey {
    /// Builds a signer for `domain` from a PKCS#8 private key.
    pub fn new(alg: Algorithm, pkcs8: &[u8], domain: &str, selector: &str) -> anyhow::Result<Self> {
        let fail = |e: mail_auth::Error| anyhow::anyhow!("DKIM key does not load: {e}");
        Ok(match alg {
            Algorithm::RsaSha256 => LoadedKey::Rsa(
                DkimSigner::from_key(
                    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                        pkcs8,
                    )))
                    .map_err(fail)?,
                )
                .domain(domain)
                .selector(selector)
                .headers(SIGNED_HEADERS),
            ),
            Algorithm::Ed25519Sha256 => LoadedKey::Ed25519(
                DkimSigner::from_key(Ed25519Key::from_pkcs8_der(pkcs8).map_err(fail)?)
                    .domain(domain)
                    .selector(selector)
                    .headers(SIGNED_HEADERS),
            ),
        })
    }

    fn header(&self, raw: &[u8]) -> mail_auth::Result<String> {
        Ok(match self {
            LoadedKey::Rsa(s) => s.sign(raw)?.to_header(),
            LoadedKey::Ed25519(s) => s.sign(raw)?.to_header(),
        })
    }
}

/// Signs `raw` with every key: each signature covers the message as given
/// (not the other signatures), and all are prepended.
pub fn sign_with(keys: &[LoadedKey], raw: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if keys.is_empty() {
        return Ok(raw);
    }
    let mut headers = String::new();
    for k in keys {
        headers.push_str(
            &k.header(&raw)
                .map_err(|e| anyhow::anyhow!("DKIM signing: {e}"))?,
        );
    }
    let mut out = Vec::with_capacity(headers.len() + raw.len());
    out.extend_from_slice(headers.as_bytes());
    out.extend_from_slice(&raw);
    Ok(out)
}

type Keys = Arc<Vec<LoadedKey>>;

/// Signs outgoing mail with the active keys of the sender's domain.
#[derive(Clone)]
pub struct Signer {
    pool: PgPool,
    vault: Vault,
    cache: Cache<(Uuid, String), Keys>,
}

impl Signer {
    pub fn new(pool: PgPool, vault: Vault, ttl: Duration) -> Self {
        Self {
            pool,
            vault,
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// `raw` signed for the From domain of `from_addr` when the tenant has a
    /// domain with active keys that is it or a parent of it; unchanged
    /// otherwise. `Err` when the keys cannot be loaded (database down, key
    /// undecryptable): the caller defers rather than send unsigned mail a
    /// DMARC policy would reject.
    pub async fn sign(
        &self,
        tenant: Uuid,
        from_addr: &str,
        raw: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let Some(domain) = from_domain(from_addr) else {
            return Ok(raw);
        };
        let keys = self.keys_for(TenantId(tenant), domain).await?;
        if keys.is_empty() {
            return Ok(raw);
        }
        // RSA signing is CPU work (~1 ms): off the async threads.
        tokio::task::spawn_blocking(move || sign_with(&keys, raw))
            .await
            .map_err(|e| format!("DKIM signing task: {e}"))?
            .map_err(|e| format!("{e:#}"))
    }

    async fn keys_for(&self, tenant: TenantId, domain: String) -> Result<Keys, String> {
        let (pool, vault) = (self.pool.clone(), self.vault.clone());
        let names = suffixes(&domain);
        self.cache
            .try_get_with((tenant.0, domain), async move {
                let rows = db::run(&pool, move |conn| {
                    Ok(model::active_keys_for(conn, tenant, &names)?)
                })
                .await?;
                load(&vault, rows).map_err(|e| AppError::internal("DKIM keys", format!("{e:#}")))
            })
            .await
            .map_err(|e| format!("DKIM keys unavailable: {e}"))
    }
}

/// The active keys of the most specific domain that has any.
fn load(vault: &Vault, mut rows: Vec<(String, DkimKeyRow)>) -> anyhow::Result<Keys> {
    let Some(longest) = rows.iter().map(|(n, _)| n.len()).max() else {
        return Ok(Arc::new(Vec::new()));
    };
    rows.retain(|(n, _)| n.len() == longest);
    // RSA first: receivers that check only the first signature know RSA.
    rows.sort_by_key(|(_, k)| k.algorithm != "rsa-sha256");
    let mut out = Vec::with_capacity(rows.len());
    for (name, k) in rows {
        let Some(alg) = Algorithm::parse(&k.algorithm) else {
            continue;
        };
        let pkcs8 = vault
            .open(&k.private_key_enc, &private_key_context(k.id))
            .map_err(|e| anyhow::anyhow!("DKIM key {} of {name}: {e}", k.selector))?;
        out.push(LoadedKey::new(alg, &pkcs8, &name, &k.selector)?);
    }
    Ok(Arc::new(out))
}

/// The lower-cased domain of a stored From mailbox (`Name <a@b>` or `a@b`).
pub fn from_domain(from_addr: &str) -> Option<String> {
    let addr = match (from_addr.rfind('<'), from_addr.rfind('>')) {
        (Some(open), Some(close)) if open < close => &from_addr[open + 1..close],
        _ => from_addr,
    };
    let (_, domain) = addr.trim().rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_domains() {
        assert_eq!(
            from_domain("Acme <a@Mail.Acme.com>").as_deref(),
            Some("mail.acme.com")
        );
        assert_eq!(from_domain("a@acme.com").as_deref(), Some("acme.com"));
        assert_eq!(from_domain("\"x@y\" <a@b.c>").as_deref(), Some("b.c"));
        assert_eq!(from_domain("nobody"), None);
    }
}
