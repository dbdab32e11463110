//! The console's users split by owner (issue 27, migration
//! `2026-12-07-100029_console_users_split`): rows of the old shape come
//! through the migration and back through its down.sql with nothing lost,
//! and the cookies and links issued before it (whose tokens name no owner)
//! still work, while a token edited to name another owner finds nothing.

use crate::common::{self, TestApp};
use crate::console::{get, sign_in, user};

use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use postline::console::users::Role;
use serde_json::json;

const VERSION: &str = "20261207100029";

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

fn revert(conn: &mut PgConnection) {
    while conn
        .applied_migrations()
        .unwrap()
        .iter()
        .any(|v| v.to_string() == VERSION)
    {
        conn.revert_last_migration(postline::db::MIGRATIONS)
            .unwrap();
    }
}

const ADMIN: &str = "aaaaaaaa-0000-0000-0000-000000000001";
const OWNER: &str = "aaaaaaaa-0000-0000-0000-000000000002";
const TENANT: &str = "11111111-1111-1111-1111-111111111111";

/// What the old shape holds, checked after the way down.
fn old_shape_checks() -> Vec<(String, i64)> {
    vec![
        (format!("SELECT count(*) AS n FROM console_users WHERE id = '{ADMIN}' \
          AND tenant_id IS NULL AND role = 'admin' AND totp_enabled AND totp_last_step = 7 \
          AND totp_secret_enc = '\\x01' AND password_hash = 'h'"), 1),
        (format!("SELECT count(*) AS n FROM console_users WHERE id = '{OWNER}' \
          AND tenant_id = '{TENANT}' AND email = 'owner@a.example'"), 1),
        (format!("SELECT count(*) AS n FROM console_sessions WHERE user_id = '{ADMIN}' AND csrf_token = 'c1'"), 1),
        (format!("SELECT count(*) AS n FROM console_sessions WHERE user_id = '{OWNER}' AND csrf_token = 'c2'"), 1),
        (format!("SELECT count(*) AS n FROM console_invitations WHERE user_id IN ('{ADMIN}', '{OWNER}')"), 2),
        (format!("SELECT count(*) AS n FROM console_login_challenges WHERE user_id = '{ADMIN}' AND failures = 2"), 1),
        (format!("SELECT count(*) AS n FROM console_login_challenges WHERE user_id = '{OWNER}'"), 1),
    ]
}

#[test]
fn the_console_split_keeps_users_sessions_links_and_challenges_up_and_down() {
    let db = common::fresh_database();
    let mut conn = PgConnection::establish(&db).unwrap();
    revert(&mut conn);
    let old = [
        format!("INSERT INTO tenants (id, name) VALUES ('{TENANT}', 'A')"),
        format!("INSERT INTO console_users (id, tenant_id, email, role, password_hash, \
           totp_secret_enc, totp_enabled, totp_last_step) VALUES \
           ('{ADMIN}', NULL, 'admin@p.example', 'admin', 'h', '\\x01', true, 7), \
           ('{OWNER}', '{TENANT}', 'owner@a.example', 'owner', NULL, NULL, false, NULL)"),
        format!("INSERT INTO console_sessions (token_hash, user_id, csrf_token, expires_at) VALUES \
           ('\\x01', '{ADMIN}', 'c1', now() + interval '1 hour'), \
           ('\\x02', '{OWNER}', 'c2', now() + interval '1 hour')"),
        format!("INSERT INTO console_invitations (token_hash, user_id, expires_at) VALUES \
           ('\\x03', '{ADMIN}', now() + interval '1 hour'), \
           ('\\x04', '{OWNER}', now() + interval '1 hour')"),
        format!("INSERT INTO console_login_challenges (token_hash, user_id, failures, expires_at) VALUES \
           ('\\x05', '{ADMIN}', 2, now() + interval '1 hour'), \
           ('\\x06', '{OWNER}', 0, now() + interval '1 hour')"),
    ];
    for sql in &old {
        diesel::sql_query(sql)
            .execute(&mut conn)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    for round in 0..2 {
        conn.run_pending_migrations(postline::db::MIGRATIONS)
            .unwrap();
        let split = [
            (format!("SELECT count(*) AS n FROM platform_console_users WHERE id = '{ADMIN}' \
              AND email = 'admin@p.example' AND totp_enabled AND totp_last_step = 7 \
              AND totp_secret_enc = '\\x01' AND password_hash = 'h'"), 1),
            ("SELECT count(*) AS n FROM console_users".to_string(), 1),
            (format!("SELECT count(*) AS n FROM console_users WHERE (tenant_id, id) = ('{TENANT}', '{OWNER}')"), 1),
            (format!("SELECT count(*) AS n FROM console_user_directory WHERE \
              (email = 'admin@p.example' AND tenant_id IS NULL) \
              OR (email, tenant_id) = ('owner@a.example', '{TENANT}')"), 2),
            (format!("SELECT count(*) AS n FROM platform_console_sessions WHERE user_id = '{ADMIN}' AND csrf_token = 'c1'"), 1),
            (format!("SELECT count(*) AS n FROM console_sessions WHERE (tenant_id, user_id) = ('{TENANT}', '{OWNER}')"), 1),
            ("SELECT count(*) AS n FROM console_sessions".to_string(), 1),
            (format!("SELECT count(*) AS n FROM platform_console_invitations WHERE user_id = '{ADMIN}'"), 1),
            (format!("SELECT count(*) AS n FROM console_invitations WHERE tenant_id = '{TENANT}'"), 1),
            ("SELECT count(*) AS n FROM console_invitations".to_string(), 1),
            (format!("SELECT count(*) AS n FROM platform_console_login_challenges WHERE failures = 2 AND user_id = '{ADMIN}'"), 1),
            (format!("SELECT count(*) AS n FROM console_login_challenges WHERE tenant_id = '{TENANT}'"), 1),
        ];
        for (sql, want) in &split {
            assert_eq!(count(&mut conn, sql), *want, "round {round}, up: {sql}");
        }
        // The address stays unique across owners (the directory's key).
        let dup = diesel::sql_query(format!(
            "INSERT INTO console_user_directory (email, tenant_id) VALUES ('admin@p.example', '{TENANT}')"
        ))
        .execute(&mut conn);
        assert!(dup.is_err(), "a taken address is refused");
        revert(&mut conn);
        for (sql, want) in old_shape_checks() {
            assert_eq!(count(&mut conn, &sql), want, "round {round}, down: {sql}");
        }
    }
    conn.run_pending_migrations(postline::db::MIGRATIONS)
        .unwrap();
}

/// The session cookie `name=value` with another owner part.
fn with_owner(cookie: &str, owner: &str) -> String {
    let (name, value) = cookie.split_once('=').unwrap();
    let (_, random) = value.split_once('.').expect("the token names its owner");
    format!("{name}={owner}.{random}")
}

#[tokio::test]
async fn tokens_name_their_owner_and_tokens_from_before_the_split_still_work() {
    let app = TestApp::spawn().await;
    let a = app.create_tenant(json!({"name": "A"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = app.create_tenant(json!({"name": "B"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    user(&app, "admin@example.com", Role::Admin, None).await;
    user(&app, "owner@a.example", Role::Owner, Some(&a)).await;
    let (admin, _) = sign_in(&app, "admin@example.com", &[]).await;
    let (owner, _) = sign_in(&app, "owner@a.example", &[]).await;
    let a_hex = a.replace('-', "");
    assert!(admin.starts_with("postline_console=p."), "{admin}");
    assert!(
        owner.starts_with(&format!("postline_console={a_hex}.")),
        "{owner}"
    );
    assert_eq!(get(&app, &owner, "/console").await.0, 200);
    assert_eq!(get(&app, &admin, "/console/tenants").await.0, 200);

    // Another owner named: nothing is found (back to the sign-in page).
    let b_hex = b.replace('-', "");
    for edited in [
        with_owner(&owner, &b_hex),
        with_owner(&owner, "p"),
        with_owner(&admin, &a_hex),
    ] {
        let (status, _, to) = get(&app, &edited, "/console").await;
        assert_eq!(
            (status, to.as_deref()),
            (303, Some("/console/login")),
            "{edited}"
        );
    }

    // Sessions opened before the split: the bare random token, stored by
    // the migration with its owner's rows.
    let mut conn = app.sql_conn();
    let ids: Vec<(String, Option<String>)> = ["admin@example.com", "owner@a.example"]
        .iter()
        .map(|e| {
            #[derive(QueryableByName)]
            struct Row {
                #[diesel(sql_type = diesel::sql_types::Text)]
                id: String,
                #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
                tenant: Option<String>,
            }
            let r: Row = diesel::sql_query(format!(
                "SELECT id::text AS id, NULL::text AS tenant FROM platform_console_users WHERE email = '{e}' \
                 UNION ALL SELECT id::text, tenant_id::text FROM console_users WHERE email = '{e}'"
            ))
            .get_result(&mut conn)
            .unwrap();
            (r.id, r.tenant)
        })
        .collect();
    for (id, tenant) in ids {
        let (token, hash) = postline::console::sessions::new_token();
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        let sql = match &tenant {
            None => format!(
                "INSERT INTO platform_console_sessions (token_hash, user_id, csrf_token, expires_at) \
                 VALUES ('\\x{hex}', '{id}', 'c', now() + interval '1 hour')"
            ),
            Some(t) => format!(
                "INSERT INTO console_sessions (tenant_id, token_hash, user_id, csrf_token, expires_at) \
                 VALUES ('{t}', '\\x{hex}', '{id}', 'c', now() + interval '1 hour')"
            ),
        };
        diesel::sql_query(sql).execute(&mut conn).unwrap();
        let cookie = format!("postline_console={}", token.expose());
        let (status, page, _) = get(&app, &cookie, "/console").await;
        assert_eq!(status, 200, "an old session of {id}: {page}");
    }

    // An address is unique across owners (the directory), and free again
    // once its user is removed.
    let create = |email: &'static str, role: Role, tenant: Option<String>| {
        let pool = app.pool().clone();
        async move {
            postline::console::users::create(
                &pool,
                &postline::audit::Actor::cli(),
                email,
                role,
                tenant.map(|t| postline::tenants::model::TenantRef::parse(&t)),
                Some(crate::console::PASSWORD),
                3600,
            )
            .await
        }
    };
    let taken = create("owner@a.example", Role::Admin, None).await;
    assert!(
        matches!(taken, Err(postline::error::AppError::Conflict { .. })),
        "an admin with a tenant user's address"
    );
    let taken = create("admin@example.com", Role::Viewer, Some(b.clone())).await;
    assert!(
        matches!(taken, Err(postline::error::AppError::Conflict { .. })),
        "a tenant user with an admin's address"
    );
    postline::console::team::remove_by_email(
        app.pool(),
        &postline::audit::Actor::cli(),
        "admin@example.com",
    )
    .await
    .unwrap();
    create("admin@example.com", Role::Viewer, Some(b.clone()))
        .await
        .expect("the address is free again");
    let (viewer, _) = sign_in(&app, "admin@example.com", &[]).await;
    assert!(
        viewer.starts_with(&format!("postline_console={b_hex}.")),
        "{viewer}"
    );
    assert_eq!(
        get(&app, &admin, "/console").await.0,
        303,
        "the admin's session ended"
    );
}
