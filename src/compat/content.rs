//! Attachment content in every form the SDKs send: a base64 string (Resend
//! Node 4+, Python, Postmark), a list of byte values (Python `list(bytes)`),
//! or a Node `Buffer` serialised by `JSON.stringify` (older Resend Node SDKs).
//!
//! A list of byte values is read straight into bytes (issue 22, finding 11):
//! as a derived untagged enum it was first buffered as one serde value per
//! number, about eight times the body. Each value takes at least two bytes
//! of the body (a digit and a comma), so the bytes are at most half of it,
//! and the list is refused while reading once it holds more than the
//! per-attachment limit given to [`within`].

use std::cell::Cell;
use std::fmt;

use base64::Engine;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::{AppError, AppResult};

/// The deserialisation is the visitor below; `serde(untagged)` here only
/// tells the OpenAPI document the three shapes.
#[derive(Debug, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Content {
    Base64(String),
    Bytes(Vec<u8>),
    Buffer {
        #[serde(rename = "type")]
        kind: String,
        data: Vec<u8>,
    },
}

impl Content {
    /// The content as the base64 string `/v1` takes.
    pub fn into_base64(self, field: &str) -> AppResult<String> {
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(b);
        match self {
            Content::Base64(s) => Ok(s),
            Content::Bytes(b) => Ok(b64(b)),
            Content::Buffer { kind, data } if kind == "Buffer" => Ok(b64(data)),
            Content::Buffer { .. } => Err(AppError::invalid(
                field,
                "must be base64, a list of bytes or {\"type\": \"Buffer\", \"data\": [...]}",
            )),
        }
    }
}

thread_local! {
    /// The most bytes one list may hold while [`within`] runs on this thread.
    static MAX_BYTES: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Runs `parse` (synchronous, so on this thread alone) with every byte list
/// it reads limited to `max_bytes` (`limits.max_attachment_bytes`).
pub fn within<R>(max_bytes: usize, parse: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            MAX_BYTES.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(MAX_BYTES.with(|m| m.replace(max_bytes)));
    parse()
}

const EXPECTING: &str =
    "base64 text, a list of byte values or {\"type\": \"Buffer\", \"data\": [...]}";

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
        Ok(Content::Base64(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
        Ok(Content::Base64(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Content, A::Error> {
        ByteList.visit_seq(seq).map(Content::Bytes)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Content, A::Error> {
        let (mut kind, mut data) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "type" if kind.is_none() => kind = Some(map.next_value::<String>()?),
                "data" if data.is_none() => data = Some(map.next_value::<Bytes>()?.0),
                "type" | "data" => return Err(de::Error::custom("appears more than once")),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Content::Buffer {
            kind: kind.ok_or_else(|| de::Error::missing_field("type"))?,
            data: data.ok_or_else(|| de::Error::missing_field("data"))?,
        })
    }
}

/// A `data` list of a Buffer.
struct Bytes(Vec<u8>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ByteList).map(Bytes)
    }
}

/// Numbers 0 to 255 into bytes; anything else is refused at its index
/// ("must be a whole number from 0 to 255").
struct ByteList;

impl<'de> Visitor<'de> for ByteList {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of byte values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let max = MAX_BYTES.with(Cell::get);
        let mut out = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            if out.len() == max {
                return Err(de::Error::custom(format_args!(
                    "holds more than {max} bytes; at most {max} per attachment"
                )));
            }
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> AppResult<Content> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Att {
            content: Content,
        }
        crate::body::parse_json::<Att>(body.as_bytes()).map(|a| a.content)
    }

    fn refusal(body: &str) -> (String, String) {
        match within(4, || parse(body)) {
            Err(AppError::Validation { errors, .. }) => {
                (errors[0].field.clone(), errors[0].message.clone())
            }
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn every_sdk_content_form_becomes_base64() {
        let f = "attachments[0].content";
        let b64 = |body: &str| parse(body).unwrap().into_base64(f).unwrap();
        assert_eq!(b64(r#"{"content": "aGk="}"#), "aGk=");
        assert_eq!(b64(r#"{"content": [104, 105]}"#), "aGk=");
        assert_eq!(b64(r#"{"content": []}"#), "");
        assert_eq!(
            b64(r#"{"content": {"type": "Buffer", "data": [104, 105]}}"#),
            "aGk="
        );
        let other = parse(r#"{"content": {"type": "Blob", "data": [104]}}"#).unwrap();
        assert!(other.into_base64(f).is_err());
    }

    #[test]
    fn bad_byte_values_and_shapes_are_named() {
        let byte = "must be a whole number from 0 to 255";
        for (body, field, message) in [
            (
                r#"{"content": [1, 256]}"#,
                "content[1]",
                format!("{byte}, not the number 256"),
            ),
            (
                r#"{"content": [-1]}"#,
                "content[0]",
                format!("{byte}, not the number -1"),
            ),
            (
                r#"{"content": [1.5]}"#,
                "content[0]",
                format!("{byte}, not the number 1.5"),
            ),
            (
                r#"{"content": ["a"]}"#,
                "content[0]",
                format!("{byte}, not a string"),
            ),
            (
                r#"{"content": {"type": "Buffer", "data": [300]}}"#,
                "content.data[0]",
                format!("{byte}, not the number 300"),
            ),
            (
                r#"{"content": {"type": "Buffer"}}"#,
                "content.data",
                "is required".into(),
            ),
            (
                r#"{"content": 7}"#,
                "content",
                format!("must be {EXPECTING}, not the number 7"),
            ),
        ] {
            assert_eq!(refusal(body), (field.into(), message), "{body}");
        }
    }

    #[test]
    fn a_list_is_refused_while_reading_past_the_attachment_limit() {
        assert!(within(4, || parse(r#"{"content": [1, 2, 3, 4]}"#)).is_ok());
        assert_eq!(
            refusal(r#"{"content": [1, 2, 3, 4, 5]}"#),
            (
                "content".into(),
                "holds more than 4 bytes; at most 4 per attachment".into()
            )
        );
        // The limit applies within `within` only, and is restored after.
        assert!(parse(r#"{"content": [1, 2, 3, 4, 5]}"#).is_ok());
    }
}
