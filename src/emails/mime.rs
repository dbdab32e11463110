//! Turns a queued row into the bytes sent to the relay, with lettre's builder:
//! text and html as `multipart/alternative`, attachments in
//! `multipart/mixed`, custom headers kept, Bcc never in the headers.

use base64::Engine;
use lettre::address::Envelope;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::Message;

use super::input::AttachmentInput;
use super::model::EmailRow;

fn mailbox(s: &str) -> anyhow::Result<Mailbox> {
    s.parse()
        .map_err(|e| anyhow::anyhow!("stored address {s:?} no longer parses: {e}"))
}

fn body_part(text: Option<String>, html: Option<String>) -> MultiPart {
    match (text, html) {
        (Some(t), Some(h)) => MultiPart::alternative_plain_html(t, h),
        (Some(t), None) => MultiPart::mixed().singlepart(SinglePart::plain(t)),
        (None, Some(h)) => MultiPart::mixed().singlepart(SinglePart::html(h)),
        (None, None) => MultiPart::mixed().singlepart(SinglePart::plain(String::new())),
    }
}

/// Builds the RFC 5322 message. Input was validated at acceptance, so an
/// error here means stored data is corrupt; the caller fails the message.
/// Takes the row so its bodies move into the message instead of being copied.
pub fn build(row: EmailRow) -> anyhow::Result<Vec<u8>> {
    // Submitted over SMTP: sent as it was accepted (`emails::raw`).
    if let Some(raw) = row.raw_message {
        return Ok(raw);
    }
    // The envelope is explicit: it carries Bcc, which the headers never do.
    let recipients = row
        .to_addrs
        .iter()
        .chain(&row.cc_addrs)
        .chain(&row.bcc_addrs)
        .map(|r| mailbox(r).map(|m| m.email))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let envelope = Envelope::new(Some(mailbox(&row.from_addr)?.email), recipients)?;
    let mut b = Message::builder()
        .envelope(envelope)
        .from(mailbox(&row.from_addr)?)
        .subject(row.subject)
        .date_now()
        .message_id(Some(row.message_id.clone()));
    for to in &row.to_addrs {
        b = b.to(mailbox(to)?);
    }
    for cc in &row.cc_addrs {
        b = b.cc(mailbox(cc)?);
    }
    for r in &row.reply_to {
        b = b.reply_to(mailbox(r)?);
    }
    if let Some(map) = row.headers.as_object() {
        for (name, value) in map {
            let name = HeaderName::new_from_ascii(name.clone())
                .map_err(|e| anyhow::anyhow!("header name {name:?}: {e}"))?;
            b = b.raw_header(HeaderValue::new(
                name,
                value.as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    let attachments: Vec<AttachmentInput> = serde_json::from_value(row.attachments)?;
    let message = match (attachments.is_empty(), row.text_body, row.html_body) {
        // A single body needs no multipart wrapper.
        (true, Some(t), None) => b.singlepart(SinglePart::plain(t))?,
        (true, None, Some(h)) => b.singlepart(SinglePart::html(h))?,
        (true, t, h) => b.multipart(body_part(t, h))?,
        (false, t, h) => {
            let mut mixed = MultiPart::mixed().multipart(body_part(t, h));
            for a in attachments {
                let bytes =
                    base64::engine::general_purpose::STANDARD.decode(a.content.as_bytes())?;
                drop(a.content);
                let ct = ContentType::parse(
                    a.content_type
                        .as_deref()
                        .unwrap_or("application/octet-stream"),
                )
                .unwrap_or(ContentType::parse("application/octet-stream")?);
                mixed = mixed.singlepart(Attachment::new(a.filename).body(bytes, ct));
            }
            b.multipart(mixed)?
        }
    };
    Ok(message.formatted())
}
