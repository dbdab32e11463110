//! Domain business rules: create (with DKIM keys), read, delete, verify by
//! DNS, rotate keys, and the periodic recheck. Services take the resolved
//! tenant and actor and return domain results; every change is audited
//! (`domain.created`, `domain.verified` (the recheck's as `system`),
//! `domain.dkim_rotated`, `domain.deleted`) in its transaction.

use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use uuid::Uuid;

use super::checks;
use super::input::CreateDomain;
use super::keys::{self, Algorithm};
use super::model::{self, DkimKeyRow, DomainRef, DomainRow};
use super::sending::suffixes;
use super::transition::{apply, secs};
use super::view::DomainView;
use super::{events, Domains};
use crate::audit::{self, Actor};
use crate::crypto::Vault;
use crate::db::pagination::{Page, PageRequest};
use crate::db::{self, PgPool};
use crate::dns::Dns;
use crate::domain::TenantId;
use crate::error::{AppError, AppResult};

/// Domains per tenant.
pub const MAX_DOMAINS: i64 = 100;
/// DKIM keys per domain (active + pending + retiring); a rotation beyond it
/// waits for retiring keys to expire.
pub const MAX_KEYS: usize = 6;

fn taken(name: &str) -> AppError {
    AppError::Conflict {
        code: "domain_taken",
        detail: format!("{name} (or a parent of it) is verified by another tenant."),
    }
}

/// True when another tenant has `name` or one of its parents verified.
fn taken_by_other(conn: &mut PgConnection, tenant: TenantId, name: &str) -> QueryResult<bool> {
    Ok(model::holders(conn, &suffixes(name))?
        .iter()
        .any(|(t, _, status)| *t != tenant.0 && status == "verified"))
}

async fn generate(
    vault: &Vault,
    tenant: TenantId,
    domain: Uuid,
    algs: Vec<Algorithm>,
) -> AppResult<Vec<DkimKeyRow>> {
    let vault = vault.clone();
    tokio::task::spawn_blocking(move || {
        algs.into_iter()
            .map(|a| keys::new_key_row(&vault, tenant.0, domain, a))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    .map_err(|e| AppError::internal("key generation task", e))?
    .map_err(|e| AppError::internal("DKIM key generation", format!("{e:#}")))
}

pub async fn create(
    d: &Domains,
    actor: &Actor,
    tenant: TenantId,
    input: CreateDomain,
) -> AppResult<DomainView> {
    let (name, algs) = input.parse()?;
    let now = Utc::now();
    let row = DomainRow {
        tenant_id: tenant.0,
        id: Uuid::new_v4(),
        name,
        status: "pending".into(),
        created_at: now,
        verified_at: None,
        last_checked_at: None,
        failing_since: None,
        next_check_at: now,
        checks: serde_json::json!({}),
    };
    let new_keys = generate(&d.vault, tenant, row.id, algs).await?;
    let bounce = d.bounce_domain.clone();
    let tracking = d.tracking_domain.clone();
    let actor = actor.clone();
    let view = db::run(&d.pool, move |conn| {
        conn.transaction(|conn| {
            if model::count(conn, tenant)? >= MAX_DOMAINS {
                return Err(AppError::conflict(format!(
                    "A tenant can have at most {MAX_DOMAINS} domains."
                )));
            }
            if taken_by_other(conn, tenant, &row.name)? {
                return Err(taken(&row.name));
            }
            model::insert(conn, &row, &new_keys).map_err(|e| match e {
                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                    AppError::conflict("This tenant already has this domain.")
                }
                other => other.into(),
            })?;
            let changes = serde_json::json!({"name": row.name, "status": row.status});
            audit::record(
                conn,
                &actor,
                "domain.created",
                Some(tenant.0),
                row.id,
                changes,
            )?;
            Ok(DomainView::new(row, &new_keys, &bounce, &tracking))
        })
    })
    .await?;
    d.rule.invalidate();
    tracing::info!(tenant_id = %tenant, domain = %view.name, "domain created");
    Ok(view)
}

pub async fn list(d: &Domains, tenant: TenantId, page: PageRequest) -> AppResult<Page<DomainView>> {
    let (rows, keys, routed) = db::run(&d.pool, move |conn| {
        let rows = model::list(conn, tenant, page)?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let routed = crate::inbound::model::route_domains(conn, tenant)?;
        Ok((rows, model::keys_of(conn, tenant, &ids)?, routed))
    })
    .await?;
    Ok(Page::from_rows(rows, page, DomainRow::position, |r| {
        let own: Vec<DkimKeyRow> = keys
            .iter()
            .filter(|k| k.domain_id == r.id)
            .cloned()
            .collect();
        let mut view = DomainView::new(r, &own, &d.bounce_domain, &d.tracking_domain);
        crate::inbound::view::add_mx_records(&mut view, &routed, &d.inbound_mx);
        view
    }))
}

/// The domain and its keys; a domain without keys (adopted from a tenant's
/// legacy `domain`) gets its default RSA key now.
async fn load(
    d: &Domains,
    tenant: TenantId,
    r: DomainRef,
) -> AppResult<(DomainRow, Vec<DkimKeyRow>)> {
    let (row, keys) = db::run(&d.pool, move |conn| {
        let row = model::find(conn, tenant, &r, false)?.ok_or(AppError::NotFound)?;
        let keys = model::keys_of(conn, tenant, &[row.id])?;
        Ok((row, keys))
    })
    .await?;
    if !keys.is_empty() {
        return Ok((row, keys));
    }
    let fresh = generate(&d.vault, tenant, row.id, vec![Algorithm::RsaSha256]).await?;
    let id = row.id;
    let keys = db::run(&d.pool, move |conn| {
        conn.transaction(|conn| {
            if model::keys_of(conn, tenant, &[id])?.is_empty() {
                model::insert_keys(conn, &fresh)?;
            }
            Ok(model::keys_of(conn, tenant, &[id])?)
        })
    })
    .await?;
    Ok((row, keys))
}

pub async fn get(d: &Domains, tenant: TenantId, r: DomainRef) -> AppResult<DomainView> {
    let (row, keys) = load(d, tenant, r).await?;
    let routed = db::run(&d.pool, move |conn| {
        Ok(crate::inbound::model::route_domains(conn, tenant)?)
    })
    .await?;
    let mut view = DomainView::new(row, &keys, &d.bounce_domain, &d.tracking_domain);
    crate::inbound::view::add_mx_records(&mut view, &routed, &d.inbound_mx);
    Ok(view)
}

pub async fn delete(d: &Domains, actor: &Actor, tenant: TenantId, r: DomainRef) -> AppResult<()> {
    let actor = actor.clone();
    let removed = db::run(&d.pool, move |conn| {
        conn.transaction(|conn| {
            let Some(row) = model::find(conn, tenant, &r, true)? else {
                return Ok(0);
            };
            let n = model::delete(conn, tenant, row.id)?;
            if n > 0 {
                let changes = serde_json::json!({"name": row.name, "status": row.status});
                audit::record(
                    conn,
                    &actor,
                    "domain.deleted",
                    Some(tenant.0),
                    row.id,
                    changes,
                )?;
            }
            Ok(n)
        })
    })
    .await?;
    if removed == 0 {
        return Err(AppError::NotFound);
    }
    d.rule.invalidate();
    Ok(())
}

/// `POST …/verify`: checks DNS now. 409 `domain_taken` when every record is
/// right but another tenant verified the name (or a parent) first.
pub async fn verify(
    d: &Domains,
    actor: &Actor,
    tenant: TenantId,
    r: DomainRef,
) -> AppResult<DomainView> {
    let (row, keys) = load(d, tenant, r).await?;
    let outcome = check_and_apply(d, actor, row, keys).await?;
    d.rule.invalidate();
    if outcome.taken {
        return Err(taken(&outcome.domain.name));
    }
    Ok(DomainView::new(
        outcome.domain,
        &outcome.keys,
        &d.bounce_domain,
        &d.tracking_domain,
    ))
}

/// `POST …/dkim/rotate`: a new key per algorithm in use, `pending` until its
/// record is seen; then it signs and the old one is `retiring`.
pub async fn rotate(
    d: &Domains,
    actor: &Actor,
    tenant: TenantId,
    r: DomainRef,
) -> AppResult<DomainView> {
    let (row, current) = load(d, tenant, r).await?;
    if current.iter().any(|k| k.status == "pending") {
        return Err(AppError::conflict(
            "A rotation is already pending: publish its record and verify first.",
        ));
    }
    let mut algs: Vec<Algorithm> = current
        .iter()
        .filter(|k| k.status == "active")
        .filter_map(|k| Algorithm::parse(&k.algorithm))
        .collect();
    algs.dedup();
    if algs.is_empty() {
        return Err(AppError::conflict(
            "The domain has no active key yet: verify it before rotating.",
        ));
    }
    if current.len() + algs.len() > MAX_KEYS {
        return Err(AppError::conflict(format!(
            "At most {MAX_KEYS} DKIM keys per domain: wait until retiring keys expire."
        )));
    }
    let fresh = generate(&d.vault, tenant, row.id, algs).await?;
    let (id, name, actor) = (row.id, row.name.clone(), actor.clone());
    let keys = db::run(&d.pool, move |conn| {
        conn.transaction(|conn| {
            model::insert_keys(conn, &fresh)?;
            let selectors: Vec<&str> = fresh.iter().map(|k| k.selector.as_str()).collect();
            let changes = serde_json::json!({"name": name, "pending_selectors": selectors});
            audit::record(
                conn,
                &actor,
                "domain.dkim_rotated",
                Some(tenant.0),
                id,
                changes,
            )?;
            Ok(model::keys_of(conn, tenant, &[id])?)
        })
    })
    .await?;
    Ok(DomainView::new(
        row,
        &keys,
        &d.bounce_domain,
        &d.tracking_domain,
    ))
}

struct Outcome {
    domain: DomainRow,
    keys: Vec<DkimKeyRow>,
    taken: bool,
}

/// Looks the records up, then applies the result in one transaction on the
/// locked row: key activation and retirement, status, webhook event, and
/// the audit entry when the domain becomes verified.
async fn check_and_apply(
    d: &Domains,
    actor: &Actor,
    row: DomainRow,
    keys: Vec<DkimKeyRow>,
) -> AppResult<Outcome> {
    let list = checks::records(&row, &keys, &d.bounce_domain, &d.tracking_domain);
    let statuses = checks::check(&d.dns, &keys, &list)
        .await
        .map_err(|e| AppError::Unavailable(format!("DNS lookup failed: {e}")))?;
    let settings = d.settings.clone();
    let tenant = TenantId(row.tenant_id);
    let actor = actor.clone();
    db::run(&d.pool, move |conn| {
        conn.transaction(|conn| {
            let Some(mut domain) = model::find(conn, tenant, &DomainRef::Id(row.id), true)? else {
                return Err(AppError::NotFound);
            };
            let before = domain.status.clone();
            let mut keys = model::keys_of(conn, tenant, &[domain.id])?;
            domain.checks = serde_json::Value::Object(statuses);
            let change = apply(&mut domain, &mut keys, &settings, Utc::now(), |name| {
                taken_by_other(conn, tenant, name)
            })?;
            for k in &change.changed {
                model::save_key(conn, k)?;
            }
            for k in &change.deleted {
                model::delete_key(conn, k)?;
            }
            model::save_check(conn, &domain).map_err(|e| match e {
                // Another tenant verified the same name a moment ago.
                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => taken(&domain.name),
                other => other.into(),
            })?;
            if let Some(kind) = change.event {
                events::enqueue(conn, kind, &domain)?;
                if kind == "domain.verified" {
                    let changes = serde_json::json!({"name": domain.name, "status": {"from": before, "to": domain.status}});
                    audit::record(conn, &actor, kind, Some(tenant.0), domain.id, changes)?;
                }
                tracing::info!(tenant_id = %tenant, domain = %domain.name, event = kind, "domain status changed");
            }
            keys.retain(|k| !change.deleted.iter().any(|x| x.id == k.id));
            Ok(Outcome { domain, keys, taken: change.taken })
        })
    })
    .await
}

/// Rechecks every domain due (`next_check_at` passed), a batch at a time;
/// returns how many were checked. A DNS failure leaves a domain as it was.
pub async fn recheck_due(d: &Domains) -> AppResult<usize> {
    let mut checked = 0;
    loop {
        let next = Utc::now() + secs(d.settings.recheck_secs);
        let due = db::run(&d.pool, move |conn| Ok(model::claim_due(conn, 20, next)?)).await?;
        if due.is_empty() {
            return Ok(checked);
        }
        for row in due {
            let (tenant, id, name) = (TenantId(row.tenant_id), row.id, row.name.clone());
            let result = match load(d, tenant, DomainRef::Id(id)).await {
                Ok((row, keys)) => check_and_apply(d, &Actor::system(), row, keys)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => checked += 1,
                Err(AppError::NotFound) => {}
                Err(e) => {
                    tracing::warn!(tenant_id = %tenant, domain = %name, error = %e, "domain recheck skipped")
                }
            }
        }
        d.rule.invalidate();
    }
}

/// The periodic recheck, started next to the worker (`serve` and `worker`
/// roles): every few seconds it checks the domains that are due.
pub fn spawn_recheck(d: Domains) -> tokio::task::JoinHandle<()> {
    let period = Duration::from_secs(d.settings.recheck_secs.clamp(1, 30));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = recheck_due(&d).await {
                tracing::debug!(error = %e, "domain recheck failed; retrying");
            }
        }
    })
}

/// Everything the domain services need, built once per process.
pub fn build(
    settings: &crate::config::Settings,
    pool: PgPool,
    vault: Vault,
) -> anyhow::Result<Domains> {
    let servers = crate::dns::parse_nameservers(&settings.dns.nameservers)
        .map_err(|e| anyhow::anyhow!("dns.nameservers: {e}"))?;
    let ttl = Duration::from_secs(settings.domains.cache_secs);
    Ok(Domains {
        rule: super::sending::SendingRule::new(
            pool.clone(),
            settings.domains.require_verified,
            ttl,
        ),
        dns: Dns::new(&servers),
        settings: std::sync::Arc::new(settings.domains.clone()),
        bounce_domain: settings.bounces.domain.to_ascii_lowercase().into(),
        inbound_mx: if settings.inbound.mx_host.is_empty() {
            settings.bounces.domain.to_ascii_lowercase().into()
        } else {
            settings.inbound.mx_host.to_ascii_lowercase().into()
        },
        tracking_domain: settings.tracking.domain.to_ascii_lowercase().into(),
        pool,
        vault,
    })
}
