//! How the messages pages show a message: the To cell when To is empty, the
//! headers as rows, event details as name/value pairs, tenant names.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::bounces::recipients::RecipientRow;
use crate::emails::view::{EmailDetail, EventView};

/// Header rows shown at most (a raw message may carry many).
pub const MAX_HEADERS: usize = 200;
/// Name/value pairs of one event's detail shown at most.
pub const MAX_DETAIL: usize = 50;

/// Who a message went to, for a list's To cell: the To addresses, else
/// "Cc: …" or "Bcc: …" from its recipients (a Bcc-only message is not
/// blank).
pub fn shown_to(to: &[String], recipients: &[&RecipientRow]) -> String {
    if !to.is_empty() {
        return to.join(", ");
    }
    let of = |kind: &str| -> Vec<&str> {
        recipients
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.recipient.as_str())
            .collect()
    };
    let mut parts = Vec::new();
    for (kind, label) in [("cc", "Cc"), ("bcc", "Bcc")] {
        let list = of(kind);
        if !list.is_empty() {
            parts.push(format!("{label}: {}", list.join(", ")));
        }
    }
    parts.join("; ")
}

/// The recipients of `kind` of a message's detail (for its Bcc row).
pub fn of_kind(m: &EmailDetail, kind: &str) -> Vec<String> {
    m.recipients
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.email.clone())
        .collect()
}

/// A message's custom headers (the API's `headers` object) as rows.
pub fn custom_headers(headers: &Value) -> Vec<(String, String)> {
    match headers {
        Value::Object(m) => m
            .iter()
            .take(MAX_HEADERS)
            .map(|(k, v)| (k.clone(), text(v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The header section of a message submitted as a whole (SMTP), as rows,
/// unfolded.
pub fn raw_headers(raw: &[u8]) -> Vec<(String, String)> {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return Vec::new();
    };
    msg.headers_raw()
        .take(MAX_HEADERS)
        .map(|(name, value)| {
            let unfolded = value
                .split(['\r', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty());
            (name.to_string(), unfolded.collect::<Vec<_>>().join(" "))
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct EventRow {
    #[serde(rename = "type")]
    pub kind: String,
    /// The event without its `email.` prefix, for the badge's tone.
    pub outcome: String,
    pub at: chrono::DateTime<chrono::Utc>,
    pub detail: Vec<(String, String)>,
}

pub fn events(list: &[EventView]) -> Vec<EventRow> {
    list.iter()
        .map(|e| {
            let mut detail = Vec::new();
            flatten("", &e.detail, &mut detail);
            EventRow {
                kind: e.kind.clone(),
                outcome: e.kind.rsplit('.').next().unwrap_or(&e.kind).to_string(),
                at: e.at,
                detail,
            }
        })
        .collect()
}

/// Nested objects as dotted names (`bounce.status`), lists joined; at most
/// [`MAX_DETAIL`] pairs.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if out.len() >= MAX_DETAIL {
                    return;
                }
                let name = if prefix.is_empty() {
                    k.replace('_', " ")
                } else {
                    format!("{prefix}.{}", k.replace('_', " "))
                };
                flatten(&name, v, out);
            }
        }
        Value::Null => {}
        other if out.len() < MAX_DETAIL => {
            let name = if prefix.is_empty() { "detail" } else { prefix };
            out.push((name.to_string(), text(other)));
        }
        _ => {}
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Tenant names by id, for a list that spans tenants.
pub fn names(rows: Vec<(Uuid, String)>) -> BTreeMap<String, String> {
    rows.into_iter()
        .map(|(id, n)| (id.to_string(), n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rcpt(addr: &str, kind: &str) -> RecipientRow {
        RecipientRow {
            tenant_id: Uuid::nil(),
            email_id: Uuid::nil(),
            recipient: addr.into(),
            kind: kind.into(),
            status: "queued".into(),
            smtp_response: None,
            bounce: None,
            updated_at: chrono::Utc::now(),
            first_opened_at: None,
            first_clicked_at: None,
        }
    }

    #[test]
    fn a_bcc_only_message_shows_its_bcc() {
        let (a, b) = (rcpt("b@x.example", "bcc"), rcpt("c@x.example", "cc"));
        assert_eq!(shown_to(&[], &[&a]), "Bcc: b@x.example");
        assert_eq!(
            shown_to(&[], &[&a, &b]),
            "Cc: c@x.example; Bcc: b@x.example"
        );
        assert_eq!(shown_to(&["t@x.example".into()], &[&a]), "t@x.example");
    }

    #[test]
    fn details_and_headers_become_rows() {
        let mut out = Vec::new();
        flatten(
            "",
            &json!({"smtp_response": "250 ok", "bounce": {"type": "hard", "codes": [5, 1]}}),
            &mut out,
        );
        out.sort();
        assert_eq!(
            out,
            vec![
                ("bounce.codes".to_string(), "5, 1".to_string()),
                ("bounce.type".to_string(), "hard".to_string()),
                ("smtp response".to_string(), "250 ok".to_string()),
            ]
        );
        let mut one = Vec::new();
        flatten("", &json!("250 2.0.0 queued"), &mut one);
        assert_eq!(
            one,
            vec![("detail".to_string(), "250 2.0.0 queued".to_string())]
        );
        let raw = b"From: a@x.example\r\nX-Long: one\r\n two\r\n\r\nbody";
        assert_eq!(
            raw_headers(raw),
            vec![
                ("From".to_string(), "a@x.example".to_string()),
                ("X-Long".to_string(), "one two".to_string()),
            ]
        );
        assert_eq!(
            custom_headers(&json!({"X-A": "1"})),
            vec![("X-A".to_string(), "1".to_string())]
        );
        let many: serde_json::Map<String, Value> =
            (0..500).map(|i| (format!("h{i}"), json!("v"))).collect();
        assert_eq!(custom_headers(&Value::Object(many)).len(), MAX_HEADERS);
    }
}
