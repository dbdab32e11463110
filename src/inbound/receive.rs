//! What happens to a message accepted for tenant routes: verdicts (SPF,
//! DKIM, DMARC), the rspamd score when configured, then on the blocking
//! pool one parse and one transaction per message that stores a row per
//! route (the raw message bound from the one buffer the session read) and
//! the `email.received` delivery of each `webhook` route. The message is
//! held once: `bytes::Bytes` shares it with rspamd's request body.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use uuid::Uuid;

use super::auth::Checker;
use super::model::{self, MessageRow, RouteRow};
use super::parse::{self, Parsed, Refused};
use super::rate::PerMinute;
use super::rspamd::{Meta, Rspamd, Spam};
use super::view::{self, ReceivedView};
use crate::config::Settings;
use crate::db::{self, PgPool};
use crate::domain::TenantId;
use crate::smtp_server::Reply;

/// Route lookups remembered at most (RCPT floods cost no query each).
const ROUTE_CACHE: u64 = 10_000;

pub struct Inbound {
    pub(super) pool: PgPool,
    checker: Checker,
    rspamd: Option<Rspamd>,
    pub(super) rate: PerMinute,
    routes: moka::future::Cache<(String, String), Option<RouteRow>>,
    inline_max: usize,
    max_attachments: usize,
}

/// One accepted recipient: the address as given, its route and `+hash`.
#[derive(Clone, Debug)]
pub struct Routed {
    pub address: String,
    pub route: RouteRow,
    pub hash: Option<String>,
}

/// The session facts a message is judged by.
pub struct Session<'a> {
    pub peer: Option<IpAddr>,
    pub helo: &'a str,
    pub mail_from: &'a str,
}

fn temporary() -> Reply {
    Reply::new(451, "4.3.0 temporary failure, try again later")
}

impl Inbound {
    /// `rates`: the node's cluster-wide rates, when it has budgets (the
    /// per-tenant limit is then shared by every node).
    pub fn new(
        settings: &Settings,
        pool: PgPool,
        dns: &crate::dns::Dns,
        rates: Option<crate::cluster::rate::Rates>,
    ) -> Inbound {
        let i = &settings.inbound;
        let host = if i.mx_host.is_empty() {
            settings.bounces.domain.clone()
        } else {
            i.mx_host.clone()
        };
        Inbound {
            pool,
            checker: Checker::new(dns, &host),
            rspamd: Rspamd::new(&i.spam.rspamd_url, Duration::from_millis(i.spam.timeout_ms)),
            rate: PerMinute::shared(i.messages_per_tenant_per_minute, rates),
            routes: moka::future::Cache::builder()
                .max_capacity(ROUTE_CACHE)
                .time_to_live(Duration::from_secs(settings.domains.cache_secs.max(1)))
                .build(),
            inline_max: i.inline_attachment_bytes,
            max_attachments: i.max_attachments,
        }
    }

    /// The route an address reaches, if any (`Err`: the database cannot tell).
    pub async fn route(&self, address: &str) -> Result<Option<Routed>, String> {
        let Some((local, hash, domain)) = super::split_address(address) else {
            return Ok(None);
        };
        let key = (local.clone(), domain.clone());
        let pool = self.pool.clone();
        let found = self
            .routes
            .try_get_with(key, async move {
                db::run(&pool, move |conn| {
                    Ok(model::route_for(conn, &local, &domain)?)
                })
                .await
                .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(found.map(|route| Routed {
            address: address.trim().to_string(),
            route,
            hash,
        }))
    }

    /// Verdicts, spam score, then parse and store. The reply for DATA.
    pub async fn receive(&self, s: Session<'_>, routed: Vec<Routed>, raw: bytes::Bytes) -> Reply {
        let mut tenants: Vec<Uuid> = routed.iter().map(|r| r.route.tenant_id).collect();
        tenants.sort();
        tenants.dedup();
        let mut admitted = true;
        for t in &tenants {
            if !self.rate.take(*t).await {
                admitted = false;
                break;
            }
        }
        if !admitted {
            return Reply::new(
                451,
                "4.7.1 too many messages for this recipient, try again later",
            );
        }
        let auth = self.checker.check(&raw, s.peer, s.helo, s.mail_from).await;
        let spam = match &self.rspamd {
            Some(r) => {
                let rcpt: Vec<String> = routed.iter().map(|r| r.address.clone()).collect();
                let meta = Meta {
                    ip: s.peer,
                    helo: s.helo,
                    from: s.mail_from,
                    rcpt: &rcpt,
                };
                r.check(raw.clone(), meta).await
            }
            None => None,
        };
        let job = Job {
            mail_from: s.mail_from.to_string(),
            routed,
            auth: serde_json::to_value(&auth).unwrap_or_default(),
            spam,
            inline_max: self.inline_max,
            max_attachments: self.max_attachments,
        };
        let pool = self.pool.clone();
        match tokio::task::spawn_blocking(move || job.store(&pool, &raw)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "storing a received message panicked");
                temporary()
            }
        }
    }
}

struct Job {
    mail_from: String,
    routed: Vec<Routed>,
    auth: serde_json::Value,
    spam: Option<Spam>,
    inline_max: usize,
    max_attachments: usize,
}

impl Job {
    fn store(self, pool: &PgPool, raw: &[u8]) -> Reply {
        let parsed = match parse::parse(raw, self.max_attachments) {
            Ok(p) => p,
            Err(Refused::Unparseable) => return Reply::new(554, "5.6.0 message not parseable"),
            Err(Refused::TooManyAttachments(n)) => {
                return Reply::new(
                    552,
                    format!(
                        "5.3.4 too many attachments ({n}, at most {})",
                        self.max_attachments
                    ),
                )
            }
        };
        // One row per route (the first recipient that reached it).
        let mut seen: HashMap<Uuid, ()> = HashMap::new();
        let groups: Vec<&Routed> = self
            .routed
            .iter()
            .filter(|r| seen.insert(r.route.id, ()).is_none())
            .collect();
        let contents = if groups.iter().any(|g| g.route.action == "webhook") {
            parse::attachment_contents(raw, self.inline_max)
        } else {
            Vec::new()
        };
        let Ok(mut conn) = pool.get() else {
            return temporary();
        };
        let done = conn.transaction(|conn| {
            for g in &groups {
                self.store_one(conn, g, &parsed, &contents, raw)?;
            }
            Ok::<_, diesel::result::Error>(())
        });
        let failed = done.is_err();
        db::release(conn, failed);
        match done {
            Ok(()) => Reply::new(250, "2.0.0 received"),
            Err(e) => {
                tracing::warn!(error = %e, "storing a received message failed");
                temporary()
            }
        }
    }

    fn store_one(
        &self,
        conn: &mut PgConnection,
        g: &Routed,
        parsed: &Parsed,
        contents: &[Option<Vec<u8>>],
        raw: &[u8],
    ) -> QueryResult<()> {
        let tenant = TenantId(g.route.tenant_id);
        let in_reply_to = model::sent_by_message_id(conn, tenant, &parsed.references)?;
        let webhook = (g.route.action == "webhook").then_some(g.route.webhook_id);
        let status = match webhook {
            None => "held",
            Some(None) => "failed",
            Some(Some(_)) => "pending",
        };
        let row = MessageRow {
            tenant_id: tenant.0,
            id: Uuid::new_v4(),
            route_id: Some(g.route.id),
            created_at: chrono::Utc::now(),
            mail_from: self.mail_from.to_ascii_lowercase(),
            recipient: g.address.to_ascii_lowercase(),
            from_addr: parsed.from.as_ref().map(|m| m.email.clone()),
            to_addrs: parsed.to.iter().map(|m| m.email.clone()).collect(),
            cc_addrs: parsed.cc.iter().map(|m| m.email.clone()).collect(),
            subject: parsed.subject.clone(),
            message_id: parsed.message_id.clone(),
            in_reply_to_email_id: in_reply_to,
            mailbox_hash: g.hash.clone(),
            content: serde_json::to_value(parsed).ok(),
            size_bytes: i32::try_from(raw.len()).unwrap_or(i32::MAX),
            auth: self.auth.clone(),
            spam: self
                .spam
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok()),
            status: status.into(),
            content_purged_at: None,
        };
        model::insert_message(conn, &row, raw)?;
        if let Some(Some(endpoint)) = webhook {
            let id = row.id;
            let view = ReceivedView::new(row, None);
            let payload = if g.route.format == "postmark" {
                view::postmark_payload(&view, parsed, contents)
            } else {
                view::webhook_payload(&view, contents)
            };
            enqueue(conn, tenant, endpoint, id, &payload)?;
        }
        Ok(())
    }
}

/// One `email.received` delivery to the route's endpoint, through the
/// webhook outbox (the dispatcher signs, retries and shares it fairly).
fn enqueue(
    conn: &mut PgConnection,
    tenant: TenantId,
    endpoint: Uuid,
    message: Uuid,
    payload: &serde_json::Value,
) -> QueryResult<usize> {
    use crate::db::schema::{webhook_deliveries as d, webhooks as w};
    // The endpoint must still be the tenant's and enabled.
    let ok: Option<Uuid> = w::table
        .filter(
            w::id
                .eq(endpoint)
                .and(w::tenant_id.eq(tenant.0))
                .and(w::enabled.eq(true)),
        )
        .select(w::id)
        .first(conn)
        .optional()?;
    if ok.is_none() {
        return Ok(0);
    }
    diesel::insert_into(d::table)
        .values((
            d::id.eq(Uuid::new_v4()),
            d::webhook_id.eq(endpoint),
            d::tenant_id.eq(tenant.0),
            d::email_id.eq(Some(message)),
            d::event_type.eq(super::EVENT),
            d::payload.eq(payload),
        ))
        .execute(conn)
}

pub type Shared = Arc<Inbound>;
