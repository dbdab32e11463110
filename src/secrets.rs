//! Master key rotation: re-encrypt every stored secret (SMTP passwords,
//! webhook secrets, DKIM private keys, OAuth signing keys, console TOTP
//! secrets) under the current
//! master key. Nodes run with the new key as `security.master_key` and the old
//! one in `security.previous_master_keys`, so both keep working while this
//! runs; afterwards the old key can be removed (docs/OPERATIONS.md).

use uuid::Uuid;

use crate::crypto::Vault;
use crate::oauth::model as oauth_db;
use crate::oauth::signing::private_key_context;
use crate::tenants::input::smtp_password_context;
use crate::tenants::model as tenants_db;
use crate::webhooks::model as webhooks_db;
use crate::webhooks::signing::secret_context;
use diesel::PgConnection;

/// What a rotation did, per kind of secret.
#[derive(Debug, Default)]
pub struct RotationReport {
    pub rotated: usize,
    pub already_current: usize,
    /// Changed by someone else during the run (they are sealed with the new
    /// key already, since every node seals with the master key).
    pub skipped_concurrent: usize,
}

/// A page of `(row id, sealed value)` after a given id.
type PageFn = fn(&mut PgConnection, Option<Uuid>, i64) -> diesel::QueryResult<Vec<(Uuid, Vec<u8>)>>;
/// Swaps `old` for `new` on one row; false when the row changed meanwhile.
type ReplaceFn = fn(&mut PgConnection, Uuid, &[u8], &[u8]) -> diesel::QueryResult<bool>;

/// One kind of sealed column: how to page through it, its AEAD context, and
/// how to swap a value.
struct SealedColumn {
    name: &'static str,
    page: PageFn,
    context: fn(Uuid) -> String,
    replace: ReplaceFn,
}

fn columns() -> Vec<SealedColumn> {
    vec![
        SealedColumn {
            name: "tenants.smtp_password",
            page: tenants_db::sealed_passwords_after,
            context: smtp_password_context,
            replace: tenants_db::replace_sealed_password,
        },
        SealedColumn {
            name: "webhooks.secret",
            page: webhooks_db::sealed_secrets_after,
            context: secret_context,
            replace: webhooks_db::replace_sealed_secret,
        },
        SealedColumn {
            name: "domain_dkim_keys.private_key_enc",
            page: crate::domains::model::sealed_keys_after,
            context: crate::domains::keys::private_key_context,
            replace: crate::domains::model::replace_sealed_key,
        },
        SealedColumn {
            name: "oauth_signing_keys.private_key",
            page: oauth_db::sealed_keys_after,
            context: private_key_context,
            replace: oauth_db::replace_sealed_key,
        },
        SealedColumn {
            name: "console_users.totp_secret_enc",
            page: crate::console::totp_model::sealed_secrets_after,
            context: crate::console::second_factor::secret_context,
            replace: crate::console::totp_model::replace_sealed_secret,
        },
    ]
}

/// Re-encrypts every sealed value not yet under the vault's primary key.
/// Fails (without partial damage: each value is swapped atomically) on a
/// value no configured key can open.
pub fn rotate(
    conn: &mut PgConnection,
    vault: &Vault,
) -> anyhow::Result<Vec<(&'static str, RotationReport)>> {
    let mut reports = Vec::new();
    for col in columns() {
        let mut report = RotationReport::default();
        let mut after = None;
        loop {
            let page = (col.page)(conn, after, 500)?;
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            for (id, sealed) in page {
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
                if (col.replace)(conn, id, &sealed, &resealed)? {
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
