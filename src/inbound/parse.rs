//! A received message parsed with `mail-parser` into what the API shows:
//! addresses, subject, text and html, the reply without its quoted history,
//! headers and the attachments' metadata. The attachments' bytes stay in the
//! raw message; [`attachment`] decodes one again when it is asked for.

use mail_parser::{Address, HeaderValue, Message, MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};

/// Header fields kept, at most (a message of a thousand headers keeps these).
pub const MAX_HEADERS: usize = 200;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Mailbox {
    pub email: String,
    pub name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttachmentMeta {
    pub index: usize,
    pub filename: Option<String>,
    pub content_type: String,
    pub size: usize,
    pub content_id: Option<String>,
}

/// What is stored in `inbound_messages.content` (plus the columns the
/// listing filters on).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Parsed {
    pub from: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub reply_to: Option<String>,
    pub subject: Option<String>,
    /// Without angle brackets, as `mail-parser` gives it.
    pub message_id: Option<String>,
    /// `In-Reply-To` then `References`, newest first (bounded).
    pub references: Vec<String>,
    pub date: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub stripped_text_reply: Option<String>,
    /// `[{"name", "value"}]` in order, raw values trimmed.
    pub headers: Vec<Header>,
    pub attachments: Vec<AttachmentMeta>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Why a message is refused after its data arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Unparseable,
    TooManyAttachments(usize),
}

fn mailboxes(a: Option<&Address<'_>>) -> Vec<Mailbox> {
    a.map(|a| {
        a.iter()
            .filter_map(|m| {
                Some(Mailbox {
                    email: m.address()?.to_ascii_lowercase(),
                    name: m.name().map(str::to_string),
                })
            })
            .take(100)
            .collect()
    })
    .unwrap_or_default()
}

fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
}

pub fn parse(raw: &[u8], max_attachments: usize) -> Result<Parsed, Refused> {
    let m = MessageParser::default()
        .parse(raw)
        .ok_or(Refused::Unparseable)?;
    let count = m.attachment_count();
    if count > max_attachments {
        return Err(Refused::TooManyAttachments(count));
    }
    Ok(from_message(&m))
}

fn from_message(m: &Message<'_>) -> Parsed {
    let text = m.body_text(0).map(|t| t.into_owned());
    // mail-parser renders a text-only message as HTML too: only a real
    // text/html part counts.
    let html = m
        .html_part(0)
        .filter(|p| p.is_text_html())
        .and_then(|_| m.body_html(0))
        .map(|t| t.into_owned());
    let mut references = ids(m.in_reply_to());
    let mut refs = ids(m.references());
    refs.reverse();
    references.extend(refs);
    references.truncate(50);
    let attachments = m
        .attachments()
        .enumerate()
        .map(|(index, p)| AttachmentMeta {
            index,
            filename: p.attachment_name().map(str::to_string),
            content_type: p
                .content_type()
                .map(|c| match c.subtype() {
                    Some(s) => format!("{}/{}", c.ctype(), s),
                    None => c.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_ascii_lowercase(),
            size: p.contents().len(),
            content_id: p.content_id().map(str::to_string),
        })
        .collect();
    Parsed {
        from: mailboxes(m.from()).into_iter().next(),
        to: mailboxes(m.to()),
        cc: mailboxes(m.cc()),
        reply_to: m
            .reply_to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_string),
        subject: m.subject().map(str::to_string),
        message_id: m.message_id().map(str::to_string),
        references,
        date: m.date().map(|d| d.to_rfc3339()),
        stripped_text_reply: text.as_deref().map(strip_reply),
        text,
        html,
        headers: m
            .headers_raw()
            .take(MAX_HEADERS)
            .map(|(n, v)| Header {
                name: n.to_string(),
                value: v.trim().to_string(),
            })
            .collect(),
        attachments,
    }
}

/// One attachment's decoded bytes, its metadata with it.
pub fn attachment(raw: &[u8], index: usize) -> Option<(AttachmentMeta, Vec<u8>)> {
    let m = MessageParser::default().parse(raw)?;
    let p = m.attachments().nth(index)?;
    let meta = from_message(&m).attachments.into_iter().nth(index)?;
    Some((meta, p.contents().to_vec()))
}

/// Every attachment's decoded bytes (for inlining into a webhook), those
/// above `inline_max` as `None`.
pub fn attachment_contents(raw: &[u8], inline_max: usize) -> Vec<Option<Vec<u8>>> {
    let Some(m) = MessageParser::default().parse(raw) else {
        return Vec::new();
    };
    m.attachments()
        .map(|p| (p.contents().len() <= inline_max).then(|| p.contents().to_vec()))
        .collect()
}

/// The reply without the quoted history: lines up to the first quote
/// marker ("On … wrote:", "-----Original Message-----", a `>` block, an
/// Outlook "From:" block after a blank line), trailing blank lines trimmed.
pub fn strip_reply(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        let wrote = (t.starts_with("On ") || t.starts_with("Le ") || t.starts_with("Am "))
            && (t.ends_with("wrote:")
                || t.ends_with("a écrit :")
                || t.ends_with("schrieb:")
                || next.ends_with("wrote:"));
        let original = t.starts_with("-----Original Message-----")
            || t.starts_with("________________________________")
            || (t.starts_with("From:") && out.last().is_some_and(|l| l.trim().is_empty()));
        if wrote || original || t.starts_with('>') {
            break;
        }
        out.push(line);
    }
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_quoted_history() {
        let t = "Thanks, that works.\n\nOn Mon, 1 Dec 2026 at 10:00, Acme <a@acme.com> wrote:\n> hello\n> there\n";
        assert_eq!(strip_reply(t), "Thanks, that works.");
        assert_eq!(strip_reply("Yes\n> quoted"), "Yes");
        assert_eq!(strip_reply("No quotes\nat all"), "No quotes\nat all");
    }

    #[test]
    fn refuses_past_the_attachment_bound() {
        let mut m = String::from("From: a@x.test\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n");
        for i in 0..3 {
            m.push_str(&format!("--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=f{i}.bin\r\n\r\nxx\r\n"));
        }
        m.push_str("--B--\r\n");
        assert_eq!(parse(m.as_bytes(), 3).map(|p| p.attachments.len()), Ok(3));
        assert_eq!(
            parse(m.as_bytes(), 2).err(),
            Some(Refused::TooManyAttachments(3))
        );
    }
}
