//! What the worker needs of each tenant of a claim: its relay (the SMTP
//! override, decrypted), its delivery pace and its egress pool per stream.
//! Loaded once per claim (one query for the claim's tenants, none per
//! message).

use std::collections::HashMap;

use uuid::Uuid;

use super::Ctx;
use crate::config::{Secret, TlsMode};
use crate::crypto::Vault;
use crate::db;
use crate::delivery::pools::TenantPools;
use crate::delivery::RelayConfig;
use crate::tenants::input::smtp_password_context;
use crate::tenants::model::{self as tenants_db, TenantRow};

#[derive(Clone)]
pub struct TenantDelivery {
    /// The SMTP override (`None`: the default transport); `Err` when its
    /// password cannot be decrypted or the tenant cannot be read.
    pub relay: Result<Option<RelayConfig>, String>,
    pub per_second: Option<i32>,
    /// The egress pool of each stream (issue 26).
    pub pools: TenantPools,
}

/// The tenants' delivery settings; an unreadable tenant defers its mail
/// rather than silently using another relay.
pub async fn load(ctx: &Ctx, tenants: Vec<Uuid>) -> HashMap<Uuid, TenantDelivery> {
    let mut ids = tenants;
    ids.sort();
    ids.dedup();
    let wanted = ids.clone();
    let fetched = db::run(&ctx.pool, move |conn| {
        Ok(tenants_db::find_many(conn, &wanted)?)
    })
    .await;
    match fetched {
        Ok(rows) => rows
            .into_iter()
            .map(|t| {
                let d = TenantDelivery {
                    relay: relay_of(&ctx.vault, &t),
                    per_second: t.emails_per_second,
                    pools: TenantPools::from_json(&t.pools),
                };
                (t.id, d)
            })
            .collect(),
        Err(e) => {
            let unavailable = TenantDelivery {
                relay: Err(format!("tenant settings unavailable: {e}")),
                per_second: None,
                pools: TenantPools::default(),
            };
            ids.into_iter().map(|t| (t, unavailable.clone())).collect()
        }
    }
}

fn relay_of(vault: &Vault, t: &TenantRow) -> Result<Option<RelayConfig>, String> {
    let Some(host) = t.smtp_host.clone() else {
        return Ok(None);
    };
    let password = match &t.smtp_password_enc {
        None => None,
        Some(sealed) => {
            let plain = vault
                .open(sealed, &smtp_password_context(t.id))
                .map_err(|e| format!("tenant SMTP password cannot be decrypted: {e}"))?;
            Some(Secret::new(String::from_utf8_lossy(&plain).into_owned()))
        }
    };
    Ok(Some(RelayConfig {
        host,
        port: t
            .smtp_port
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(587),
        tls: t
            .smtp_tls
            .as_deref()
            .and_then(TlsMode::parse)
            .unwrap_or(TlsMode::Starttls),
        username: t.smtp_username.clone(),
        password,
    }))
}
