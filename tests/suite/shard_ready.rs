//! Ready to shard by tenant (issue 27, DESIGN §15), read from the catalog
//! of a migrated database: every table with a `tenant_id` has it NOT NULL,
//! its primary key and unique indexes lead with it and its foreign keys
//! include it (unless they point at a reference table); every other table
//! carries the comment `postline:reference <why>`.
//!
//! `KNOWN` lists what the schema still breaks today (the work left, see
//! docs/ARCHITECTURE.md "Deviations"): the test fails on anything new, and
//! on an entry that no longer occurs (so the list only shrinks).

use crate::common;

use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

const KNOWN: &[&str] = &[
    // Platform rows mixed with tenant rows (admin keys, admin console
    // users, platform OAuth clients and webhooks, system audit entries):
    // each needs a split into a platform table and a tenant table.
    "api_keys: primary key does not lead with tenant_id",
    "api_keys: tenant_id is nullable (platform rows mixed in)",
    "api_keys: unique index api_keys_key_id_key does not lead with tenant_id",
    "audit_log: primary key does not lead with tenant_id",
    "audit_log: tenant_id is nullable (platform rows mixed in)",
    "console_users: primary key does not lead with tenant_id",
    "console_users: tenant_id is nullable (platform rows mixed in)",
    "console_users: unique index console_users_email does not lead with tenant_id",
    "oauth_clients: primary key does not lead with tenant_id",
    "oauth_clients: tenant_id is nullable (platform rows mixed in)",
    "oauth_clients: unique index oauth_clients_client_id_key does not lead with tenant_id",
    // The route's endpoint: `webhooks` is keyed by `id` alone until its split.
    "inbound_routes: foreign key inbound_routes_webhook_id_fkey leaves tenant_id out",
    "webhook_deliveries: foreign key webhook_deliveries_webhook_id_fkey leaves tenant_id out",
    "webhook_deliveries: primary key does not lead with tenant_id",
    "webhook_deliveries: tenant_id is nullable (platform rows mixed in)",
    "webhooks: primary key does not lead with tenant_id",
    "webhooks: tenant_id is nullable (platform rows mixed in)",
    // Children of those that carry no tenant_id of their own.
    "console_invitations: no tenant_id and no postline:reference comment",
    "console_login_challenges: no tenant_id and no postline:reference comment",
    "console_sessions: no tenant_id and no postline:reference comment",
    "idempotency_keys: no tenant_id and no postline:reference comment",
    "webhook_attempts: no tenant_id and no postline:reference comment",
    // Global uniqueness that a shard cannot check alone.
    "domain_dkim_keys: unique index domain_dkim_keys_id does not lead with tenant_id",
    "domains: unique index domains_verified_name does not lead with tenant_id",
];

#[derive(QueryableByName)]
struct TableRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    reference: bool,
    #[diesel(sql_type = Bool)]
    has_tenant: bool,
    #[diesel(sql_type = Bool)]
    tenant_nullable: bool,
}

#[derive(QueryableByName)]
struct Violation {
    #[diesel(sql_type = Text)]
    what: String,
}

fn violations(conn: &mut PgConnection) -> BTreeSet<String> {
    let tables: Vec<TableRow> = diesel::sql_query(
        "SELECT c.relname AS name, \
           coalesce(obj_description(c.oid, 'pg_class'), '') LIKE 'postline:reference %' AS reference, \
           a.attname IS NOT NULL AS has_tenant, coalesce(NOT a.attnotnull, false) AS tenant_nullable \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') \
           AND c.relname <> '__diesel_schema_migrations' AND NOT c.relispartition \
         ORDER BY 1",
    )
    .load(conn)
    .unwrap();
    let mut out = BTreeSet::new();
    for t in &tables {
        // `tenants` is the distribution root: distributed by its `id`.
        if t.reference || t.name == "tenants" {
            continue;
        }
        if !t.has_tenant {
            out.insert(format!(
                "{}: no tenant_id and no postline:reference comment",
                t.name
            ));
            continue;
        }
        if t.tenant_nullable {
            out.insert(format!(
                "{}: tenant_id is nullable (platform rows mixed in)",
                t.name
            ));
        }
    }
    let references: BTreeSet<&str> = tables
        .iter()
        .filter(|t| t.reference)
        .map(|t| t.name.as_str())
        .collect();
    let tenant_tables: Vec<String> = tables
        .iter()
        .filter(|t| !t.reference && t.has_tenant)
        .map(|t| t.name.clone())
        .collect();
    // Unique indexes (primary keys included) whose first column is not tenant_id.
    let unique: Vec<Violation> = diesel::sql_query(
        "SELECT c.relname || ': ' || CASE WHEN i.indisprimary THEN 'primary key' ELSE 'unique index ' || ic.relname END \
           || ' does not lead with tenant_id' AS what \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] \
         WHERE n.nspname = 'public' AND i.indisunique AND c.relname = ANY($1) \
           AND coalesce(a.attname, '') <> 'tenant_id'",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(&tenant_tables)
    .load(conn)
    .unwrap();
    out.extend(unique.into_iter().map(|v| v.what));
    // Foreign keys of tenant tables that leave tenant_id out, except those
    // that point at a reference table.
    #[derive(QueryableByName)]
    struct Fk {
        #[diesel(sql_type = Text)]
        what: String,
        #[diesel(sql_type = Text)]
        target: String,
    }
    let fks: Vec<Fk> = diesel::sql_query(
        "SELECT c.relname || ': foreign key ' || k.conname || ' leaves tenant_id out' AS what, \
           t.relname AS target \
         FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class t ON t.oid = k.confrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND k.contype = 'f' AND c.relname = ANY($1) \
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
             AND a.attname = 'tenant_id' AND a.attnum = ANY(k.conkey))",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(&tenant_tables)
    .load(conn)
    .unwrap();
    out.extend(
        fks.into_iter()
            .filter(|f| !references.contains(f.target.as_str()))
            .map(|f| f.what),
    );
    out
}

#[test]
fn every_tenant_table_leads_with_tenant_id_and_the_rest_are_reference_tables() {
    let db = common::fresh_database();
    let mut conn = PgConnection::establish(&db).unwrap();
    let found = violations(&mut conn);
    let known: BTreeSet<String> = KNOWN.iter().map(|s| s.to_string()).collect();
    let new: Vec<&String> = found.difference(&known).collect();
    let fixed: Vec<&String> = known.difference(&found).collect();
    eprintln!(
        "shard-ready schema: {} known violation(s) left",
        found.len()
    );
    assert!(
        new.is_empty(),
        "new violations of the shard-ready rule:\n{}",
        new.iter()
            .map(|s| format!("    \"{s}\","))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(fixed.is_empty(), "fixed (remove from KNOWN): {fixed:?}");
}
