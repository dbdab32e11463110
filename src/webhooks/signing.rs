//! Standard Webhooks signing: the secret is `whsec_` + base64 of 32 random
//! bytes; a signature is `v1,` + base64 of HMAC-SHA256 over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the decoded bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::config::Secret;

pub const SECRET_PREFIX: &str = "whsec_";

/// A new secret: the raw key (to seal) and its `whsec_…` form (shown
/// once); both are wiped when dropped.
pub fn generate() -> (Zeroizing<Vec<u8>>, Secret) {
    let mut key = Zeroizing::new(vec![0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut key);
    let encoded = Zeroizing::new(STANDARD.encode(&*key));
    let shown = Secret::new(format!("{SECRET_PREFIX}{}", encoded.as_str()));
    (key, shown)
}

/// The key bytes of a `whsec_…` secret.
pub fn decode(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()
}

/// The `webhook-signature` header value.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The context a webhook's secret is sealed under (binds it to its row).
pub fn secret_context(webhook: uuid::Uuid) -> String {
    format!("webhook:{webhook}:secret")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks specification.
        let key = decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secrets_round_trip() {
        let (key, shown) = generate();
        assert!(shown.expose().starts_with("whsec_"));
        assert_eq!(decode(shown.expose()).unwrap(), *key);
        assert_eq!(key.len(), 32);
    }
}
