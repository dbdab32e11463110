//! Template request bodies and their validation. Like tenants, a create is a
//! patch applied to a blank row, so both paths check exactly the same rules,
//! compiling every part so a syntax error is refused with its line.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::model::TemplateRow;
use super::render::{check_syntax, Part};
use crate::domain::has_line_break_or_nul;
use crate::error::{AppError, AppResult, FieldError};
use crate::tenants::input::nullable;

const MAX_SUBJECT: usize = 2000;
const MAX_BODY: usize = 512 * 1024;

/// `POST /v1/templates`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    pub name: String,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
}

/// `PUT /v1/templates/{id}`: only the given fields change; `null` removes a body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTemplate {
    pub name: Option<String>,
    pub subject: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub html: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub text: Option<Option<String>>,
}

/// `POST /v1/templates/{id}/render`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    /// JSON text until the render process parses it (see `SendRequest`).
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Box<RawValue>>,
}

impl From<CreateTemplate> for UpdateTemplate {
    fn from(c: CreateTemplate) -> Self {
        UpdateTemplate {
            name: Some(c.name),
            subject: Some(c.subject),
            html: Some(c.html),
            text: Some(c.text),
        }
    }
}

/// A template name: what senders write in `"template"`. Never a UUID, so a
/// path segment is unambiguously an id or a name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && uuid::Uuid::parse_str(name).is_err()
}

/// The variables of a render or send: a JSON object (absent or `null` =
/// empty), still as JSON text (valid: the body parsed).
pub fn variables(field: &str, v: Option<Box<RawValue>>) -> AppResult<Box<RawValue>> {
    let empty =
        || RawValue::from_string("{}".into()).map_err(|e| AppError::internal("variables", e));
    match v {
        None => empty(),
        Some(raw) if raw.get() == "null" => empty(),
        Some(raw) if raw.get().starts_with('{') => Ok(raw),
        Some(_) => Err(AppError::invalid(field, "must be a JSON object")),
    }
}

fn body(errors: &mut Vec<FieldError>, part: Part, value: Option<String>) -> Option<String> {
    let value = value.filter(|v| !v.is_empty())?;
    if value.len() > MAX_BODY {
        errors.push(FieldError::new(
            part.field(),
            format!("must be at most {MAX_BODY} bytes"),
        ));
    } else if value.contains('\0') {
        errors.push(FieldError::new(part.field(), "must not contain NUL"));
    } else if let Err(e) = check_syntax(part, &value) {
        errors.push(e);
    }
    Some(value)
}

impl UpdateTemplate {
    /// Applies the patch to `row`, validating every given field; all problems
    /// are reported together.
    pub fn apply(self, row: &mut TemplateRow) -> AppResult<()> {
        let mut errors = Vec::new();
        if let Some(name) = self.name {
            if valid_name(&name) {
                row.name = name;
            } else {
                errors.push(FieldError::new(
                    "name",
                    "must be 1-64 characters of letters, digits, '-', '_' or '.', start with a letter or digit, and not be a UUID",
                ));
            }
        }
        if let Some(subject) = self.subject {
            let s = subject.trim();
            if s.is_empty() {
                errors.push(FieldError::new("subject", "must not be empty"));
            } else if s.chars().count() > MAX_SUBJECT {
                errors.push(FieldError::new(
                    "subject",
                    format!("must be at most {MAX_SUBJECT} characters"),
                ));
            } else if has_line_break_or_nul(s) {
                errors.push(FieldError::new("subject", "must not contain CR, LF or NUL"));
            } else if let Err(e) = check_syntax(Part::Subject, s) {
                errors.push(e);
            }
            row.subject = s.to_string();
        }
        if let Some(html) = self.html {
            row.html = body(&mut errors, Part::Html, html);
        }
        if let Some(text) = self.text {
            row.text = body(&mut errors, Part::Text, text);
        }
        if errors.is_empty() && row.html.is_none() && row.text.is_none() {
            errors.push(FieldError::new("text", "one of text or html is required"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::invalid_fields(errors))
        }
    }
}
