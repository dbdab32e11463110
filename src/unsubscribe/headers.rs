//! The RFC 8058 header fields of a message, per recipient:
//! `List-Unsubscribe: <{public_url}/u/{token}>, <mailto:u+{token}@{bounce
//! domain}>` and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. The
//! worker puts them in the recipient's own transaction, before the content,
//! and signs them with DKIM there (both are in `SIGNED_HEADERS`), so every
//! recipient's link names that recipient. A message whose own headers hold
//! a `List-Unsubscribe` keeps it and gets none of these.

use uuid::Uuid;

use super::token::{UnsubscribeKeys, PREFIX};
use crate::config::Settings;
use crate::emails::stream::Stream;

/// What the links are made of.
#[derive(Clone, Debug)]
pub struct Links {
    keys: UnsubscribeKeys,
    /// `unsubscribe.public_url`, without a trailing `/`; empty: no URL.
    public_url: String,
    /// `bounces.domain`; empty: no `mailto:`.
    mail_domain: String,
}

impl Links {
    /// `None` when neither a public URL nor a bounce domain is configured
    /// (or the master key is unusable).
    pub fn from_settings(settings: &Settings) -> Option<Links> {
        let public_url = settings
            .unsubscribe
            .public_url
            .trim_end_matches('/')
            .to_string();
        let mail_domain = settings.bounces.domain.trim().to_ascii_lowercase();
        if public_url.is_empty() && mail_domain.is_empty() {
            return None;
        }
        Some(Links {
            keys: UnsubscribeKeys::from_settings(settings).ok()?,
            public_url,
            mail_domain,
        })
    }

    /// The header lines (each ending in CRLF) for `recipient`; `None` when
    /// its address cannot be carried by a token.
    pub fn lines(&self, tenant: Uuid, stream: Stream, recipient: &str) -> Option<String> {
        let token = self.keys.token(tenant, stream, recipient)?;
        let mut targets = Vec::new();
        if !self.public_url.is_empty() {
            targets.push(format!("<{}/u/{token}>", self.public_url));
        }
        if !self.mail_domain.is_empty() {
            targets.push(format!("<mailto:{PREFIX}{token}@{}>", self.mail_domain));
        }
        // Folded between the two targets: each line stays well within 998.
        let mut out = format!("List-Unsubscribe: {}\r\n", targets.join(",\r\n "));
        if !self.public_url.is_empty() {
            out.push_str("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        }
        Some(out)
    }
}

/// True when the header block of `raw` holds a `List-Unsubscribe` field.
pub fn has_list_unsubscribe(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"list-unsubscribe:";
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return false;
        }
        if line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_detection() {
        let l = Links {
            keys: UnsubscribeKeys::new(&[1; 32], &[]),
            public_url: "https://mail.example".into(),
            mail_domain: "bounce.example".into(),
        };
        let h = l
            .lines(Uuid::nil(), Stream::Broadcast, "a@b.example")
            .expect("lines");
        assert!(
            h.starts_with("List-Unsubscribe: <https://mail.example/u/"),
            "{h}"
        );
        assert!(h.contains(",\r\n <mailto:u+"), "{h}");
        assert!(h.ends_with("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        assert!(h.lines().all(|x| x.len() < 998));
        assert!(has_list_unsubscribe(
            b"From: a\r\nlist-unsubscribe: <x>\r\n\r\nbody"
        ));
        assert!(!has_list_unsubscribe(
            b"From: a\r\n\r\nList-Unsubscribe: <x>\r\n"
        ));
    }
}
