//! "This browser has signed in as this user before" (issue 22, review of
//! finding 6's class): without it, anyone who knows a user's e-mail address
//! could spend its sign-in throttle (`console.login_failures_per_minute`
//! per address) with wrong passwords, and the user's right password would
//! then get 429 like theirs. A successful sign-in sets a device cookie, an
//! HMAC of the e-mail address and an expiry under a key derived from the
//! master key (OWASP's "device cookies"). A browser that presents one for
//! the address it signs in as is throttled by its own failures alone, not
//! by the address's or the e-mail's, so strangers throttle only browsers
//! new to the user. A stolen device cookie is worth the same few guesses a
//! minute as any browser.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::{ConfigError, Settings};

pub const COOKIE: &str = "postline_console_device";
/// How long a device cookie vouches for a browser after its last sign-in.
pub const LIFETIME_DAYS: i64 = 90;
const LABEL: &[u8] = b"postline console device cookie v1";

/// The key device cookies are signed with. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct DeviceKey([u8; 32]);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey([redacted])")
    }
}

impl DeviceKey {
    pub fn new(master: &[u8; 32]) -> Self {
        DeviceKey(mac(master, &[LABEL]))
    }

    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self::new(&*settings.master_key()?))
    }

    /// The cookie value for `email` (lower-case) signed in at `now`.
    pub fn issue(&self, email: &str, now: DateTime<Utc>) -> String {
        let expires = (now + Duration::days(LIFETIME_DAYS)).timestamp();
        let tag = mac(
            &self.0,
            &[email.as_bytes(), b"\0", expires.to_string().as_bytes()],
        );
        format!("{expires}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// True when `value` was issued for `email` (lower-case) and has not
    /// expired at `now`.
    pub fn vouches(&self, value: &str, email: &str, now: DateTime<Utc>) -> bool {
        let Some((expires, tag)) = value.split_once('.') else {
            return false;
        };
        let (Ok(at), Ok(tag)) = (expires.parse::<i64>(), URL_SAFE_NO_PAD.decode(tag)) else {
            return false;
        };
        if at <= now.timestamp() {
            return false;
        }
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("any key length");
        m.update(email.as_bytes());
        m.update(b"\0");
        m.update(expires.as_bytes());
        m.verify_slice(&tag).is_ok()
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_vouches_for_its_address_until_it_expires() {
        let k = DeviceKey::new(&[7; 32]);
        let now = Utc::now();
        let c = k.issue("ann@example.com", now);
        assert!(k.vouches(&c, "ann@example.com", now));
        assert!(!k.vouches(&c, "bob@example.com", now));
        assert!(!k.vouches(
            &c,
            "ann@example.com",
            now + Duration::days(LIFETIME_DAYS + 1)
        ));
        assert!(!DeviceKey::new(&[8; 32]).vouches(&c, "ann@example.com", now));
        // The expiry is signed: moving it forward breaks the tag.
        let (_, tag) = c.split_once('.').unwrap();
        let later = (now + Duration::days(999)).timestamp();
        assert!(!k.vouches(&format!("{later}.{tag}"), "ann@example.com", now));
        assert!(!k.vouches("garbage", "ann@example.com", now));
    }
}
