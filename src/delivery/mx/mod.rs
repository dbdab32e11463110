//! Direct delivery (issue 16, `delivery.mode = "mx"`): the recipients of a
//! message are grouped by domain, and each domain's envelopes (one per
//! recipient with VERP, else one) go as transactions, in order on one
//! session where it lasts, to its MX hosts ([`resolve`]), tried in
//! preference order until one takes the connection. Sessions are shaped per
//! destination site ([`shaping`]) and reused up to the site's messages
//! (transactions) per connection; the site's rate counts a message's part
//! at the site once. Each recipient's reply is its own outcome
//! (`Outcome::PerRecipient`), so a retry goes only to the domains that
//! deferred. Addresses the destination guard refuses are skipped and at
//! most `max_addresses` are dialled ([`reach`]); the attempt is cut off after
//! `delivery.attempt_timeout_secs` ([`super::run`]).

mod connect;
pub mod downs;
mod gate;
pub mod metrics;
mod outcome;
mod pool;
mod reach;
pub mod resolve;
pub mod settings;
pub mod shaping;
pub mod shared;
pub mod slowdowns;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lettre::transport::smtp::extension::ClientId;

use self::connect::{Dialer, Sources};
use self::outcome::{domain_of, slowed};
use self::pool::SitePool;
use self::reach::{Reached, Walk};
use self::resolve::{Resolver, Route};
use self::shaping::{Idle, Site, Sites};
use super::run::{self, Connections as _};
use super::session::Parsed;
use super::{Envelope, Fate, Outcome, OutgoingMessage, RcptResult, SmtpOptions, Transport};
use crate::config::Settings;
use crate::delivery::pools::DEFAULT_POOL;
use crate::dns::Dns;
use crate::net_guard::Guard;

pub use settings::{IpFamily, MxSettings, MxTls, SiteRule};
pub use shared::SharedSites;

/// The direct-delivery transport of a node.
pub struct MxTransport {
    resolver: Resolver,
    sites: Sites,
    /// One per egress pool (`default` and every `[[delivery.pools]]` entry
    /// without a relay): its source addresses and EHLO name.
    dialers: HashMap<String, Dialer>,
    smtp: SmtpOptions,
    max_wait: Duration,
    down_for: Duration,
    /// `delivery.mx.allow_private_destinations`.
    guard: Guard,
    max_addresses: usize,
    /// When idle sessions of every site were last checked for expiry.
    swept: std::sync::Mutex<Instant>,
    /// Site limits shared by every node (issue 27); `None`: per node.
    shared: Option<SharedSites>,
}

/// What one domain's part of a message came to.
enum Part {
    Done(Vec<RcptResult>),
    /// Not attempted: the site had no connection or rate slot within
    /// `max_wait`; free again in about this long.
    Busy(Duration),
}

impl MxTransport {
    pub fn new(settings: &Settings, smtp: SmtpOptions) -> Self {
        let mx = &settings.delivery.mx;
        let nameservers =
            crate::dns::parse_nameservers(&settings.dns.nameservers).unwrap_or_default();
        let hello = |name: &str| {
            if name.is_empty() {
                ClientId::default()
            } else {
                ClientId::Domain(name.to_string())
            }
        };
        let dialer = |pool: &str, name: &str, sources: Vec<std::net::IpAddr>, strict| Dialer {
            pool: pool.into(),
            port: mx.port,
            hello: hello(name),
            tls: mx.tls,
            sources: Sources::new(&sources, strict),
            connect_timeout: smtp.connect_timeout,
            command_timeout: smtp.command_timeout,
        };
        let default_sources = mx.source_v4().into_iter().chain(mx.source_v6()).collect();
        let mut dialers = HashMap::new();
        dialers.insert(
            DEFAULT_POOL.to_string(),
            dialer(DEFAULT_POOL, &mx.ehlo_name, default_sources, false),
        );
        for p in settings.delivery.pools.iter().filter(|p| p.relay.is_none()) {
            dialers.insert(
                p.name.clone(),
                dialer(&p.name, p.ehlo_name.trim(), p.sources(), true),
            );
        }
        MxTransport {
            resolver: Resolver::new(
                Dns::new(&nameservers),
                mx.ip_family,
                mx.cache_entries,
                Duration::from_secs(mx.cache_max_ttl_secs),
            ),
            sites: Sites::new(mx),
            dialers,
            smtp,
            max_wait: Duration::from_millis(mx.max_wait_ms),
            down_for: Duration::from_secs(mx.down_secs),
            guard: Guard::new(mx.allow_private_destinations),
            max_addresses: mx.max_addresses.max(1),
            swept: std::sync::Mutex::new(Instant::now()),
            shared: None,
        }
    }

    /// Holds the sites' connections and rates across the cluster.
    pub fn with_shared(mut self, shared: Option<SharedSites>) -> Self {
        if shared.is_some() {
            // An idle session holds one of the site's slots that another
            // node may be waiting for: kept briefly only.
            self.smtp.idle_timeout = self.smtp.idle_timeout.min(shared::IDLE);
        }
        self.shared = shared;
        self
    }

    /// With shared limits: closes idle sessions every second even when
    /// this node sends nothing more (their slots go back to the lease, and
    /// from there to the cluster). Ends with the transport.
    pub fn spawn_sweeper(self: &std::sync::Arc<Self>) {
        if self.shared.is_none() {
            return;
        }
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                match weak.upgrade() {
                    Some(t) => t.sweep_now(),
                    None => break,
                }
            }
        });
    }

    /// At most every 5 s: closes sessions idle past `idle_timeout` in every
    /// site (a site checks its own at each checkout, but one no longer sent
    /// to would keep them open until the remote end hangs up).
    fn sweep(&self) {
        {
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            if swept.elapsed() < Duration::from_secs(5) {
                return;
            }
            *swept = Instant::now();
        }
        self.sweep_now();
    }

    fn sweep_now(&self) {
        for idle in self.sites.take_expired(self.smtp.idle_timeout) {
            // The site's slot is freed once the session is closed.
            let Idle { conn, slot, .. } = idle;
            tokio::spawn(async move {
                conn.close().await;
                drop(slot);
            });
        }
    }

    /// Sites tracked now (tests check the bound).
    pub fn sites(&self) -> usize {
        self.sites.len()
    }

    /// The envelopes of a message restricted to one domain's recipients.
    async fn deliver_domain(
        &self,
        dialer: &Dialer,
        msg: &OutgoingMessage,
        domain: &str,
        envs: Vec<Envelope>,
    ) -> Part {
        let all = |fate: Fate, response: &str| {
            Part::Done(
                envs.iter()
                    .flat_map(|e| &e.recipients)
                    .map(|r| RcptResult {
                        recipient: r.clone(),
                        fate,
                        response: response.to_string(),
                    })
                    .collect(),
            )
        };
        let hosts = match self.resolver.route(domain).await.as_deref() {
            Err(e) => {
                tracing::warn!(email_id = %msg.email_id, %domain, error = %e, "MX lookup failed");
                return all(Fate::Deferred, "DNS lookup of the recipient domain failed");
            }
            Ok(Route::NullMx) => {
                return all(
                    Fate::Bounced,
                    "556 5.1.10 recipient domain does not accept mail (null MX)",
                )
            }
            Ok(Route::NoHost) => {
                return all(
                    Fate::Bounced,
                    "550 5.1.2 recipient domain has no mail host (no MX or address)",
                )
            }
            Ok(Route::Hosts(hosts)) => hosts.clone(),
        };
        let site = self.sites.site_for(&dialer.pool, &hosts);
        let down = match &self.shared {
            Some(shared) => shared.down(&site),
            None => site.is_down(),
        };
        if down {
            metrics::deferred(&site.pool, &site.label);
            return all(
                Fate::Deferred,
                "mail servers of the recipient domain unreachable (will retry)",
            );
        }
        let deadline = Instant::now() + self.max_wait;
        let waited = tokio::time::timeout(self.max_wait, site.permits.acquire(msg.tenant_id.0));
        let Ok(_slot) = waited.await else {
            return Part::Busy(Duration::from_secs(1));
        };
        loop {
            match site.reserve() {
                Ok(()) => break,
                Err(wait) if Instant::now() + wait <= deadline => tokio::time::sleep(wait).await,
                Err(wait) => return Part::Busy(wait),
            }
        }
        let pool = SitePool {
            mx: self,
            dialer,
            site: &site,
            hosts: &hosts,
            email_id: msg.email_id,
            slot: std::sync::Mutex::new(None),
            first: std::sync::Mutex::new(None),
        };
        // Cluster-wide: the site's rate, then an open session to reuse
        // (taken now, so no other message takes it meanwhile) or a
        // connection slot for a new one.
        if let Some(shared) = &self.shared {
            if let Err(wait) = shared.rate(&site, deadline).await {
                return Part::Busy(wait);
            }
            match pool.checkout().await {
                Some(idle) => *pool::lock(&pool.first) = Some(idle),
                None => match shared.connection(&site, deadline).await {
                    Ok(s) => *pool::lock(&pool.slot) = Some(s),
                    Err(wait) => return Part::Busy(wait),
                },
            }
        }
        let mut results = Vec::new();
        let mut parsed = Vec::with_capacity(envs.len());
        for env in &envs {
            match Parsed::parse(env) {
                Ok(p) => parsed.push(p),
                Err(outcome) => results.extend(run::per_recipient(&env.recipients, outcome)),
            }
        }
        if !parsed.is_empty() {
            results.extend(run::deliver(&pool, &parsed, &msg.raw, &self.smtp).await);
        }
        // A session taken for this message and not used stays open.
        if let Some(idle) = pool::lock(&pool.first).take() {
            site.idle_list().push(idle);
        }
        if slowed(&results) {
            site.slow_down();
            if let Some(shared) = &self.shared {
                shared.slowed(&site);
            }
        }
        if results.iter().any(|r| r.fate == Fate::Deferred) {
            metrics::deferred(&site.pool, &site.label);
        }
        Part::Done(results)
    }

    /// The first MX host (in preference order) that takes a session
    /// ([`reach`]). Every address unreachable → the site is marked down for
    /// `down_secs`; every address refused by the destination guard → the
    /// domain's recipients bounce (soft: no suppression; no connection was
    /// made, and none will be under this configuration).
    async fn connect(
        &self,
        dialer: &Dialer,
        site: &Site,
        hosts: &[String],
        email_id: uuid::Uuid,
        slot: Option<crate::cluster::slots::Slot>,
    ) -> Result<Idle, Outcome> {
        let slot =
            match (&self.shared, slot) {
                (None, _) => None,
                (Some(_), Some(s)) => Some(s),
                (Some(shared), None) => match shared
                    .connection(site, Instant::now() + self.max_wait)
                    .await
                {
                    Ok(s) => Some(s),
                    Err(_) => return Err(Outcome::deferred(
                        "the site's connection limit is reached across the cluster (will retry)",
                    )),
                },
            };
        let walk = Walk {
            resolver: &self.resolver,
            dialer,
            guard: self.guard,
            max_addresses: self.max_addresses,
        };
        match walk.reach(site, hosts, email_id).await {
            Reached::Open(idle) => {
                site.mark_up();
                Ok(Idle { slot, ..*idle })
            }
            Reached::Refused(why) => Err(Outcome::bounced(format!(
                "550 5.4.0 not delivered: no public address for the recipient domain: {why}"
            ))),
            Reached::Failed {
                text,
                all_unreachable,
            } => {
                if all_unreachable {
                    site.mark_down(self.down_for);
                    if let Some(shared) = &self.shared {
                        shared.marked_down(site, self.down_for);
                    }
                }
                Err(Outcome::deferred(format!(
                    "no MX host of the recipient domain took the message: {text}"
                )))
            }
        }
    }
}

#[async_trait]
impl Transport for MxTransport {
    /// Through the `default` pool.
    async fn send(&self, msg: &OutgoingMessage) -> Outcome {
        self.send_via(DEFAULT_POOL, msg).await
    }
}

impl MxTransport {
    /// Whether `pool` is an egress pool of this transport (one without a
    /// relay, or `default`).
    pub fn has_pool(&self, pool: &str) -> bool {
        self.dialers.contains_key(pool)
    }

    /// Sends from egress pool `pool`'s source addresses with its EHLO name,
    /// shaped per (pool, site). A pool not configured (any more) sends
    /// through `default`.
    #[tracing::instrument(skip_all, fields(tenant_id = %msg.tenant_id, email_id = %msg.email_id, pool))]
    pub async fn send_via(&self, pool: &str, msg: &OutgoingMessage) -> Outcome {
        let dialer = match self
            .dialers
            .get(pool)
            .or_else(|| self.dialers.get(DEFAULT_POOL))
        {
            Some(d) => d,
            None => return Outcome::deferred("no egress pool configured"),
        };
        tracing::Span::current().record("pool", &*dialer.pool);
        self.sweep();
        let mut groups: BTreeMap<String, Vec<Envelope>> = BTreeMap::new();
        let mut results = Vec::new();
        for env in &msg.envelopes {
            let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for rcpt in &env.recipients {
                match domain_of(rcpt) {
                    Some(d) => by_domain.entry(d).or_default().push(rcpt.clone()),
                    None => results.push(RcptResult {
                        recipient: rcpt.clone(),
                        fate: Fate::Bounced,
                        response: "invalid address (not sent)".into(),
                    }),
                }
            }
            for (domain, recipients) in by_domain {
                groups.entry(domain).or_default().push(Envelope {
                    from: env.from.clone(),
                    recipients,
                    headers: env.headers.clone(),
                    content: env.content.clone(),
                });
            }
        }
        let parts =
            futures_util::future::join_all(groups.into_iter().map(|(domain, envs)| async move {
                let rcpts: Vec<String> = envs.iter().flat_map(|e| e.recipients.clone()).collect();
                let part = self.deliver_domain(dialer, msg, &domain, envs).await;
                (rcpts, part)
            }))
            .await;
        let all_busy = parts.iter().all(|(_, p)| matches!(p, Part::Busy(_)));
        if all_busy && results.is_empty() {
            let after = parts.iter().filter_map(|(_, p)| match p {
                Part::Busy(d) => Some(*d),
                Part::Done(_) => None,
            });
            return Outcome::Throttled {
                response: "destination busy (shaping); requeued".into(),
                after: after.min().unwrap_or(Duration::from_secs(1)),
            };
        }
        for (rcpts, part) in parts {
            match part {
                Part::Done(r) => results.extend(r),
                Part::Busy(_) => results.extend(rcpts.into_iter().map(|recipient| RcptResult {
                    recipient,
                    fate: Fate::Deferred,
                    response: "destination busy (shaping); will retry".into(),
                })),
            }
        }
        run::combine(results)
    }
}
