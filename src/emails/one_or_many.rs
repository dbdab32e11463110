//! `"a@x.com"` or `["a@x.com", ...]`: the recipient fields of the send
//! bodies (`/v1` and Resend's).

use serde::Deserialize;

use super::input::MAX_RECIPIENTS;

/// `"a@x.com"` or `["a@x.com", ...]`. The deserialisation is the visitor
/// below (a derived untagged enum buffers the value first, issue 22 finding
/// 11); `serde(untagged)` here only tells the OpenAPI document the shapes.
#[derive(Clone, Debug, utoipa::ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OneOrManyVisitor)
    }
}

struct OneOrManyVisitor;

impl<'de> serde::de::Visitor<'de> for OneOrManyVisitor {
    type Value = OneOrMany;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
        Ok(OneOrMany::One(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<OneOrMany, E> {
        Ok(OneOrMany::One(v))
    }

    /// At most [`MAX_RECIPIENTS`], refused while reading past it.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
        let mut out = Vec::new();
        while let Some(s) = seq.next_element::<String>()? {
            if out.len() == MAX_RECIPIENTS {
                return Err(serde::de::Error::custom(format_args!(
                    "at most {MAX_RECIPIENTS} recipients in to, cc and bcc together"
                )));
            }
            out.push(s);
        }
        Ok(OneOrMany::Many(out))
    }
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}
