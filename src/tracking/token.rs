//! Self-contained tracking links (API.md "Open and click tracking"): the
//! payload names tenant, message, recipient and, for a click, the URL; an
//! HMAC-SHA256 tag (128 bits) over its kind and bytes signs it. Nothing is
//! looked up to answer a link, so it works after retention purged the
//! message and after the tenant is gone; a payload that does not verify
//! under any key is refused (404), so a link never redirects anywhere its
//! sender did not write.
//!
//! Token: `base64url(payload).base64url(tag)`; payload = version (1),
//! tenant (16), message (16), recipient length (1), recipient, URL (rest;
//! clicks only). The key is derived from the master key (HMAC of a fixed
//! label), previous master keys still verify.

use std::ops::Deref;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::config::{ConfigError, Settings};

const LABEL: &[u8] = b"postline/tracking/v1";
const VERSION: u8 = 1;
const TAG_BYTES: usize = 16;
/// The longest token accepted (characters): a URL of at most
/// `tracking.max_url_bytes` (8 KiB at most) and a recipient fit.
pub const MAX_TOKEN_CHARS: usize = 11_500;

/// Open (`/o/…`) or click (`/c/…`): signed apart, so one cannot stand for
/// the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Open,
    Click,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Open => b'o',
            Kind::Click => b'c',
        }
    }
}

/// What a verified token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub kind: Kind,
    pub tenant_id: Uuid,
    pub email_id: Uuid,
    /// `None` for a message with several recipients (one copy is sent to
    /// all of them, so it cannot name one).
    pub recipient: Option<String>,
    /// The destination (clicks).
    pub url: Option<String>,
}

/// Signs and verifies links. `Debug` shows nothing of the keys.
#[derive(Clone)]
pub struct LinkKeys {
    primary: [u8; 32],
    previous: Vec<[u8; 32]>,
}

impl std::fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKeys([redacted])")
    }
}

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

impl LinkKeys {
    pub fn new(master: &[u8; 32]) -> Self {
        Self::with_previous::<Zeroizing<[u8; 32]>>(master, &[])
    }

    fn with_previous<K: Deref<Target = [u8; 32]>>(master: &[u8; 32], previous: &[K]) -> Self {
        LinkKeys {
            primary: mac(master, &[LABEL]),
            previous: previous.iter().map(|k| mac(k, &[LABEL])).collect(),
        }
    }

    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let master = settings.master_key()?;
        let previous = settings.previous_master_keys()?;
        Ok(Self::with_previous(&master, &previous))
    }

    /// The token of a link; `None` when the recipient is too long to name.
    pub fn token(&self, link: &Link) -> Option<String> {
        let rcpt = link.recipient.as_deref().unwrap_or("");
        let rlen = u8::try_from(rcpt.len()).ok()?;
        let url = link.url.as_deref().unwrap_or("");
        let mut raw = Vec::with_capacity(34 + rcpt.len() + url.len());
        raw.push(VERSION);
        raw.extend_from_slice(link.tenant_id.as_bytes());
        raw.extend_from_slice(link.email_id.as_bytes());
        raw.push(rlen);
        raw.extend_from_slice(rcpt.as_bytes());
        if link.kind == Kind::Click {
            raw.extend_from_slice(url.as_bytes());
        }
        let tag = mac(&self.primary, &[&[link.kind.byte()], &raw]);
        let token = format!("{}.{}", B64.encode(&raw), B64.encode(&tag[..TAG_BYTES]));
        (token.len() <= MAX_TOKEN_CHARS).then_some(token)
    }

    /// What `token` names when its tag verifies under a key (constant-time
    /// compare); `None` for anything else, whatever is wrong with it.
    pub fn verify(&self, kind: Kind, token: &str) -> Option<Link> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        let (payload, tag) = token.rsplit_once('.')?;
        let raw = B64.decode(payload).ok()?;
        let given = B64.decode(tag).ok()?;
        if given.len() != TAG_BYTES {
            return None;
        }
        let verified = std::iter::once(&self.primary)
            .chain(&self.previous)
            .any(|k| constant_eq(&mac(k, &[&[kind.byte()], &raw])[..TAG_BYTES], &given));
        if !verified || raw.len() < 34 || raw[0] != VERSION {
            return None;
        }
        let tenant_id = Uuid::from_slice(&raw[1..17]).ok()?;
        let email_id = Uuid::from_slice(&raw[17..33]).ok()?;
        let rlen = usize::from(raw[33]);
        let rcpt = raw.get(34..34 + rlen)?;
        let rest = &raw[34 + rlen..];
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let recipient = (rlen > 0).then(|| text(rcpt)).flatten();
        let url = match kind {
            Kind::Click => Some(text(rest).filter(|u| is_web_url(u))?),
            Kind::Open => None,
        };
        Some(Link {
            kind,
            tenant_id,
            email_id,
            recipient,
            url,
        })
    }
}

/// An absolute `http:` or `https:` URL: the only links rewritten, and the
/// only destinations a click redirects to.
pub fn is_web_url(u: &str) -> bool {
    let lower = |n: usize| u.get(..n).map(str::to_ascii_lowercase);
    (lower(7).as_deref() == Some("http://") || lower(8).as_deref() == Some("https://"))
        && !u.bytes().any(|b| b.is_ascii_control() || b == b' ')
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(url: &str) -> Link {
        Link {
            kind: Kind::Click,
            tenant_id: Uuid::new_v4(),
            email_id: Uuid::new_v4(),
            recipient: Some("a@example.org".into()),
            url: Some(url.into()),
        }
    }

    #[test]
    fn a_token_verifies_and_names_what_it_was_made_for() {
        let k = LinkKeys::new(&[7; 32]);
        let l = click("https://example.com/a?b=c&d=e");
        let t = k.token(&l).unwrap();
        assert_eq!(k.verify(Kind::Click, &t), Some(l));
        // The same payload cannot pass for an open, nor under another key.
        assert_eq!(k.verify(Kind::Open, &t), None);
        assert_eq!(LinkKeys::new(&[8; 32]).verify(Kind::Click, &t), None);
    }

    #[test]
    fn any_changed_character_is_refused() {
        let k = LinkKeys::new(&[7; 32]);
        let t = k.token(&click("https://example.com/")).unwrap();
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(b).unwrap();
            if changed != t {
                assert_eq!(k.verify(Kind::Click, &changed), None, "at {i}");
            }
        }
        assert_eq!(k.verify(Kind::Click, "x"), None);
        assert_eq!(
            k.verify(Kind::Click, &"A".repeat(MAX_TOKEN_CHARS + 1)),
            None
        );
    }

    #[test]
    fn a_previous_master_key_still_verifies() {
        let old = LinkKeys::new(&[1; 32]);
        let t = old.token(&click("https://example.com/")).unwrap();
        let now = LinkKeys::with_previous(&[2; 32], &[Box::new([1u8; 32])]);
        assert!(now.verify(Kind::Click, &t).is_some());
    }

    #[test]
    fn only_web_urls_are_destinations() {
        assert!(is_web_url("https://a.example/x"));
        assert!(is_web_url("HTTP://a.example/x"));
        for bad in [
            "javascript:alert(1)",
            "//evil.example",
            "mailto:a@b",
            "https://a b",
        ] {
            assert!(!is_web_url(bad), "{bad}");
        }
    }
}
