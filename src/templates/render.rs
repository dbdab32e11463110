//! The template engine (minijinja): one shared environment with strict
//! undefined values (a missing variable is an error, never an empty string),
//! HTML autoescaping for the html part only, and fuel plus an output cap so a
//! tenant's template cannot spin or grow without bound.

use std::io::{self, Write};
use std::sync::OnceLock;

use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;

use crate::error::{AppError, FieldError};

/// Instructions one part may execute.
const FUEL: u64 = 200_000;
/// Output bytes one part may produce.
const MAX_OUTPUT: usize = 2 * 1024 * 1024;

/// The three parts of a template (or of its rendering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Subject,
    Html,
    Text,
}

impl Part {
    pub fn field(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Html => "html",
            Part::Text => "text",
        }
    }

    /// The name the engine sees; `.html` switches autoescaping on.
    fn file_name(self) -> &'static str {
        match self {
            Part::Subject => "subject.txt",
            Part::Html => "body.html",
            Part::Text => "body.txt",
        }
    }
}

/// A rendered template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Rendered {
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_debug(true);
        env.set_fuel(Some(FUEL));
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if *state.auto_escape() == AutoEscape::Html && !value.is_safe() {
                out.write_str(&escape_html(&value.to_string()))
                    .map_err(minijinja::Error::from)
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env
    })
}

/// HTML escaping as Jinja2 (MarkupSafe) does it: `& < > " '`. minijinja's
/// default also escapes `/`, which turns every URL in an `href` into
/// `https:&#x2f;&#x2f;…` — valid, but ugly in the source of a mail.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Refuses a part that does not compile, naming the line (create/update).
pub fn check_syntax(part: Part, source: &str) -> Result<(), FieldError> {
    env()
        .template_from_named_str(part.file_name(), source)
        .map(|_| ())
        .map_err(|e| {
            let detail = e.detail().unwrap_or("invalid template").to_string();
            let message = match e.line() {
                Some(line) => format!("syntax error on line {line}: {detail}"),
                None => format!("syntax error: {detail}"),
            };
            FieldError::new(part.field(), message)
        })
}

/// Renders the parts with `variables` (a JSON object). `prefix` places the
/// field names of errors (`emails[2].`) in a batch.
pub fn render(
    subject: &str,
    html: Option<&str>,
    text: Option<&str>,
    variables: &serde_json::Value,
    prefix: &str,
) -> Result<Rendered, AppError> {
    let ctx = Value::from(Serde(variables));
    let one = |part, src: &str| render_part(part, src, &ctx, variables, prefix);
    Ok(Rendered {
        subject: one(Part::Subject, subject)?.trim().to_string(),
        html: html.map(|h| one(Part::Html, h)).transpose()?,
        text: text.map(|t| one(Part::Text, t)).transpose()?,
    })
}

fn render_part(
    part: Part,
    source: &str,
    ctx: &Value,
    variables: &serde_json::Value,
    prefix: &str,
) -> Result<String, AppError> {
    let field = format!("{prefix}{}", part.field());
    let tmpl = env()
        .template_from_named_str(part.file_name(), source)
        .map_err(|e| {
            // Stored templates were checked on save; this is an old or
            // hand-edited row.
            AppError::invalid(field.clone(), format!("does not compile: {e}"))
        })?;
    let mut out = Capped(Vec::new());
    match tmpl.render_captured_to(ctx.clone(), &mut out) {
        Ok(_) => String::from_utf8(out.0)
            .map_err(|_| AppError::invalid(field, "rendered to invalid UTF-8")),
        Err(e) if e.kind() == ErrorKind::UndefinedError => {
            let name = e
                .range()
                .and_then(|r| source.get(r))
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .or_else(|| {
                    // No span: the first top-level name the variables lack.
                    let mut names: Vec<_> = tmpl.undeclared_variables(false).into_iter().collect();
                    names.sort();
                    names.into_iter().find(|n| variables.get(n).is_none())
                })
                .unwrap_or_else(|| "unknown".into());
            let line = e.line().map(|l| format!(", line {l}")).unwrap_or_default();
            Err(AppError::Validation {
                code: "template_variable_missing",
                detail: format!(
                    "The template variable '{name}' is missing ({}{line}).",
                    part.field()
                ),
                errors: vec![FieldError::new(
                    format!("{prefix}variables.{name}"),
                    format!("is required by the template's {}", part.field()),
                )],
            })
        }
        Err(e) => {
            let why = match e.kind() {
                ErrorKind::OutOfFuel => "the template runs too long".to_string(),
                ErrorKind::WriteFailure => {
                    format!("the output exceeds {MAX_OUTPUT} bytes")
                }
                _ => e
                    .detail()
                    .map_or_else(|| e.kind().to_string(), str::to_string),
            };
            let line = e
                .line()
                .map(|l| format!(" on line {l}"))
                .unwrap_or_default();
            Err(AppError::Validation {
                code: "template_render_failed",
                detail: format!(
                    "The template's {} cannot be rendered{line}: {why}.",
                    part.field()
                ),
                errors: vec![FieldError::new(
                    field,
                    format!("cannot be rendered{line}: {why}"),
                )],
            })
        }
    }
}

/// The 422 of a render stopped from outside (the sandbox's memory or time
/// limit), where the part and line are unknown.
pub fn failed(field: &str, why: &str) -> AppError {
    AppError::Validation {
        code: "template_render_failed",
        detail: format!("The template cannot be rendered: {why}."),
        errors: vec![FieldError::new(field, format!("cannot be rendered: {why}"))],
    }
}

/// A writer that fails once the output passes [`MAX_OUTPUT`].
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            return Err(io::Error::other("template output too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn html_is_escaped_text_and_subject_are_not() {
        let r = render(
            "Hi {{ name }}",
            Some("<p>{{ name }}</p>"),
            Some("Hi {{ name }}"),
            &json!({"name": "<b>Ann</b> & co"}),
            "",
        )
        .unwrap();
        assert_eq!(r.subject, "Hi <b>Ann</b> & co");
        assert_eq!(r.text.as_deref(), Some("Hi <b>Ann</b> & co"));
        assert_eq!(
            r.html.as_deref(),
            Some("<p>&lt;b&gt;Ann&lt;/b&gt; &amp; co</p>")
        );
    }

    #[test]
    fn a_missing_variable_is_named() {
        let e = render(
            "x",
            Some("a\n{{ user.name }}"),
            None,
            &json!({"user": {}}),
            "",
        )
        .unwrap_err();
        match e {
            AppError::Validation {
                code,
                detail,
                errors,
            } => {
                assert_eq!(code, "template_variable_missing");
                assert!(
                    detail.contains("'user.name'") && detail.contains("line 2"),
                    "{detail}"
                );
                assert_eq!(errors[0].field, "variables.user.name");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_errors_name_the_line_and_runaways_stop() {
        let e = check_syntax(Part::Html, "ok\n{% if %}").unwrap_err();
        assert_eq!(e.field, "html");
        assert!(e.message.contains("line 2"), "{}", e.message);
        let e = render(
            "{% for i in range(100000) %}{{ i }}{% endfor %}",
            None,
            None,
            &json!({}),
            "",
        )
        .unwrap_err();
        assert!(matches!(
            e,
            AppError::Validation {
                code: "template_render_failed",
                ..
            }
        ));
        let e = render(
            "{% for i in range(50) %}{{ 'a' * 1000000 }}{% endfor %}",
            None,
            None,
            &json!({}),
            "",
        )
        .unwrap_err();
        assert!(matches!(
            e,
            AppError::Validation {
                code: "template_render_failed",
                ..
            }
        ));
    }
}
