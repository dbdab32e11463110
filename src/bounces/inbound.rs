//! The inbound SMTP listener (`inbound.bind`): accepts mail only for the
//! feedback-loop address (`bounces.fbl_address`), `postmaster` at the bounce
//! domain (`bounces.domain`), and return paths `b+TOKEN@…` at the bounce
//! domain or at the return-path name of a sending domain whose record
//! checked `ok` (`return_paths`) whose token verifies and names a message
//! that exists ([`Known`]); 550 for any other recipient (never a relay).
//! The checks run cheapest first, so a recipient that is refused on its
//! local part costs no query at all. What arrives is parsed on the blocking
//! pool and recorded (`apply`); a report that names no message of ours is
//! accepted and dropped. A database failure answers 451 so the sender
//! retries. The `mailto:` form of an unsubscribe, `u+TOKEN@<bounce
//! domain>`, is taken when its token verifies and applied at DATA
//! (`crate::unsubscribe`, issue 26).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::known::Known;
use super::return_paths::ReturnPaths;
use super::token::VerpKeys;
use super::{apply, dsn};
use crate::config::Settings;
use crate::db::{self, PgPool};
use crate::smtp_server::{DataBudget, Envelope, Handler, Limits, Reply, Server};

/// Message existence answers the RCPT check remembers at most.
const KNOWN_ENTRIES: u64 = 10_000;

pub struct BounceHandler {
    pool: PgPool,
    keys: VerpKeys,
    domains: ReturnPaths,
    known: Known,
    fbl: String,
    hard_bounce_days: u32,
    unsubscribe: crate::unsubscribe::UnsubscribeKeys,
}

impl BounceHandler {
    pub fn new(settings: &Settings, pool: PgPool) -> anyhow::Result<Self> {
        Ok(BounceHandler {
            keys: VerpKeys::from_settings(settings)?,
            domains: ReturnPaths::new(settings, pool.clone()),
            known: Known::new(pool.clone(), KNOWN_ENTRIES),
            pool,
            fbl: settings.bounces.fbl_address.to_ascii_lowercase(),
            hard_bounce_days: settings.suppressions.hard_bounce_days,
            unsubscribe: crate::unsubscribe::UnsubscribeKeys::from_settings(settings)?,
        })
    }

    /// Whether a RCPT is taken: `Err` when the database cannot tell (a
    /// 451: the sender retries).
    async fn serves(&self, address: &str) -> Result<bool, String> {
        let a = address.trim().to_ascii_lowercase();
        if !self.fbl.is_empty() && a == self.fbl {
            return Ok(true);
        }
        let Some((local, domain)) = a.rsplit_once('@') else {
            return Ok(false);
        };
        if let Some(token) = self.unsubscribe_token(&a) {
            return Ok(self.unsubscribe.verify(token).is_some());
        }
        if local == "postmaster" {
            let bounce_domain = self.domains.default_domain();
            return Ok(!bounce_domain.is_empty() && domain == bounce_domain);
        }
        let Some(found) = self.keys.verify_address(&a) else {
            return Ok(false);
        };
        Ok(self.domains.serves(domain).await? && self.known.exists(found).await?)
    }

    /// The token of an unsubscribe address at the bounce domain.
    fn unsubscribe_token<'a>(&self, rcpt: &'a str) -> Option<&'a str> {
        crate::unsubscribe::mailto_token(rcpt, self.domains.default_domain())
    }

    /// Applies the unsubscribe addresses among `rcpt_to`; the others are
    /// returned (reports to process). `Err`: a 451.
    async fn unsubscribes(&self, rcpt_to: Vec<String>) -> Result<Vec<String>, Reply> {
        let mut rest = Vec::with_capacity(rcpt_to.len());
        for r in rcpt_to {
            let Some(token) = self.unsubscribe_token(&r) else {
                rest.push(r);
                continue;
            };
            match crate::unsubscribe::service::unsubscribe(
                &self.unsubscribe,
                &self.pool,
                token,
                "mailto",
            )
            .await
            {
                Ok(_) | Err(crate::error::AppError::NotFound) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "inbound unsubscribe failed");
                    return Err(Reply::new(451, "4.3.0 temporary failure, try again later"));
                }
            }
        }
        Ok(rest)
    }

    /// The pool reports are recorded with.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Message existence queries made by RCPT checks so far.
    pub fn lookups(&self) -> u64 {
        self.known.lookups()
    }

    /// Parses and records one message; the reply for the sender.
    pub fn process(&self, rcpt_to: &[String], message: &[u8]) -> Result<apply::Applied, Reply> {
        let Some(report) = dsn::parse(message) else {
            return Ok(apply::Applied::default());
        };
        let Some(found) = apply::find_target(&self.keys, rcpt_to, &report) else {
            tracing::debug!("inbound report names no message of ours; ignored");
            return Ok(apply::Applied::default());
        };
        let mut conn = self
            .pool
            .get()
            .map_err(|_| Reply::new(451, "4.3.0 temporary failure, try again later"))?;
        let applied = apply::record(&mut conn, found, &report, self.hard_bounce_days);
        let failed = applied.is_err();
        db::release(conn, failed);
        applied.map_err(|e| {
            tracing::warn!(error = %e, "recording an inbound report failed");
            Reply::new(451, "4.3.0 temporary failure, try again later")
        })
    }
}

#[async_trait]
impl Handler for Arc<BounceHandler> {
    async fn rcpt(&self, _env: &Envelope, to: &str) -> Reply {
        match self.serves(to).await {
            Ok(true) => Reply::new(250, "2.1.5 OK"),
            Ok(false) => Reply::new(550, "5.7.1 relaying denied: no such recipient here"),
            Err(e) => {
                tracing::warn!(error = %e, "inbound RCPT: return-path lookup failed");
                Reply::new(451, "4.3.0 temporary failure, try again later")
            }
        }
    }

    async fn data(&self, mut env: Envelope, message: Vec<u8>) -> Reply {
        env.rcpt_to = match self.unsubscribes(std::mem::take(&mut env.rcpt_to)).await {
            Ok(rest) => rest,
            Err(reply) => return reply,
        };
        if env.rcpt_to.is_empty() {
            return Reply::new(250, "2.0.0 unsubscribed");
        }
        let this = self.clone();
        let done = tokio::task::spawn_blocking(move || this.process(&env.rcpt_to, &message)).await;
        match done {
            Ok(Ok(_)) => Reply::new(250, "2.0.0 processed"),
            Ok(Err(reply)) => reply,
            Err(e) => {
                tracing::error!(error = %e, "processing an inbound report panicked");
                Reply::new(451, "4.3.0 temporary failure, try again later")
            }
        }
    }
}

/// Starts the listener on `inbound.bind`; `None` when it is empty. Its
/// per-tenant message limit counts on this process only ([`start_shared`]).
pub async fn start(settings: &Settings, pool: PgPool) -> anyhow::Result<Option<Server>> {
    start_shared(settings, pool, None).await
}

/// [`start`], with the per-tenant message limit counted across the nodes on
/// `rates` (`serve` and `worker` processes; issue 27).
pub async fn start_shared(
    settings: &Settings,
    pool: PgPool,
    rates: Option<crate::cluster::rate::Rates>,
) -> anyhow::Result<Option<Server>> {
    if settings.inbound.bind.is_empty() {
        return Ok(None);
    }
    let handler = Arc::new(BounceHandler::new(settings, pool)?);
    serve_shared(settings, handler, rates).await.map(Some)
}

/// The listener on `inbound.bind` with this handler (tests keep it to read
/// its counters) behind tenants' inbound routes (`crate::inbound::listener`).
pub async fn serve(settings: &Settings, handler: Arc<BounceHandler>) -> anyhow::Result<Server> {
    serve_shared(settings, handler, None).await
}

/// [`serve`], the per-tenant message limit counted on `rates` when given.
pub async fn serve_shared(
    settings: &Settings,
    handler: Arc<BounceHandler>,
    rates: Option<crate::cluster::rate::Rates>,
) -> anyhow::Result<Server> {
    let nameservers = crate::dns::parse_nameservers(&settings.dns.nameservers)
        .map_err(|e| anyhow::anyhow!("dns.nameservers: {e}"))?;
    let dns = crate::dns::Dns::new(&nameservers);
    let routes = Arc::new(crate::inbound::receive::Inbound::new(
        settings,
        handler.pool().clone(),
        &dns,
        rates,
    ));
    let listener = crate::inbound::listener::Listener::new(handler, routes);
    serve_with(settings, Arc::new(listener)).await
}

/// The listener on `inbound.bind` with any handler (the benchmark's
/// accept-and-drop handler runs on the same limits).
pub async fn serve_with(
    settings: &Settings,
    handler: Arc<dyn crate::smtp_server::Handler>,
) -> anyhow::Result<Server> {
    let inbound = &settings.inbound;
    let limits = Limits {
        hostname: if settings.bounces.domain.is_empty() {
            "postline".into()
        } else {
            settings.bounces.domain.clone()
        },
        max_connections: inbound.max_connections,
        max_connections_per_ip: inbound.max_connections_per_ip,
        max_message_bytes: inbound.max_message_bytes,
        max_recipients: inbound.max_recipients,
        command_timeout: Duration::from_secs(inbound.command_timeout_secs),
        data_timeout: Duration::from_secs(inbound.data_timeout_secs),
        data_budget: Some(DataBudget::new(
            inbound.max_inflight_bytes,
            inbound.max_message_bytes,
        )),
        ..Limits::default()
    };
    let server = Server::bind(&inbound.bind, limits, handler)
        .await
        .map_err(|e| anyhow::anyhow!("inbound.bind: cannot bind {}: {e}", inbound.bind))?;
    tracing::info!(addr = %server.addr(), "inbound SMTP listening (tenant routes, bounces, complaints)");
    Ok(server)
}
