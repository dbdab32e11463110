//! Deserialisation failures in API terms: the field by its JSON path
//! (`emails[1].to[0]`, tracked by `serde_path_to_error`, never parsed out of
//! a message) and what was expected in words ("a list", "an object", "a
//! string or a list of strings"), not in Rust's (`sequence`, `map`,
//! `untagged enum OneOrMany`).

use serde::Deserialize;
use serde_path_to_error::Segment;

use crate::error::{AppError, AppResult, FieldError};

/// Parses a JSON body, which must be an object: a syntax error is a 400
/// `malformed_json`, a body of the wrong shape a 422 `validation_failed`
/// naming the field.
///
/// serde's derived structs also accept a list of their fields in order;
/// the body itself is refused as a list here (a nested object sent as a
/// list is still read positionally).
///
/// Every field error serde can find is reported (see [`more_errors`]), not
/// only the first.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> AppResult<T> {
    parse_json_object(body, "")
}

/// [`parse_json`], where a list sent as the body gets `list_hint` (the shape
/// that was meant, e.g. `send {"emails": [...]}`) in its message.
pub fn parse_json_object<'a, T: Deserialize<'a>>(body: &'a [u8], list_hint: &str) -> AppResult<T> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let message = if list_hint.is_empty() {
            "must be an object, not a list".to_string()
        } else {
            format!("must be an object, not a list: {list_hint}")
        };
        return Err(Described {
            field: String::new(),
            message,
        }
        .into_app_error());
    }
    // The valid body, the common case, at plain serde_json's cost; the path
    // of a failure is tracked by parsing it again (docs/BENCHMARKS.md).
    if let Ok(value) = serde_json::from_slice::<T>(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = json_path(e.path());
        let steps = steps_of(e.path());
        let inner = e.into_inner();
        if inner.is_data() {
            let first = field_error(&path, &message_of(&inner));
            let missing = message_of(&inner).starts_with("missing field ");
            let mut all = more_errors::<T>(body, first, steps, missing);
            if all.len() == 1 {
                all.remove(0).into_app_error()
            } else {
                AppError::invalid_fields(
                    all.into_iter()
                        .map(|d| FieldError::new(d.field, d.message))
                        .collect(),
                )
            }
        } else if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
            // Valid JSON that serde_json still calls a syntax error: a number,
            // list or `true` where an enum's name (a string) belongs.
            Described {
                field: path,
                message: "must be one of the allowed values (a string)".into(),
            }
            .into_app_error()
        } else {
            malformed(&inner)
        }
    })?;
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

/// Bodies up to this size get every field error reported; a larger one
/// (rare, and costly to parse again and again) its first.
const MORE_ERRORS_MAX_BODY: usize = 256 * 1024;
/// At most this many errors are reported for one body.
const MAX_ERRORS: usize = 20;

enum Step {
    Key(String),
    Index(usize),
}

fn steps_of(path: &serde_path_to_error::Path) -> Vec<Step> {
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// After serde's first error, the others: the offending member is removed
/// from the parsed body and the body deserialized again, until it parses,
/// an error repeats (a required member now absent) or [`MAX_ERRORS`]. An
/// error inside a list removes the whole list member of its object (list
/// positions never shift); one inside a missing member's parent ends it.
fn more_errors<'a, T: Deserialize<'a>>(
    body: &[u8],
    first: Described,
    steps: Vec<Step>,
    first_missing: bool,
) -> Vec<Described> {
    let mut found = vec![first];
    if body.len() > MORE_ERRORS_MAX_BODY || first_missing {
        return found;
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return found;
    };
    let mut steps = steps;
    while found.len() < MAX_ERRORS && remove_member(&mut value, &steps) {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(_) => break,
            Err(e) => e,
        };
        let path = json_path(err.path());
        let next_steps = steps_of(err.path());
        let message = message_of(err.inner());
        let described = field_error(&path, &message);
        let seen = found.iter().any(|d| {
            d.field == described.field
                || d.field.starts_with(&format!("{}.", described.field))
                || d.field.starts_with(&format!("{}[", described.field))
        });
        if seen || !err.inner().is_data() {
            break;
        }
        found.push(described);
        if message.starts_with("missing field ") {
            break;
        }
        steps = next_steps;
    }
    found
}

/// Removes the object member that holds the value at `steps` (the nearest
/// `Key` step); false when there is none.
fn remove_member(value: &mut serde_json::Value, steps: &[Step]) -> bool {
    let Some(last_key) = steps.iter().rposition(|s| matches!(s, Step::Key(_))) else {
        return false;
    };
    let mut at = value;
    for step in &steps[..last_key] {
        at = match (step, at) {
            (Step::Key(k), serde_json::Value::Object(m)) => match m.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Step::Index(i), serde_json::Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (&steps[last_key], at) {
        (Step::Key(k), serde_json::Value::Object(m)) => m.remove(k).is_some(),
        _ => false,
    }
}

/// The same error with a better message for a member named `name` (at any
/// depth): an API that knows why a field is refused (Resend's `react`, which
/// needs a JavaScript renderer) says so instead of "is not a known field".
pub fn explain_field(err: AppError, name: &str, message: &str) -> AppError {
    let named = |field: &str| field == name || field.ends_with(&format!(".{name}"));
    match err {
        AppError::Validation { code, errors, .. } if errors.iter().any(|e| named(&e.field)) => {
            let errors: Vec<FieldError> = errors
                .into_iter()
                .map(|e| {
                    if named(&e.field) {
                        FieldError::new(e.field, message)
                    } else {
                        e
                    }
                })
                .collect();
            let mut out = AppError::invalid_fields(errors);
            if let AppError::Validation { code: c, .. } = &mut out {
                *c = code;
            }
            out
        }
        other => other,
    }
}

fn malformed(e: &serde_json::Error) -> AppError {
    AppError::MalformedJson(format!("The body is not valid JSON: {e}."))
}

/// `emails[1].to[0]`; the empty string for the body itself.
fn json_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// serde_json's message without the " at line L column C" it appends.
fn message_of(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let at = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&at).unwrap_or(&full).to_string()
}

struct Described {
    field: String,
    message: String,
}

impl Described {
    fn into_app_error(self) -> AppError {
        let detail = if self.field.is_empty() {
            format!("The body {}.", self.message)
        } else {
            format!("{}: {}", self.field, self.message)
        };
        AppError::Validation {
            code: "validation_failed",
            detail,
            errors: vec![FieldError::new(self.field, self.message)],
        }
    }
}

/// The message of one serde error, in words; a missing field is named by
/// its own path ("is required") rather than its parent's.
fn field_error(path: &str, msg: &str) -> Described {
    let child = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return Described {
            field: child(unquote(rest)),
            message: "is required".into(),
        };
    }
    let message = if let Some(rest) = msg.strip_prefix("invalid type: ") {
        match rest.split_once(", expected ") {
            Some((got, expected)) => {
                format!(
                    "must be {}, not {}",
                    expected_words(expected),
                    got_words(got)
                )
            }
            None => format!("has the wrong type ({})", plain(rest)),
        }
    } else if let Some(rest) = msg.strip_prefix("invalid value: ") {
        match rest.split_once(", expected ") {
            Some((got, expected)) => {
                format!(
                    "must be {}, not {}",
                    expected_words(expected),
                    got_words(got)
                )
            }
            None => format!("has an invalid value ({})", plain(rest)),
        }
    } else if let Some(rest) = msg.strip_prefix("invalid length ") {
        match rest.split_once(", expected ") {
            Some((_, expected)) if expected.starts_with("struct ") => "must be an object".into(),
            Some((n, expected)) => format!("must be {} (not {n} long)", plain(expected)),
            None => format!("has an invalid length ({})", plain(rest)),
        }
    } else if msg.starts_with("unknown field ") {
        match msg.split_once(", expected ") {
            Some((_, known)) => format!("is not a known field (expected {})", plain(known)),
            None => "is not a known field".into(),
        }
    } else if let Some(rest) = msg.strip_prefix("unknown variant ") {
        match rest.split_once(", expected ") {
            Some((got, allowed)) => format!("must be {}, not {}", plain(allowed), plain(got)),
            None => format!("is not an allowed value ({})", plain(rest)),
        }
    } else if msg.starts_with("duplicate field ") {
        "appears more than once".into()
    } else if let Some(name) = msg.strip_prefix("data did not match any variant of untagged enum ")
    {
        format!("must be {}", untagged_words(name))
    } else {
        plain(msg)
    };
    Described {
        field: path.to_string(),
        message,
    }
}

/// What serde calls the expected type, as the API's documentation says it.
fn expected_words(expected: &str) -> String {
    let integer = |min: &str, max: &str| format!("a whole number from {min} to {max}");
    match expected {
        "a string" | "a borrowed string" | "a string or bytes" | "string" => "a string".into(),
        "a sequence" | "sequence" => "a list".into(),
        "a map" | "map" => "an object".into(),
        "a boolean" | "bool" => "true or false".into(),
        "u8" => integer("0", "255"),
        "u16" => integer("0", "65535"),
        "u32" => integer("0", &u32::MAX.to_string()),
        "u64" | "usize" => integer("0", &u64::MAX.to_string()),
        "i16" => integer(&i16::MIN.to_string(), &i16::MAX.to_string()),
        "i32" => integer(&i32::MIN.to_string(), &i32::MAX.to_string()),
        "i64" | "isize" => integer(&i64::MIN.to_string(), &i64::MAX.to_string()),
        "f32" | "f64" => "a number".into(),
        "unit" => "null".into(),
        e if e.starts_with("struct ") => "an object".into(),
        e if e.starts_with("enum ") => "one of the allowed values".into(),
        e if e.starts_with("a tuple of size ") || e.starts_with("tuple ") => "a list".into(),
        e => plain(e),
    }
}

/// What serde calls the value that was sent.
fn got_words(got: &str) -> String {
    let value = |s: &str| plain(s).trim_matches('\'').to_string();
    if let Some(v) = got.strip_prefix("integer ") {
        format!("the number {}", value(v))
    } else if let Some(v) = got.strip_prefix("floating point ") {
        format!("the number {}", value(v))
    } else if let Some(v) = got.strip_prefix("boolean ") {
        value(v)
    } else if got.starts_with("string ") {
        "a string".into()
    } else {
        match got {
            "map" => "an object".into(),
            "sequence" => "a list".into(),
            "null" | "unit value" | "unit" => "null".into(),
            other => plain(other),
        }
    }
}

/// The accepted shapes of each untagged enum of the API (by Rust name).
fn untagged_words(name: &str) -> String {
    match name {
        "OneOrMany" => "a string or a list of strings".into(),
        _ => "a value of another shape".into(),
    }
}

/// serde quotes names in backticks; the API's text uses single quotes.
fn plain(s: &str) -> String {
    s.replace('`', "'")
}

fn unquote(s: &str) -> &str {
    s.trim_matches('`')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        to: Vec<String>,
        n: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        emails: Vec<Inner>,
        tags: Option<BTreeMap<String, String>>,
    }

    fn err(body: &str) -> (String, String) {
        match parse_json::<Outer>(body.as_bytes()) {
            Err(AppError::Validation { errors, .. }) => {
                (errors[0].field.clone(), errors[0].message.clone())
            }
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn fields_are_named_by_json_path_in_words() {
        assert_eq!(
            err(r#"{"emails": [{"to": []}, {"to": ["a", 7]}]}"#),
            (
                "emails[1].to[1]".into(),
                "must be a string, not the number 7".into()
            )
        );
        assert_eq!(
            err(r#"{"emails": {}}"#),
            ("emails".into(), "must be a list, not an object".into())
        );
        assert_eq!(
            err(r#"[]"#),
            ("".into(), "must be an object, not a list".into())
        );
        assert_eq!(
            err(r#"{"emails": [{}]}"#),
            ("emails[0].to".into(), "is required".into())
        );
        let (field, message) = err(r#"{"emails": [{"to": [], "bogus": 1}]}"#);
        assert_eq!(field, "emails[0].bogus");
        assert!(
            message == "is not a known field (expected 'to' or 'n')",
            "{message}"
        );
        assert_eq!(
            err(r#"{"emails": [{"to": [], "n": -1}]}"#),
            (
                "emails[0].n".into(),
                "must be a whole number from 0 to 4294967295, not the number -1".into()
            )
        );
        assert_eq!(
            err(r#"{"emails": [], "tags": {"k": true}}"#),
            ("tags.k".into(), "must be a string, not true".into())
        );
    }

    #[test]
    fn a_number_for_an_enum_is_a_field_error_not_malformed_json() {
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Status {
            Active,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Patch {
            status: Status,
        }
        match parse_json::<Patch>(br#"{"status": 7}"#) {
            Err(AppError::Validation { errors, .. }) => assert_eq!(errors[0].field, "status"),
            other => panic!("{other:?}"),
        }
        assert!(parse_json::<Patch>(br#"{"status": "active"}"#).is_ok());
    }

    #[test]
    fn untagged_enums_say_what_they_accept() {
        use crate::emails::input::SendRequest;
        match parse_json::<SendRequest>(br#"{"from": "a@b.test", "to": 42}"#) {
            Err(AppError::Validation { errors, detail, .. }) => {
                assert_eq!(errors[0].field, "to");
                assert_eq!(errors[0].message, "must be a string or a list of strings");
                assert!(
                    !detail.contains("OneOrMany") && !detail.contains("line"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_errors_and_trailing_garbage_are_malformed_json() {
        for body in [r#"{"emails": "#, r#"{"emails": []} x"#, ""] {
            assert!(
                matches!(
                    parse_json::<Outer>(body.as_bytes()),
                    Err(AppError::MalformedJson(_))
                ),
                "{body}"
            );
        }
    }
}
