//! The header block of a message that arrives whole (SMTP submission), read
//! line by line before anything trusts a parsed value (issue 22, finding 1).
//!
//! A parser answers one value for a header field; a receiving mail program
//! may show another when the field appears twice (one reader takes the
//! first `From:`, another the last). So the fields RFC 5322 §3.6 allows at
//! most once must appear at most once, `From:` exactly once, and every line
//! of the block must be a field or the continuation of one: a line without
//! a colon, a name outside RFC 5322 `ftext`, a bare CR (which some readers
//! take as a line break) or a NUL makes the header set malformed. Also here:
//! the one mailbox of `From` / `Sender`, the `Resent-*` author domains, and
//! removing the fields Postline does not pass on.

use lettre::message::Mailbox;
use mail_parser::{Address, HeaderName};

use crate::domain::parse_email;
use crate::error::{AppError, AppResult, FieldError};

/// Fields RFC 5322 §3.6 allows at most once (`From` must be there, once).
/// `Bcc` is left out: its lines are removed before sending anyway.
const AT_MOST_ONCE: [&str; 10] = [
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
];

/// The code of a refused header set: `554 5.6.0` over SMTP, 422 elsewhere.
pub const MALFORMED: &str = "malformed_headers";

/// A 422 `malformed_headers` naming the field (`headers.from`, …).
pub fn malformed(field: &str, why: impl Into<String>) -> AppError {
    let why = why.into();
    AppError::Validation {
        code: MALFORMED,
        detail: why.clone(),
        errors: vec![FieldError::new(format!("headers.{field}"), why)],
    }
}

/// Where the header block ends: just past the line break that ends its
/// last line (the empty line that follows is the body's), or the whole
/// message when it has no body.
pub fn header_end(message: &[u8]) -> usize {
    let mut at = 0;
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            return at;
        }
        at += line.len();
    }
    message.len()
}

/// Checks the header block of `message`: well-formed lines, exactly one
/// `From`, the once-only fields at most once.
pub fn check(message: &[u8]) -> Result<(), AppError> {
    let head = &message[..header_end(message)];
    let mut counts = [0usize; AT_MOST_ONCE.len()];
    for (i, line) in head.split_inclusive(|b| *b == b'\n').enumerate() {
        let text = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        let n = i + 1;
        if text.contains(&b'\r') || text.contains(&0) {
            return Err(malformed(
                "line",
                format!("header line {n} holds a bare CR or a NUL"),
            ));
        }
        if matches!(text.first(), Some(b' ' | b'\t')) {
            if i == 0 {
                return Err(malformed(
                    "line",
                    "the message starts with a folded line, not a header field",
                ));
            }
            continue;
        }
        let Some(colon) = text.iter().position(|b| *b == b':') else {
            return Err(malformed(
                "line",
                format!("header line {n} is not a field (no colon)"),
            ));
        };
        // RFC 5322 §4.5.3 (obsolete syntax) allows blanks before the colon;
        // readers that accept it see the same name.
        let name = text[..colon].trim_ascii_end();
        if name.is_empty() || !name.iter().all(|b| (33..=126).contains(b)) {
            return Err(malformed(
                "line",
                format!("header line {n} has no valid field name"),
            ));
        }
        if let Some(k) = AT_MOST_ONCE
            .iter()
            .position(|f| name.eq_ignore_ascii_case(f.as_bytes()))
        {
            counts[k] += 1;
        }
    }
    for (k, field) in AT_MOST_ONCE.iter().enumerate() {
        let n = counts[k];
        let title = display(field);
        if *field == "from" && n != 1 {
            return Err(malformed(
                field,
                format!("the message has {n} {title} header fields; exactly one is required"),
            ));
        }
        if n > 1 {
            return Err(malformed(
                field,
                format!("the message has {n} {title} header fields; at most one is allowed"),
            ));
        }
    }
    Ok(())
}

/// The one mailbox of a `From` or `Sender` field: a list (not a group) of
/// exactly one address that parses.
pub fn single_mailbox(field: &str, a: Option<&Address<'_>>) -> AppResult<Mailbox> {
    let one = || {
        malformed(
            field,
            format!("the {field} header field must hold exactly one address"),
        )
    };
    let Some(Address::List(list)) = a else {
        return Err(one());
    };
    let [only] = list.as_slice() else {
        return Err(one());
    };
    let address = parse_email(field, only.address().unwrap_or_default()).map_err(|_| one())?;
    Ok(Mailbox::new(
        only.name()
            .map(|n| super::raw::plain_text(n, 256))
            .filter(|n| !n.trim().is_empty()),
        address.parse().map_err(|_| one())?,
    ))
}

/// The domains of every address in the `Resent-From` / `Resent-Sender`
/// fields (RFC 5322 §3.6.6: a message may carry several resent blocks).
pub fn resent_domains(
    msg: &mail_parser::Message<'_>,
    out: &mut Vec<(&'static str, String)>,
) -> AppResult<()> {
    for (name, field) in [
        (HeaderName::ResentFrom, "resent_from"),
        (HeaderName::ResentSender, "resent_sender"),
    ] {
        for value in msg.header_values(name) {
            let bad = || {
                malformed(
                    field,
                    format!("the {field} header field must hold addresses"),
                )
            };
            let addrs = value.as_address().ok_or_else(bad)?;
            for a in addrs.iter() {
                let address =
                    parse_email(field, a.address().unwrap_or_default()).map_err(|_| bad())?;
                let domain = address
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .ok_or_else(bad)?;
                if !out.iter().any(|(f, d)| *f == field && *d == domain) {
                    out.push((field, domain));
                }
            }
        }
    }
    Ok(())
}

/// Header fields removed from a submitted message (lower-case): `Bcc` (the
/// envelope carries it), the scheduling instruction, `Return-Path` (added at
/// final delivery) and `X-Postline-ID` (Postline writes its own).
pub const REMOVED: &[&[u8]] = &[
    b"bcc",
    b"x-postline-scheduled-at",
    b"return-path",
    b"x-postline-id",
    b"x-postline-stream",
];

/// Appends `message` to `out` without the header fields named in `names`
/// (lower-case), folded continuation lines included; the body is untouched.
pub fn strip_headers(message: &[u8], names: &[&[u8]], out: &mut Vec<u8>) {
    let (head, body) = message.split_at(header_end(message));
    let mut dropping = false;
    for line in head.split_inclusive(|b| *b == b'\n') {
        let folded = matches!(line.first(), Some(b' ' | b'\t'));
        if !folded {
            dropping = names.iter().any(|name| {
                line.len() > name.len()
                    && line[..name.len()].eq_ignore_ascii_case(name)
                    && line[name.len()..].trim_ascii_start().first() == Some(&b':')
            });
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
}

/// `message-id` → `Message-ID`, `reply-to` → `Reply-To`.
fn display(field: &str) -> String {
    if field == "message-id" {
        return "Message-ID".into();
    }
    field
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(m: &[u8]) -> String {
        match check(m) {
            Err(AppError::Validation { code, detail, .. }) => {
                assert_eq!(code, MALFORMED);
                detail
            }
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(m)),
        }
    }

    #[test]
    fn one_from_and_once_only_fields() {
        check(b"From: a@x.com\r\nTo: b@y.com\r\nSubject: s\r\n\r\nFrom: body@z.com\r\n").unwrap();
        assert!(refused(b"From: a@x.com\r\nfrom : c@z.com\r\n\r\nb\r\n").contains("2 From"));
        assert!(refused(b"To: b@y.com\r\n\r\nb\r\n").contains("0 From"));
        for f in [
            "Subject",
            "To",
            "Date",
            "Message-ID",
            "Sender",
            "Cc",
            "Reply-To",
        ] {
            let m = format!(
                "From: a@x.com\r\n{f}: 1\r\n{}: 2\r\n\r\nb\r\n",
                f.to_uppercase()
            );
            assert!(refused(m.as_bytes()).contains(&format!("2 {f} ")), "{f}");
        }
        // Bcc lines are removed before sending: two are not refused.
        check(b"From: a@x.com\r\nBcc: b@y.com\r\nBcc: c@y.com\r\n\r\n").unwrap();
    }

    #[test]
    fn lines_that_are_not_fields_are_refused() {
        assert!(refused(b"From: a@x.com\r\nSubject: s\rFrom: e@z.com\r\n\r\n").contains("bare CR"));
        assert!(refused(b"From: a@x.com\r\nno colon here\r\n\r\n").contains("no colon"));
        assert!(refused(b" From: a@x.com\r\n\r\n").contains("folded"));
        assert!(refused(b"From: a@x.com\r\nX Y: z\r\n\r\n").contains("field name"));
        assert!(refused(b"From: a@x.com\r\n: z\r\n\r\n").contains("field name"));
        // Folded continuations belong to their field.
        check(b"From: a@x.com\r\nSubject: a\r\n  b\r\n\tc\r\n\r\n").unwrap();
    }

    #[test]
    fn the_header_block_ends_at_the_first_empty_line() {
        assert_eq!(header_end(b"A: b\r\n\r\nC: d\r\n"), 6);
        assert_eq!(header_end(b"A: b\n\nC: d\n"), 5);
        assert_eq!(header_end(b"A: b\r\n"), 6);
    }

    #[test]
    fn bcc_lines_are_removed_with_their_folds() {
        let m = b"From: a@x.com\r\nBcc: s@y.com,\r\n  t@y.com\r\nBccx: keep\r\nTo: b@x.com\r\n\r\nBcc: body stays\r\n";
        let mut out = Vec::new();
        strip_headers(m, REMOVED, &mut out);
        assert_eq!(
            out,
            b"From: a@x.com\r\nBccx: keep\r\nTo: b@x.com\r\n\r\nBcc: body stays\r\n".to_vec()
        );
    }
}
