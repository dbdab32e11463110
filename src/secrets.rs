//! Master key rotation: re-encrypt every stored secret (SMTP passwords,
//! webhook secrets, DKIM private keys, OAuth signing keys, console TOTP
//! secrets) under the current
//! master key. Nodes run with the new key as `security.master_key` and the old
//! one in `security.previous_master_keys`, so both keep working while this
//! runs; afterwards the old key can be removed (docs/OPERATIONS.md).

use uuid::Uuid;

use crate::crypto::Vault;
use crate::oauth::signing::private_key_context;
use crate::tenants::input::smtp_password_context;
use crate::webhooks::signing::secret_context;
use diesel::sql_types::{BigInt, Bytea, Nullable, Uuid as SqlUuid};
use diesel::{PgConnection, QueryResult, QueryableByName, RunQueryDsl};

/// What a rotation did, per kind of secret.
#[derive(Debug, Default)]
pub struct RotationReport {
    pub rotated: usize,
    pub already_current: usize,
    /// Changed by someone else during the run (they are sealed with the new
    /// key already, since every node seals with the master key).
    pub skipped_concurrent: usize,
}

/// One kind of sealed column: the name reports use, its table and `bytea`
/// column (rows keyed by a uuid `id`) and its AEAD context.
struct SealedColumn {
    name: &'static str,
    table: &'static str,
    column: &'static str,
    context: fn(Uuid) -> String,
}

const COLUMNS: [SealedColumn; 7] = [
    SealedColumn {
        name: "tenants.smtp_password",
        table: "tenants",
        column: "smtp_password_enc",
        context: smtp_password_context,
    },
    SealedColumn {
        name: "webhooks.secret",
        table: "webhooks",
        column: "secret_enc",
        context: secret_context,
    },
    SealedColumn {
        name: "platform_webhooks.secret",
        table: "platform_webhooks",
        column: "secret_enc",
        context: secret_context,
    },
    SealedColumn {
        name: "domain_dkim_keys.private_key_enc",
        table: "domain_dkim_keys",
        column: "private_key_enc",
        context: crate::domains::keys::private_key_context,
    },
    SealedColumn {
        name: "oauth_signing_keys.private_key",
        table: "oauth_signing_keys",
        column: "private_key_enc",
        context: private_key_context,
    },
    SealedColumn {
        name: "console_users.totp_secret_enc",
        table: "console_users",
        column: "totp_secret_enc",
        context: crate::console::second_factor::secret_context,
    },
    SealedColumn {
        name: "platform_console_users.totp_secret_enc",
        table: "platform_console_users",
        column: "totp_secret_enc",
        context: crate::console::second_factor::secret_context,
    },
];

#[derive(QueryableByName)]
struct SealedRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Bytea)]
    sealed: Vec<u8>,
}

/// A page of `(row id, sealed value)` after `after` (the names are the
/// constants above, never input).
fn page(
    conn: &mut PgConnection,
    col: &SealedColumn,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<SealedRow>> {
    let (t, c) = (col.table, col.column);
    diesel::sql_query(format!(
        "SELECT id, {c} AS sealed FROM {t} WHERE {c} IS NOT NULL \
         AND ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    ))
    .bind::<Nullable<SqlUuid>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(conn)
}

/// Swaps `old` for `new` on one row; false when the row changed meanwhile.
fn replace(
    conn: &mut PgConnection,
    col: &SealedColumn,
    id: Uuid,
    old: &[u8],
    new: &[u8],
) -> QueryResult<bool> {
    let (t, c) = (col.table, col.column);
    diesel::sql_query(format!(
        "UPDATE {t} SET {c} = $1 WHERE id = $2 AND {c} = $3"
    ))
    .bind::<Bytea, _>(new)
    .bind::<SqlUuid, _>(id)
    .bind::<Bytea, _>(old)
    .execute(conn)
    .map(|n| n == 1)
}

/// Re-encrypts every sealed value not yet under the vault's primary key.
/// Fails (without partial damage: each value is swapped atomically) on a
/// value no configured key can open.
pub fn rotate(
    conn: &mut PgConnection,
    vault: &Vault,
) -> anyhow::Result<Vec<(&'static str, RotationReport)>> {
    let mut reports = Vec::new();
    for col in &COLUMNS {
        let mut report = RotationReport::default();
        let mut after = None;
        loop {
            let rows = page(conn, col, after, 500)?;
            let Some(last) = rows.last() else { break };
            after = Some(last.id);
            for SealedRow { id, sealed } in rows {
                if vault.is_current(&sealed) {
                    report.already_current += 1;
                    continue;
                }
                let context = (col.context)(id);
                let plain = vault.open(&sealed, &context).map_err(|e| {
                    anyhow::anyhow!(
                        "{} of {id}: {e} (is the old key in security.previous_master_keys?)",
                        col.name
                    )
                })?;
                let resealed = vault.seal(&plain, &context);
                if replace(conn, col, id, &sealed, &resealed)? {
                    report.rotated += 1;
                } else {
                    report.skipped_concurrent += 1;
                }
            }
        }
        reports.push((col.name, report));
    }
    Ok(reports)
}
