//! RFC 6238 time-based one-time passwords as authenticator apps use them:
//! HMAC-SHA1 (ring's), 6 digits, 30 s steps, a 160-bit secret shown as
//! base32 and as an `otpauth://` URI. Pure functions; the stored state is
//! `second_factor`'s.

use rand::RngCore;
use ring::hmac;
use zeroize::Zeroizing;

/// Seconds per time step.
pub const STEP_SECS: i64 = 30;
/// Digits of a code.
pub const DIGITS: usize = 6;
/// Bytes of a secret (160 bits, RFC 4226's recommendation).
pub const SECRET_BYTES: usize = 20;
/// The issuer shown by authenticator apps.
pub const ISSUER: &str = "Postline";

/// A fresh random secret.
pub fn new_secret() -> Zeroizing<Vec<u8>> {
    let mut raw = Zeroizing::new(vec![0u8; SECRET_BYTES]);
    rand::thread_rng().fill_bytes(&mut raw);
    raw
}

/// The secret as authenticator apps take it: base32 without padding.
pub fn base32(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// The `otpauth://totp/...` URI (what a QR code would carry).
pub fn uri(secret: &[u8], account: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let label = utf8_percent_encode(&format!("{ISSUER}:{account}"), NON_ALPHANUMERIC).to_string();
    format!(
        "otpauth://totp/{label}?secret={}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        base32(secret)
    )
}

/// The time step of a Unix time.
pub fn step_at(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(STEP_SECS)
}

/// The code of one time step (RFC 4226 dynamic truncation).
pub fn code(secret: &[u8], step: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let word = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    format!("{:06}", word % 1_000_000)
}

/// The step in `now - 1 ..= now + 1` whose code `given` is, if any. The
/// input must be exactly six ASCII digits (spaces around are trimmed);
/// codes are compared in constant time.
pub fn matching_step(secret: &[u8], given: &str, now_step: i64) -> Option<i64> {
    let given = given.trim();
    if given.len() != DIGITS || !given.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut found = None;
    for step in [now_step - 1, now_step, now_step + 1] {
        let c = code(secret, step);
        let same = c
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if same && found.is_none() {
            found = Some(step);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA1, last six of the eight digits.
    #[test]
    fn rfc_6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, want) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(code(secret, step_at(t)), want, "t={t}");
        }
    }

    #[test]
    fn window_is_one_step_each_side_and_input_is_six_digits() {
        let secret = b"12345678901234567890";
        let now = step_at(1_234_567_890);
        for d in -1..=1 {
            assert_eq!(
                matching_step(secret, &code(secret, now + d), now),
                Some(now + d)
            );
        }
        for d in [-2, 2] {
            assert_eq!(matching_step(secret, &code(secret, now + d), now), None);
        }
        let c = code(secret, now);
        assert_eq!(matching_step(secret, &format!(" {c} "), now), Some(now));
        for bad in ["", "12345", "1234567", "12345a", "１２３４５６"] {
            assert_eq!(matching_step(secret, bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn uri_names_issuer_account_and_parameters() {
        let u = uri(b"12345678901234567890", "a+b@example.com");
        assert_eq!(
            u,
            "otpauth://totp/Postline%3Aa%2Bb%40example%2Ecom?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Postline&algorithm=SHA1&digits=6&period=30"
        );
    }
}
