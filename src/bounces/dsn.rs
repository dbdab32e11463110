//! What a bounce or complaint says: RFC 3464 delivery status notifications
//! (`message/delivery-status` parts, parsed by field), the non-standard
//! bounces of common MTAs (the human-readable text: the first foreign
//! address and the status or reply code near it, or the phrase that implies
//! one), and RFC 5965 ARF reports (`mail-auth`'s parser). MIME is
//! `mail-parser`'s. Nothing here touches the database, and no input makes it
//! fail: at worst the report is empty.

use mail_auth::report::Feedback;
use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::classify::{self, BounceType};

/// One recipient the report says failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Lower-cased bare address.
    pub recipient: String,
    /// RFC 3463 status, e.g. `5.1.1` (from the report, or implied by its
    /// reply code or text; `5.0.0`/`4.0.0` when only the class is known).
    pub status: String,
    /// The remote server's reply or the report's explanation.
    pub diagnostic: String,
    pub bounce_type: BounceType,
    /// False when the status was only assumed (nothing in the report said).
    pub status_found: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A standard DSN (RFC 3464).
    Dsn,
    /// A bounce without a delivery-status part.
    NonStandard,
    /// An ARF report (RFC 5965).
    Complaint { feedback_type: String },
}

#[derive(Clone, Debug)]
pub struct Report {
    pub kind: Kind,
    /// Failed recipients (empty for complaints and for DSNs that only report
    /// delays or successes).
    pub failures: Vec<Failure>,
    /// A complaint's original recipient, when the report names it.
    pub complained: Option<String>,
    pub reporting_mta: Option<String>,
    /// Candidate Postline tokens found (`X-Postline-ID` values, `b+` local
    /// parts) — verified by the caller.
    pub tokens: Vec<String>,
}

/// Parses one message. `None` only when it has no headers at all.
pub fn parse(raw: &[u8]) -> Option<Report> {
    let msg = MessageParser::default().parse(raw)?;
    let tokens = find_tokens(raw);
    if let Ok(fb) = Feedback::parse_rfc5322(raw) {
        let complained = fb.original_rcpt_to().and_then(first_address).or_else(|| {
            let original = fb.message().or(fb.headers())?;
            header_address(original, "to")
        });
        return Some(Report {
            kind: Kind::Complaint {
                feedback_type: format!("{:?}", fb.feedback_type()).to_ascii_lowercase(),
            },
            failures: Vec::new(),
            complained,
            reporting_mta: fb.reporting_mta().map(|m| truncate(m, 255)),
            tokens,
        });
    }
    if let Some(complained) = microsoft_feedback(&msg, raw) {
        return Some(Report {
            kind: Kind::Complaint {
                feedback_type: "abuse".into(),
            },
            failures: Vec::new(),
            complained,
            reporting_mta: Some("jmrp".into()),
            tokens,
        });
    }
    let mut failures = Vec::new();
    let mut reporting_mta = None;
    let mut standard = false;
    for part in &msg.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
        if ct.ctype().eq_ignore_ascii_case("message")
            && (sub == "delivery-status" || sub == "global-delivery-status")
        {
            standard = true;
            let text = String::from_utf8_lossy(part.contents());
            let (mta, found) = parse_delivery_status(&text);
            reporting_mta = reporting_mta.or(mta);
            failures.extend(found);
        }
    }
    if standard && !failures.is_empty() {
        return Some(Report {
            kind: Kind::Dsn,
            failures,
            complained: None,
            reporting_mta,
            tokens,
        });
    }
    // Non-standard: the human-readable part of the bounce.
    let mut text = String::new();
    for part in &msg.parts {
        if let PartType::Text(t) = &part.body {
            let is_plain = part
                .content_type()
                .map(|c| {
                    c.ctype().eq_ignore_ascii_case("text")
                        && c.subtype().is_none_or(|s| s.eq_ignore_ascii_case("plain"))
                })
                .unwrap_or(true);
            if is_plain {
                text.push_str(t);
                text.push('\n');
            }
        }
    }
    if text.trim().is_empty() {
        if let Some(html) = msg.body_html(0) {
            text = strip_tags(&html);
        }
    }
    let exclude: Vec<String> = ["from", "to", "return-path", "reply-to"]
        .iter()
        .filter_map(|h| header_address(std::str::from_utf8(raw).unwrap_or(""), h))
        .collect();
    let failures = non_standard(cut_original(&text), &exclude)
        .into_iter()
        .collect::<Vec<_>>();
    Some(Report {
        kind: if standard {
            Kind::Dsn
        } else {
            Kind::NonStandard
        },
        failures,
        complained: None,
        reporting_mta,
        tokens,
    })
}

/// Header blocks of a `message/delivery-status` body: the per-message block
/// (Reporting-MTA) and one per recipient. Only `failed` recipients count
/// (and those with a 5.x.x status and no action).
fn parse_delivery_status(text: &str) -> (Option<String>, Vec<Failure>) {
    let mut reporting = None;
    let mut out = Vec::new();
    for block in blocks(text) {
        let get = |name: &str| {
            block
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if let Some(mta) = get("reporting-mta") {
            reporting = Some(truncate(after_type(mta), 255));
        }
        let Some(rcpt) = get("final-recipient")
            .or(get("original-recipient"))
            .and_then(|v| first_address(after_type(v)))
        else {
            continue;
        };
        let action = get("action").unwrap_or("").trim().to_ascii_lowercase();
        let diagnostic = get("diagnostic-code").map(after_type).unwrap_or("").trim();
        let given = get("status").and_then(classify::find_status);
        let status_found = given.is_some();
        let status = given
            .or_else(|| classify::find_status(diagnostic))
            .or_else(|| classify::infer_status(classify::find_reply_code(diagnostic), diagnostic));
        let failed = match action.as_str() {
            "failed" => true,
            "" => status.as_deref().is_some_and(|s| s.starts_with('5')),
            _ => false,
        };
        if !failed {
            continue;
        }
        let status_found = status_found || status.is_some();
        let status = status.unwrap_or_else(|| "5.0.0".into());
        out.push(Failure {
            bounce_type: classify::classify(&status, diagnostic),
            recipient: rcpt,
            status,
            diagnostic: truncate(diagnostic, 1000),
            status_found,
        });
    }
    (reporting, out)
}

/// `rfc822; a@b` → `a@b`; `dns; mx.example` → `mx.example`.
fn after_type(v: &str) -> &str {
    v.split_once(';').map(|(_, r)| r).unwrap_or(v).trim()
}

/// Header-style blocks separated by blank lines, folded lines joined.
fn blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut all = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                all.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        all.push(cur);
    }
    all
}

/// The text before the quoted original message.
fn cut_original(text: &str) -> &str {
    const MARKERS: [&str; 7] = [
        "------ this is a copy of the message",
        "----- original message",
        "-----original message",
        "original message follows",
        "--- below this line is a copy of the message",
        "------- returned message",
        "content-type: message/rfc822",
    ];
    let lower = text.to_ascii_lowercase();
    let cut = MARKERS
        .iter()
        .filter_map(|m| lower.find(m))
        .min()
        .unwrap_or(text.len());
    // `lower` has the same byte offsets (ASCII lower-casing only).
    text.get(..cut).unwrap_or(text)
}

/// The first foreign address in the text and the status near it.
fn non_standard(text: &str, exclude: &[String]) -> Option<Failure> {
    let lower = text.to_ascii_lowercase();
    let mut at = 0;
    let mut found = None;
    while let Some((addr, start, end)) = next_address(&lower, at) {
        at = end;
        let local = addr.split('@').next().unwrap_or("");
        if exclude.contains(&addr)
            || [
                "mailer-daemon",
                "postmaster",
                "mail-daemon",
                "root",
                "noreply",
            ]
            .contains(&local)
        {
            continue;
        }
        found = Some((addr, start));
        break;
    }
    let (recipient, start) = found?;
    // The explanation is usually right after the address (Exim, qmail,
    // Postfix's text); some put it before: look in a window around it.
    let from = start.saturating_sub(600);
    let window = &text[floor_char(text, from)..floor_char(text, (start + 1200).min(text.len()))];
    let after = &text[start..floor_char(text, (start + 1200).min(text.len()))];
    let given = classify::find_status(after).or_else(|| classify::find_status(window));
    let code = classify::find_reply_code(after).or_else(|| classify::find_reply_code(window));
    let inferred = given
        .clone()
        .or_else(|| classify::infer_status(code, window));
    let status_found = inferred.is_some();
    let status = inferred.unwrap_or_else(|| "5.0.0".into());
    let diagnostic = diagnostic_line(after);
    Some(Failure {
        bounce_type: classify::classify(&status, &diagnostic),
        recipient,
        status,
        diagnostic,
        status_found,
    })
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The first line after the address that looks like a server reply.
fn diagnostic_line(after: &str) -> String {
    let line = after
        .lines()
        .map(str::trim)
        .find(|l| classify::find_reply_code(l).is_some() || classify::find_status(l).is_some())
        .or_else(|| after.lines().map(str::trim).find(|l| l.len() > 10))
        .unwrap_or("");
    truncate(line, 1000)
}

/// At most `max` bytes of `s`, without control characters (tabs stay): a
/// decoded body can hold a NUL (`=00` in quoted-printable), which Postgres
/// text and jsonb refuse, and the report would be answered 451 forever.
fn truncate(s: &str, max: usize) -> String {
    s.get(..floor_char(s, max.min(s.len())))
        .unwrap_or("")
        .chars()
        .filter(|c| *c == '\t' || !c.is_control())
        .collect()
}

fn is_local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b".!#$%&'*+/=?^_`{|}~-".contains(&c)
}

/// The next `local@domain.tld` in lower-cased text from `at`: (address, start, end).
fn next_address(lower: &str, mut at: usize) -> Option<(String, usize, usize)> {
    let b = lower.as_bytes();
    while let Some(pos) = lower.get(at..)?.find('@') {
        let i = at + pos;
        let mut s = i;
        while s > 0 && is_local_char(b[s - 1]) {
            s -= 1;
        }
        let mut e = i + 1;
        while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'.' || b[e] == b'-') {
            e += 1;
        }
        let local = lower[s..i].trim_start_matches('.');
        let domain = lower[i + 1..e].trim_end_matches('.');
        at = e.max(i + 1);
        if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') {
            return Some((format!("{local}@{domain}"), s, e));
        }
    }
    None
}

fn first_address(text: &str) -> Option<String> {
    next_address(&text.to_ascii_lowercase(), 0).map(|(a, _, _)| a)
}

/// The address in header `name` of a header block (unfolded first line).
fn header_address(headers: &str, name: &str) -> Option<String> {
    let end = headers
        .find("\r\n\r\n")
        .or(headers.find("\n\n"))
        .unwrap_or(headers.len());
    headers[..end].lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| first_address(v))
            .flatten()
    })
}

/// `auth-failure` (RFC 6591, DMARC failure reports): not a complaint.
pub fn is_auth_failure(feedback_type: &str) -> bool {
    let f: String = feedback_type
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    f.eq_ignore_ascii_case("authfailure")
}

/// Microsoft's JMRP / SNDS complaint (Outlook.com, Hotmail): the complained
/// message attached as `message/rfc822` with no feedback-report part. Known
/// by the `X-HmXmrOriginalRecipient` header of the attached message, or by
/// a Microsoft consumer sender (not postmaster) with an attached message and
/// no report part. Returns
/// the complaining recipient when the report names one.
fn microsoft_feedback(msg: &mail_parser::Message<'_>, raw: &[u8]) -> Option<Option<String>> {
    const MARK: &str = "x-hmxmroriginalrecipient:";
    let text = String::from_utf8_lossy(raw);
    let lower = text.to_ascii_lowercase();
    let named = lower.find(MARK).and_then(|at| {
        let line = text[at + MARK.len()..].lines().next().unwrap_or("");
        first_address(line)
    });
    let mut attached = false;
    for part in &msg.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
        if ct.ctype().eq_ignore_ascii_case("message") {
            if sub.contains("delivery-status") || sub == "feedback-report" {
                return None;
            }
            attached |= sub == "rfc822";
        }
    }
    if !attached {
        return None;
    }
    // Without the header: a Microsoft consumer sender that is not its
    // bounce sender (postmaster, mailer-daemon), and no report at all.
    let report = msg
        .content_type()
        .and_then(|c| c.subtype())
        .is_some_and(|s| s.eq_ignore_ascii_case("report"));
    let from_microsoft = !report
        && msg
            .from()
            .and_then(|f| f.first())
            .and_then(|a| a.address())
            .and_then(|a| a.rsplit_once('@'))
            .is_some_and(|(local, d)| {
                let (local, d) = (local.to_ascii_lowercase(), d.to_ascii_lowercase());
                !matches!(local.as_str(), "postmaster" | "mailer-daemon")
                    && matches!(
                        d.as_str(),
                        "hotmail.com" | "outlook.com" | "live.com" | "msn.com"
                    )
            });
    (named.is_some() || from_microsoft).then_some(named)
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Every `X-Postline-ID:` value and `b+…` local part in the message (the
/// caller verifies their HMAC, so a false candidate costs nothing).
fn find_tokens(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw).to_ascii_lowercase();
    let mut out = Vec::new();
    let token_at = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect()
    };
    for (i, _) in text.match_indices("x-postline-id:") {
        out.push(token_at(&text[i + "x-postline-id:".len()..]));
    }
    for (i, _) in text.match_indices(super::token::PREFIX) {
        let boundary = i == 0
            || matches!(
                text.as_bytes()[i - 1],
                b'<' | b' ' | b':' | b'\t' | b'\n' | b';' | b'"'
            );
        if boundary {
            out.push(token_at(&text[i + 2..]));
        }
        if out.len() > 64 {
            break;
        }
    }
    out.retain(|t| t.len() >= 40);
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NUL decoded from quoted-printable, and one in a header value, never
    /// reach the stored fields (Postgres refuses them).
    #[test]
    fn jmrp_is_a_complaint_and_microsoft_bounces_are_not() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bounces");
        let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
        let jmrp = parse(&read("arf-22.eml")).unwrap();
        assert!(matches!(jmrp.kind, Kind::Complaint { .. }));
        assert_eq!(jmrp.complained.as_deref(), Some("kijitora@example.com"));
        for bounce in [
            "lhost-office365-05.eml",
            "lhost-office365-12.eml",
            "rhost-outlook-08.eml",
        ] {
            let r = parse(&read(bounce)).unwrap();
            assert!(!matches!(r.kind, Kind::Complaint { .. }), "{bounce}");
        }
        assert!(is_auth_failure("authfailure") && is_auth_failure("auth-failure"));
        assert!(!is_auth_failure("abuse"));
    }

    #[test]
    fn control_characters_are_dropped_from_stored_fields() {
        let raw = "From: MAILER-DAEMON@mx.example\r\n\
            To: b+x@bounces.example\r\n\
            Subject: Undeliverable\r\n\
            MIME-Version: 1.0\r\n\
            Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\
            \r\n\
            --b\r\n\
            Content-Type: text/plain\r\n\
            \r\n\
            failed\r\n\
            --b\r\n\
            Content-Type: message/delivery-status\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\
            \r\n\
            Reporting-MTA: dns; mx=00.example\r\n\
            \r\n\
            Final-Recipient: rfc822; kim@example.org\r\n\
            Action: failed\r\n\
            Status: 5.1.1\r\n\
            Diagnostic-Code: smtp; 550 5.1.1 no such=00 user\r\n\
            --b--\r\n";
        let r = parse(raw.as_bytes()).expect("parses");
        let f = &r.failures[0];
        assert_eq!(f.recipient, "kim@example.org");
        assert_eq!(f.diagnostic, "550 5.1.1 no such user");
        assert_eq!(r.reporting_mta.as_deref(), Some("mx.example"));
    }
}
