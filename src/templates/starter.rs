//! The starter templates of the top-level `templates/` folder, compiled into
//! the binary and copied into every new tenant (in the transaction that
//! creates it); `postline templates install-starters` adds the missing ones
//! to existing tenants.

use chrono::Utc;
use diesel::{Connection, PgConnection, QueryResult};
use uuid::Uuid;

use super::model::{self, NewStarter, NewTemplate};
use crate::domain::TenantId;

/// One starter: name, subject, text part, html part.
pub struct Starter {
    pub name: &'static str,
    pub subject: &'static str,
    pub text: &'static str,
    pub html: &'static str,
}

macro_rules! starter {
    ($name:literal) => {
        Starter {
            name: $name,
            subject: include_str!(concat!("../../templates/", $name, "/subject.txt")),
            text: include_str!(concat!("../../templates/", $name, "/body.txt")),
            html: include_str!(concat!("../../templates/", $name, "/body.html")),
        }
    };
}

pub const STARTERS: [Starter; 4] = [
    starter!("welcome"),
    starter!("password-reset"),
    starter!("verification-code"),
    starter!("receipt"),
];

/// Rows for a new tenant's copy of the starters.
pub fn rows_for(tenant: TenantId) -> Vec<NewTemplate> {
    let now = Utc::now();
    STARTERS
        .iter()
        .map(|s| NewTemplate {
            tenant_id: tenant.0,
            id: Uuid::new_v4(),
            name: s.name.to_string(),
            subject: s.subject.trim().to_string(),
            html: Some(s.html.to_string()),
            text: Some(s.text.to_string()),
            created_at: now,
            updated_at: now,
        })
        .collect()
}

/// Copies every starter that a live tenant lacks (by name) into it: all
/// tenants, or only `tenant`. For starters added in a newer release and for
/// tenants created before them; a tenant's own template of the same name is
/// never touched, but a starter the tenant deleted comes back. One
/// transaction; returns the rows added per starter name.
pub fn install_missing(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
) -> QueryResult<Vec<(&'static str, usize)>> {
    conn.transaction(|conn| {
        STARTERS
            .iter()
            .map(|s| {
                let copy = NewStarter {
                    name: s.name,
                    subject: s.subject.trim(),
                    html: s.html,
                    text: s.text,
                };
                Ok((s.name, model::insert_where_missing(conn, &copy, tenant)?))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::super::render::{check_syntax, render, Part};
    use super::*;
    use serde_json::json;

    #[test]
    fn every_starter_compiles_and_renders_with_its_documented_variables() {
        let vars = json!({
            "name": "Ann", "app_name": "Acme", "action_url": "https://acme.test/start",
            "reset_url": "https://acme.test/reset?t=1", "expires_in": "30 minutes",
            "code": "123456", "receipt_number": "R-1", "date": "2026-01-02",
            "items": [{"description": "Plan", "amount": "$10"}], "total": "$10"
        });
        for s in &STARTERS {
            for (part, src) in [
                (Part::Subject, s.subject),
                (Part::Text, s.text),
                (Part::Html, s.html),
            ] {
                check_syntax(part, src).unwrap_or_else(|e| panic!("{}: {e:?}", s.name));
            }
            let r = render(s.subject.trim(), Some(s.html), Some(s.text), &vars, "")
                .unwrap_or_else(|e| panic!("{}: {e:?}", s.name));
            assert!(
                !r.subject.is_empty() && !r.subject.contains('\n'),
                "{}",
                s.name
            );
        }
    }
}
