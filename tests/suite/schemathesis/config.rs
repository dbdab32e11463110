//! schemathesis.toml, written from the served document.

use std::fmt::Write as _;

use serde_json::Value;

use super::seed::Seeded;

/// A TOML string literal.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// How an operation's parameter is filled: from a dictionary of seeded
/// values most of the time (the rest generated), or always one value.
enum Fill {
    Dictionary(&'static str),
    Always(String),
}

/// The fill of path parameter `name` of `method path`, or none (generated).
/// Decided from the document, so a new route gets real objects where its
/// parameters are named like the existing ones.
fn path_fill(s: &Seeded, method: &str, path: &str, name: &str) -> Option<Fill> {
    let segments: Vec<&str> = path.split('/').collect();
    let before = segments
        .iter()
        .position(|seg| *seg == format!("{{{name}}}"))
        .and_then(|i| i.checked_sub(1))
        .map(|i| segments[i])
        .unwrap_or_default();
    let kind = match (name, before) {
        ("tenant", _) => "tenant",
        ("email", _) | ("id", "emails") => "email",
        ("key", "admin-keys") => "admin_key",
        ("key", "api-keys") => "tenant_key",
        ("id", "templates") => "template",
        ("id", "webhooks") if path.starts_with("/v1/admin/") => "platform_webhook",
        ("id", "webhooks") => "webhook",
        ("id", "domains") => "domain",
        ("id", "suppressions") => "suppression",
        ("id", "oauth-clients") if path.contains("{tenant}") => "tenant_client",
        ("id", "oauth-clients") => "platform_client",
        _ => return None,
    };
    // A DELETE acts on the seeded tenant's spare of its kind, always (not
    // on what the run authenticates with or reads; see the module comment):
    // a generated or pooled value could name a fixture.
    if method == "DELETE" {
        let target = match kind {
            "tenant" if path == "/v1/tenants/{tenant}" => &s.victim_tenant,
            "tenant" => &s.tenant,
            _ => s.spares.get(kind)?,
        };
        return Some(Fill::Always(target.clone()));
    }
    match kind {
        // Keys are only ever revoked (DELETE above).
        "admin_key" | "tenant_key" => None,
        _ => Some(Fill::Dictionary(kind)),
    }
}

/// A schema with its `$ref` followed (into `components.schemas`).
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        Some(name) => &spec["components"]["schemas"][name],
        None => schema,
    }
}

/// Body fields filled from dictionaries, found by name in the request
/// body's schema (and in the items of its list properties, as in a batch):
/// a send from the seeded tenant's verified domain can then be accepted.
fn body_fills(spec: &Value, op: &Value) -> Vec<(String, &'static str)> {
    const FIELDS: [(&str, &str); 5] = [
        ("from", "from"),
        ("to", "to"),
        ("From", "from"),
        ("To", "to"),
        ("tenant_id", "tenant"),
    ];
    let body = resolve(
        spec,
        &op["requestBody"]["content"]["application/json"]["schema"],
    );
    let mut out = Vec::new();
    let Some(props) = body["properties"].as_object() else {
        return out;
    };
    for (field, dictionary) in FIELDS {
        if props.contains_key(field) {
            out.push((format!("body.{field}"), dictionary));
        }
    }
    for (name, prop) in props {
        let items = resolve(spec, &prop["items"]);
        for (field, dictionary) in FIELDS {
            if items["properties"].get(field).is_some() {
                out.push((format!("body.{name}[*].{field}"), dictionary));
            }
        }
    }
    out
}

/// schemathesis.toml: the dictionaries, and one `[[operations]]` entry per
/// operation of `spec` that has a filled parameter (an entry per operation:
/// schemathesis takes each setting from the first entry matching).
pub fn config(s: &Seeded, spec: &Value) -> String {
    let mut out = String::new();
    let dictionaries: [(&str, Vec<&str>); 11] = [
        ("tenant", vec![&s.tenant, &s.external_id]),
        ("email", vec![&s.email]),
        ("template", vec![&s.template, "fuzzed"]),
        ("webhook", vec![&s.webhook]),
        ("platform_webhook", vec![&s.platform_webhook]),
        ("domain", vec![&s.domain, &s.domain_name]),
        ("suppression", vec![&s.suppression]),
        ("tenant_client", vec![&s.tenant_client]),
        ("platform_client", vec![&s.platform_client]),
        ("from", vec!["a@fuzzed.example", "Ann <ann@fuzzed.example>"]),
        ("to", vec!["b@example.com"]),
    ];
    for (name, values) in dictionaries {
        let vals: Vec<String> = values.iter().map(|v| q(v)).collect();
        let _ = writeln!(
            out,
            "[dictionaries.{name}]\nvalues = [{}]\n",
            vals.join(", ")
        );
    }
    let paths = spec["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let method = method.to_ascii_uppercase();
            let mut fills: Vec<String> = Vec::new();
            for p in op["parameters"].as_array().into_iter().flatten() {
                let (Some(name), Some(at)) = (p["name"].as_str(), p["in"].as_str()) else {
                    continue;
                };
                // An admin key names the tenant of a read with ?tenant_id=.
                if (at, name) == ("query", "tenant_id") {
                    fills.push(format!(
                        "{} = {{ dictionary = \"tenant\", probability = 0.8 }}",
                        q("query.tenant_id")
                    ));
                    continue;
                }
                if at != "path" {
                    continue;
                }
                match path_fill(s, &method, path, name) {
                    Some(Fill::Dictionary(d)) => fills.push(format!(
                        "{} = {{ dictionary = {}, probability = 0.8 }}",
                        q(&format!("path.{name}")),
                        q(d)
                    )),
                    Some(Fill::Always(v)) => {
                        fills.push(format!("{} = {}", q(&format!("path.{name}")), q(&v)))
                    }
                    None => {}
                }
            }
            for (field, d) in body_fills(spec, op) {
                fills.push(format!(
                    "{} = {{ dictionary = {}, probability = 0.8 }}",
                    q(&field),
                    q(d)
                ));
            }
            if fills.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "[[operations]]\ninclude-name = {}\nparameters = {{ {} }}\n",
                q(&format!("{method} {path}")),
                fills.join(", ")
            );
        }
    }
    out
}
