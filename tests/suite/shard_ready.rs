//! Ready to shard by tenant (issue 27, DESIGN §15), read from the catalog
//! of a migrated database: every table with a `tenant_id` has it NOT NULL,
//! its primary key and unique indexes lead with it and its foreign keys
//! include it (unless they point at a reference table); every other table
//! carries the comment `postline:reference <why>`.
//!
//! `KNOWN` lists what the schema still breaks (empty since the console's
//! users were split, migration 2026-12-07-100029_console_users_split): the
//! test fails on anything new, and on an entry that no longer occurs (so the
//! list only shrinks).

use crate::common;

use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

const KNOWN: &[&str] = &[];

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

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// This migration's version (its directory's timestamp).
const VERSION: &str = "20261207100028";

/// An installation upgrades in place: rows in the shape before the split
/// (platform endpoints among `webhooks`, admin-scoped idempotency keys,
/// verified domains held by the old partial index) come through the
/// migration in their new tables, and the rule holds afterwards.
#[test]
fn the_split_migrates_rows_of_the_old_shape() {
    use diesel_migrations::MigrationHarness;
    let db = common::fresh_database();
    let mut conn = PgConnection::establish(&db).unwrap();
    // Back to the schema before this migration (and any after it).
    while conn
        .applied_migrations()
        .unwrap()
        .iter()
        .any(|v| v.to_string() == VERSION)
    {
        conn.revert_last_migration(postline::db::MIGRATIONS)
            .unwrap();
    }
    let old = [
        "INSERT INTO tenants (id, name) VALUES ('11111111-1111-1111-1111-111111111111', 'A')",
        // A platform endpoint and a tenant endpoint, each with a delivery
        // (the platform's of a tenant event, and a ping) and attempts.
        "INSERT INTO webhooks (id, tenant_id, url, events, secret_enc) VALUES \
           ('22222222-2222-2222-2222-222222222222', NULL, 'https://p.invalid/', '{*}', '\\x00'), \
           ('33333333-3333-3333-3333-333333333333', '11111111-1111-1111-1111-111111111111', \
            'https://t.invalid/', '{*}', '\\x00')",
        "INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_type, payload) VALUES \
           ('44444444-4444-4444-4444-444444444444', '22222222-2222-2222-2222-222222222222', \
            '11111111-1111-1111-1111-111111111111', 'email.sent', '{}'), \
           ('45444444-4444-4444-4444-444444444444', '22222222-2222-2222-2222-222222222222', \
            NULL, 'webhook.test', '{}'), \
           ('55555555-5555-5555-5555-555555555555', '33333333-3333-3333-3333-333333333333', \
            '11111111-1111-1111-1111-111111111111', 'email.sent', '{}')",
        "INSERT INTO webhook_attempts (delivery_id, attempt, duration_ms) VALUES \
           ('44444444-4444-4444-4444-444444444444', 1, 5), \
           ('45444444-4444-4444-4444-444444444444', 1, 5), \
           ('55555555-5555-5555-5555-555555555555', 1, 5), \
           ('55555555-5555-5555-5555-555555555555', 2, 5)",
        "INSERT INTO inbound_routes (tenant_id, id, match_addr, domain, local_part, action, webhook_id) \
         VALUES ('11111111-1111-1111-1111-111111111111', gen_random_uuid(), 'in@a.example', \
                 'a.example', 'in', 'webhook', '33333333-3333-3333-3333-333333333333')",
        // An admin key and a tenant key.
        "INSERT INTO api_keys (id, tenant_id, kind, name, key_id, secret_hash, permissions) VALUES \
           ('77777777-7777-7777-7777-777777777777', NULL, 'admin', 'a', 'kadmin', 'h', '{}'), \
           ('88888888-8888-8888-8888-888888888888', '11111111-1111-1111-1111-111111111111', \
            'live', 't', 'klive', 'h', '{}')",
        // A platform OAuth client and a tenant's.
        "INSERT INTO oauth_clients (id, tenant_id, kind, name, client_id, secret_hash, permissions) VALUES \
           (gen_random_uuid(), NULL, 'platform', 'p', 'cplatform', 'h', '{}'), \
           (gen_random_uuid(), '11111111-1111-1111-1111-111111111111', 'tenant', 't', 'ctenant', 'h', '{}')",
        // A platform audit entry and a tenant's.
        "INSERT INTO audit_log (id, tenant_id, actor_kind, action) VALUES \
           (gen_random_uuid(), NULL, 'cli', 'tenant.created'), \
           (gen_random_uuid(), '11111111-1111-1111-1111-111111111111', 'admin_key', 'tenant.updated')",
        // Idempotency keys scoped by the tenant and by an admin key.
        "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response) VALUES \
           ('11111111-1111-1111-1111-111111111111', 'k', '\\x00', 202, '{}'), \
           ('66666666-6666-6666-6666-666666666666', 'k', '\\x00', 202, '{}')",
        "INSERT INTO domains (tenant_id, id, name, status) VALUES \
           ('11111111-1111-1111-1111-111111111111', gen_random_uuid(), 'a.example', 'verified'), \
           ('11111111-1111-1111-1111-111111111111', gen_random_uuid(), 'b.example', 'pending')",
    ];
    for sql in old {
        diesel::sql_query(sql)
            .execute(&mut conn)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    conn.run_pending_migrations(postline::db::MIGRATIONS)
        .unwrap();
    let checks = [
        ("SELECT count(*) AS n FROM platform_webhooks WHERE id = '22222222-2222-2222-2222-222222222222'", 1),
        ("SELECT count(*) AS n FROM webhooks", 1),
        ("SELECT count(*) AS n FROM platform_webhook_deliveries", 2),
        ("SELECT count(*) AS n FROM platform_webhook_deliveries WHERE tenant_id IS NULL", 1),
        ("SELECT count(*) AS n FROM platform_webhook_attempts", 2),
        ("SELECT count(*) AS n FROM webhook_deliveries \
          WHERE tenant_id = '11111111-1111-1111-1111-111111111111'", 1),
        ("SELECT count(*) AS n FROM webhook_attempts \
          WHERE tenant_id = '11111111-1111-1111-1111-111111111111'", 2),
        ("SELECT count(*) AS n FROM inbound_routes \
          WHERE webhook_id = '33333333-3333-3333-3333-333333333333'", 1),
        ("SELECT count(*) AS n FROM idempotency_keys \
          WHERE tenant_id = '11111111-1111-1111-1111-111111111111'", 1),
        ("SELECT count(*) AS n FROM platform_idempotency_keys \
          WHERE admin_key_id = '66666666-6666-6666-6666-666666666666'", 1),
        ("SELECT count(*) AS n FROM verified_domains WHERE name = 'a.example'", 1),
        ("SELECT count(*) AS n FROM verified_domains", 1),
        ("SELECT count(*) AS n FROM platform_audit_log WHERE action = 'tenant.created'", 1),
        ("SELECT count(*) AS n FROM tenant_audit_log WHERE action = 'tenant.updated'", 1),
        ("SELECT count(*) AS n FROM audit_log", 2),
        ("SELECT count(*) AS n FROM platform_oauth_clients WHERE client_id = 'cplatform'", 1),
        ("SELECT count(*) AS n FROM oauth_clients WHERE client_id = 'ctenant'", 1),
        ("SELECT count(*) AS n FROM oauth_client_directory \
          WHERE (client_id, tenant_id) = ('ctenant', '11111111-1111-1111-1111-111111111111') \
             OR (client_id = 'cplatform' AND tenant_id IS NULL)", 2),
        ("SELECT count(*) AS n FROM admin_keys WHERE key_id = 'kadmin'", 1),
        ("SELECT count(*) AS n FROM api_keys WHERE key_id = 'klive' \
          AND tenant_id = '11111111-1111-1111-1111-111111111111'", 1),
        ("SELECT count(*) AS n FROM api_key_directory \
          WHERE (key_id, tenant_id) = ('klive', '11111111-1111-1111-1111-111111111111') \
             OR (key_id = 'kadmin' AND tenant_id IS NULL)", 2),
    ];
    for (sql, want) in checks {
        assert_eq!(count(&mut conn, sql), want, "{sql}");
    }
    // Deleting the tenant endpoint clears the route's endpoint only.
    diesel::sql_query("DELETE FROM webhooks")
        .execute(&mut conn)
        .unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM inbound_routes \
             WHERE webhook_id IS NULL AND tenant_id = '11111111-1111-1111-1111-111111111111'"
        ),
        1
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM webhook_attempts"),
        0
    );
    let known: BTreeSet<String> = KNOWN.iter().map(|s| s.to_string()).collect();
    assert_eq!(violations(&mut conn), known);
}
