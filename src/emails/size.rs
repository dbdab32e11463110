//! Size bounds of one message (issue 11, finding 2): attachment count and
//! decoded sizes, and the whole message as it will be MIME-encoded
//! (`limits.max_message_bytes`), checked at acceptance so nothing oversize
//! is stored. Templates are rendered before this check, so a small request
//! cannot turn into large messages unchecked.

use crate::config::LimitSettings;
use crate::error::{AppError, FieldError};

use super::input::ValidEmail;

/// The limits of [`LimitSettings`] a message is checked against.
#[derive(Clone, Copy, Debug)]
pub struct SizeLimits {
    pub max_message_bytes: usize,
    pub max_attachments: usize,
    pub max_attachment_bytes: usize,
    pub max_attachments_total_bytes: usize,
}

impl From<&LimitSettings> for SizeLimits {
    fn from(l: &LimitSettings) -> Self {
        Self {
            max_message_bytes: l.max_message_bytes,
            max_attachments: l.max_attachments,
            max_attachment_bytes: l.max_attachment_bytes,
            max_attachments_total_bytes: l.max_attachments_total_bytes,
        }
    }
}

/// Bytes of `n` bytes base64-encoded in lines of 76 characters plus CRLF,
/// as lettre writes attachments.
pub fn base64_lines(n: usize) -> usize {
    let chars = n.div_ceil(3) * 4;
    chars + chars.div_ceil(76) * 2
}

/// Bytes a text body takes in the message: lettre picks 7bit, 8bit,
/// quoted-printable or base64 and converts line ends to CRLF; this is the
/// encoded length of that same choice.
fn body_bytes(body: &str) -> usize {
    lettre::message::Body::new(body.to_string()).len()
}

/// Overhead per part and for the fixed headers (Date, Message-ID,
/// MIME-Version, boundaries, Content-Type lines), rounded up.
const PART_OVERHEAD: usize = 256;
const MESSAGE_OVERHEAD: usize = 1024;

/// The size of `m` once MIME-encoded: exact for the bodies and attachments
/// (the bulk), an upper estimate (within about a kilobyte) for headers,
/// where encoded words may triple non-ASCII text.
pub fn encoded_size(m: &ValidEmail, attachment_sizes: &[usize]) -> usize {
    let addresses: usize = [&m.to, &m.cc, &m.reply_to]
        .into_iter()
        .flatten()
        .map(|a| a.len() * 3 + 4)
        .sum();
    let headers: usize = m
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() * 3 + 4)
        .sum();
    let bodies: usize = [&m.text, &m.html]
        .into_iter()
        .flatten()
        .map(|b| body_bytes(b) + PART_OVERHEAD)
        .sum();
    let attachments: usize = m
        .attachments
        .iter()
        .zip(attachment_sizes)
        .map(|(a, n)| base64_lines(*n) + a.filename.len() * 3 + PART_OVERHEAD)
        .sum();
    MESSAGE_OVERHEAD
        + m.from.len() * 3
        + m.subject.len() * 3
        + addresses
        + headers
        + bodies
        + attachments
}

/// 422 `message_too_large` when `m` would exceed `limits.max_message_bytes`.
pub fn check_message(
    m: &ValidEmail,
    attachment_sizes: &[usize],
    limits: &SizeLimits,
    prefix: &str,
) -> Result<(), AppError> {
    let size = encoded_size(m, attachment_sizes);
    if size <= limits.max_message_bytes {
        return Ok(());
    }
    let max = limits.max_message_bytes;
    Err(AppError::Validation {
        code: "message_too_large",
        detail: format!(
            "The message would be about {size} bytes MIME-encoded; the limit is {max} bytes \
             (limits.max_message_bytes)."
        ),
        errors: vec![FieldError::new(
            format!("{prefix}{}", largest_part(m, attachment_sizes)),
            format!("the encoded message exceeds {max} bytes"),
        )],
    })
}

/// The field to blame: the largest of html, text and the attachments.
fn largest_part(m: &ValidEmail, attachment_sizes: &[usize]) -> &'static str {
    let html = m.html.as_ref().map_or(0, String::len);
    let text = m.text.as_ref().map_or(0, String::len);
    let attachments: usize = attachment_sizes.iter().sum();
    if attachments >= html && attachments >= text {
        "attachments"
    } else if html >= text {
        "html"
    } else {
        "text"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_line_arithmetic() {
        assert_eq!(base64_lines(0), 0);
        assert_eq!(base64_lines(3), 6);
        assert_eq!(base64_lines(57), 78);
        assert_eq!(base64_lines(58), 84);
    }

    #[test]
    fn body_bytes_counts_the_encoding() {
        // 7bit, LF → CRLF.
        assert_eq!(body_bytes("a\nb"), 4);
        // Non-ASCII is encoded (quoted-printable or base64), never smaller.
        assert!(body_bytes(&"é".repeat(1000)) > 2000);
    }
}
