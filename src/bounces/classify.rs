//! Hard or soft (RFC 3463 enhanced status codes and the reply text).
//!
//! Hard (the address will not work: suppress it): class 5 with subject 1
//! (address: 5.1.1 mailbox unknown, 5.1.2 domain unknown, 5.1.3 bad syntax,
//! 5.1.6 moved, 5.1.10 null MX), 5.2.1 (mailbox disabled) and 5.4.4
//! (unroutable), or, without an enhanced code, a 5xx whose text says the
//! mailbox or domain does not exist, or a bare 5xx refusal.
//! Soft (may work later: never suppressed): every 4.x.x, 5.2.2 (mailbox
//! full), 5.3.x (system), 5.4.x but 5.4.4 (routing/network), 5.7.x
//! (policy, reputation, spam blocks), greylisting texts.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BounceType {
    Hard,
    Soft,
}

impl BounceType {
    pub fn as_str(self) -> &'static str {
        match self {
            BounceType::Hard => "hard",
            BounceType::Soft => "soft",
        }
    }
}

/// A classified bounce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounce {
    pub bounce_type: BounceType,
    pub status: String,
    pub diagnostic: String,
}

/// A relay's refusal during the SMTP session (e.g. `550 5.1.1 no such
/// user`): its enhanced code, or the one its code and text imply.
pub fn of_reply(reply: &str) -> Bounce {
    let code = find_reply_code(reply);
    let status = find_status(reply)
        .or_else(|| infer_status(code, reply))
        .unwrap_or_else(|| "5.0.0".into());
    Bounce {
        bounce_type: classify(&status, reply),
        status,
        diagnostic: reply.chars().take(1000).collect(),
    }
}

/// An RFC 3463 status `class.subject.detail` found in `text`, e.g. `5.1.1`.
pub fn find_status(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.');
        if boundary && matches!(b[i], b'2' | b'4' | b'5') && b.get(i + 1) == Some(&b'.') {
            let (subject, j) = digits(b, i + 2, 3);
            if subject > 0 && b.get(j) == Some(&b'.') {
                let (detail, k) = digits(b, j + 1, 3);
                let end_ok = b
                    .get(k)
                    .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'.'));
                if detail > 0 && end_ok {
                    return Some(text[i..k].to_string());
                }
            }
        }
        i += 1;
    }
    None
}

/// Up to `max` ASCII digits from `at`: (how many, end index).
fn digits(b: &[u8], at: usize, max: usize) -> (usize, usize) {
    let mut n = 0;
    while n < max && b.get(at + n).is_some_and(u8::is_ascii_digit) {
        n += 1;
    }
    (n, at + n)
}

/// A basic SMTP reply code (`550`, `451`, …) at a word boundary in `text`.
pub fn find_reply_code(text: &str) -> Option<u16> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(2)).find_map(|i| {
        let before_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.');
        let after_ok = b
            .get(i + 3)
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'.'));
        let code = &b[i..i + 3];
        (before_ok
            && after_ok
            && matches!(code[0], b'4' | b'5')
            && code[1].is_ascii_digit()
            && code[2].is_ascii_digit()
            && code[1] <= b'5')
            .then(|| {
                (code[0] - b'0') as u16 * 100
                    + (code[1] - b'0') as u16 * 10
                    + (code[2] - b'0') as u16
            })
    })
}

const UNKNOWN_MAILBOX: [&str; 18] = [
    "user unknown",
    "unknown user",
    "no such user",
    "no such mailbox",
    "mailbox unavailable",
    "mailbox not found",
    "does not exist",
    "doesn't exist",
    "not exist",
    "invalid recipient",
    "recipient rejected",
    "unknown recipient",
    "address rejected",
    "no mailbox",
    "user not found",
    "account disabled",
    "account has been disabled",
    "no longer",
];
const UNKNOWN_DOMAIN: [&str; 4] = [
    "host not found",
    "domain not found",
    "no such domain",
    "name or service not known",
];
const MAILBOX_FULL: [&str; 6] = [
    "mailbox full",
    "mailbox is full",
    "over quota",
    "quota exceeded",
    "exceeded storage",
    "insufficient storage",
];
const GREYLIST: [&str; 3] = ["greylist", "graylist", "try again later"];
const POLICY: [&str; 6] = [
    "spam",
    "blocked",
    "blacklist",
    "blocklist",
    "reputation",
    "policy",
];

fn has_any(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// The status a reply text implies when it has no enhanced code.
pub fn infer_status(code: Option<u16>, text: &str) -> Option<String> {
    let t = text.to_ascii_lowercase();
    let class = match code {
        Some(c) if c >= 500 => '5',
        Some(c) if c >= 400 => '4',
        _ => {
            if has_any(&t, &MAILBOX_FULL) || has_any(&t, &GREYLIST) {
                '4'
            } else {
                '5'
            }
        }
    };
    let status = if has_any(&t, &MAILBOX_FULL) {
        "2.2"
    } else if has_any(&t, &UNKNOWN_DOMAIN) {
        "1.2"
    } else if has_any(&t, &UNKNOWN_MAILBOX) {
        "1.1"
    } else if has_any(&t, &GREYLIST) || has_any(&t, &POLICY) {
        "7.1"
    } else if code.is_some() {
        "0.0"
    } else {
        return None;
    };
    Some(format!("{class}.{status}"))
}

/// Hard or soft for a status (`5.1.1`) and the diagnostic text.
pub fn classify(status: &str, diagnostic: &str) -> BounceType {
    let t = diagnostic.to_ascii_lowercase();
    let mut parts = status.split('.');
    let class = parts.next().unwrap_or("");
    let subject = parts.next().unwrap_or("");
    let detail = parts.next().unwrap_or("");
    if class != "5" {
        return BounceType::Soft;
    }
    if has_any(&t, &GREYLIST) || has_any(&t, &MAILBOX_FULL) {
        return BounceType::Soft;
    }
    match (subject, detail) {
        // 5.1.7 / 5.1.8: the *sender's* address is refused, not the recipient's.
        ("1", "7" | "8") => BounceType::Soft,
        ("1", _) | ("2", "1") | ("4", "4") => BounceType::Hard,
        ("0", _) => {
            // 5.0.0 says nothing: the text decides; a plain refusal is hard.
            if has_any(&t, &POLICY) {
                BounceType::Soft
            } else {
                BounceType::Hard
            }
        }
        _ => BounceType::Soft,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_enhanced_codes_not_versions_or_ips() {
        assert_eq!(
            find_status("550 5.1.1 <a@b>: user unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            find_status("host 10.2.3.4 said 4.7.1 later").as_deref(),
            Some("4.7.1")
        );
        assert_eq!(find_status("Postfix 3.5.2.1"), None);
        assert_eq!(find_status("nothing here"), None);
        assert_eq!(find_reply_code("said: 552 too big"), Some(552));
        assert_eq!(find_reply_code("port 2525 ok"), None);
    }

    #[test]
    fn hard_and_soft_per_rfc_3463() {
        assert_eq!(classify("5.1.1", "user unknown"), BounceType::Hard);
        assert_eq!(classify("5.1.2", ""), BounceType::Hard);
        assert_eq!(classify("5.2.2", "mailbox full"), BounceType::Soft);
        assert_eq!(classify("5.7.1", "blocked by policy"), BounceType::Soft);
        assert_eq!(classify("4.2.2", "over quota"), BounceType::Soft);
        assert_eq!(
            classify("4.7.1", "greylisted, try again later"),
            BounceType::Soft
        );
        assert_eq!(classify("5.0.0", "no such user"), BounceType::Hard);
        assert_eq!(classify("5.0.0", "rejected as spam"), BounceType::Soft);
        assert_eq!(
            infer_status(Some(550), "No such user here").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            infer_status(Some(552), "Mailbox is full").as_deref(),
            Some("5.2.2")
        );
        assert_eq!(infer_status(None, "mailbox full"), Some("4.2.2".into()));
    }
}
