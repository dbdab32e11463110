//! Delivery transports (DESIGN §5): the worker hands a rendered message to
//! the transport for its tenant and records the [`Outcome`]. Transports never
//! fail with an error: every problem is an outcome the queue knows how to
//! handle (retry later, or stop), with the relay's reply kept for the record.

mod capture;
pub mod mx;
pub mod pools;
mod relay_pool;
mod run;
mod session;
mod smtp;
mod tls;
mod transaction;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::config::{DeliveryMode, Secret, Settings, SmtpSettings, TlsMode};
use crate::domain::TenantId;
use crate::net_guard::Guard;

pub use capture::CaptureTransport;
pub use smtp::{SmtpOptions, SmtpTransport};

/// The envelope of one SMTP transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// `MAIL FROM`; empty for the null sender `<>`.
    pub from: String,
    pub recipients: Vec<String>,
    /// Header lines (each ending in CRLF) sent before the shared content in
    /// this transaction only: a recipient's `X-Postline-ID`. They are not
    /// among the DKIM-signed headers, so the one signature holds for every
    /// envelope.
    pub headers: String,
    /// This transaction's own content in place of the message's shared
    /// `raw` (a tracked message: each recipient's copy names its
    /// recipient in its links, issue 29); `headers` then carries the copy's
    /// own DKIM signature. `None`: the shared content.
    pub content: Option<std::sync::Arc<[u8]>>,
}

/// One rendered message, ready for the wire.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    pub tenant_id: TenantId,
    pub email_id: uuid::Uuid,
    /// One SMTP transaction each, in order, sharing a connection while it
    /// lasts: with VERP every recipient has its own (its own return path),
    /// else one carries them all (to, cc and bcc).
    pub envelopes: Vec<Envelope>,
    /// A complete RFC 5322 message with CRLF line endings, shared by every
    /// envelope (signed once).
    pub raw: Vec<u8>,
}

impl OutgoingMessage {
    /// A message with one envelope for all its recipients.
    pub fn new(
        tenant_id: TenantId,
        email_id: uuid::Uuid,
        from: String,
        recipients: Vec<String>,
        raw: Vec<u8>,
    ) -> Self {
        OutgoingMessage {
            tenant_id,
            email_id,
            envelopes: vec![Envelope {
                from,
                recipients,
                headers: String::new(),
                content: None,
            }],
            raw,
        }
    }

    /// Every recipient, envelope by envelope.
    pub fn recipients(&self) -> impl Iterator<Item = &String> {
        self.envelopes.iter().flat_map(|e| &e.recipients)
    }
}

/// What happened to one message. `response` is the relay's reply (e.g.
/// `250 2.0.0 Ok: queued as X`) or, when there was none, what went wrong
/// (e.g. `connection refused: …`), so it can be stored and shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the relay (or captured): terminal.
    Delivered { response: String },
    /// Not sent, may succeed later (4xx, timeouts, network and TLS errors).
    Deferred { response: String },
    /// Refused for good (5xx): terminal.
    Bounced { response: String },
    /// The recipients fared differently (the relay refused some RCPTs):
    /// each one's fate and reply. `response` is the end-of-data reply, or
    /// the first refusal when nothing was sent.
    PerRecipient {
        response: String,
        recipients: Vec<RcptResult>,
    },
    /// Not attempted: the destination's shaping (direct delivery) had no
    /// slot; back to the queue after about `after`, the attempt not counted.
    Throttled { response: String, after: Duration },
}

/// What happened to one recipient of a [`Outcome::PerRecipient`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Deferred,
    Bounced,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcptResult {
    /// As given in an [`Envelope`] of the message.
    pub recipient: String,
    pub fate: Fate,
    pub response: String,
}

impl Outcome {
    pub fn response(&self) -> &str {
        match self {
            Outcome::Delivered { response }
            | Outcome::Deferred { response }
            | Outcome::Bounced { response }
            | Outcome::PerRecipient { response, .. }
            | Outcome::Throttled { response, .. } => response,
        }
    }

    /// Accepted for every recipient (with per-recipient transactions each
    /// has its own reply, so the outcome may be per recipient).
    pub fn is_delivered(&self) -> bool {
        match self {
            Outcome::Delivered { .. } => true,
            Outcome::PerRecipient { recipients, .. } => {
                recipients.iter().all(|r| r.fate == Fate::Delivered)
            }
            _ => false,
        }
    }

    pub(crate) fn deferred(response: impl Into<String>) -> Self {
        Outcome::Deferred {
            response: response.into(),
        }
    }

    /// An attempt cut off by `delivery.attempt_timeout_secs`: deferred.
    pub(crate) fn timed_out(limit: Duration) -> Self {
        Outcome::deferred(format!(
            "delivery attempt timed out after {}s (delivery.attempt_timeout_secs)",
            limit.as_secs()
        ))
    }

    pub(crate) fn bounced(response: impl Into<String>) -> Self {
        Outcome::Bounced {
            response: response.into(),
        }
    }
}

/// Where and how to relay: the default relay from config or a tenant's
/// override. Equal configs share one pooled transport. `Debug` redacts the
/// password (it is a [`Secret`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// Consistent with `Eq`: equal configs hash equally. The password is left
/// out (configs differing only by password land in one bucket and are told
/// apart by `Eq`), so no secret-derived value is computed at all.
impl Hash for RelayConfig {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.host.hash(state);
        self.port.hash(state);
        self.tls.as_str().hash(state);
        self.username.hash(state);
    }
}

impl RelayConfig {
    /// The default relay from `delivery.smtp`; empty username/password mean
    /// no AUTH.
    pub fn from_settings(smtp: &SmtpSettings) -> Self {
        RelayConfig {
            host: smtp.host.clone(),
            port: smtp.port,
            tls: smtp.tls,
            username: Some(smtp.username.clone()).filter(|u| !u.is_empty()),
            password: Some(smtp.password.clone()).filter(|p| !p.is_empty()),
        }
    }
}

#[async_trait]
pub trait Transport: Send + Sync {
    async fn send(&self, msg: &OutgoingMessage) -> Outcome;
}

/// A relay transport nobody but the cache holds, unused this long, is
/// dropped (with its idle connections) when a new relay is added.
const RELAY_UNUSED_TTL: Duration = Duration::from_secs(600);

struct CachedRelay {
    transport: Arc<SmtpTransport>,
    last_used: Instant,
}

/// Every transport of this node: the default (capture or the configured
/// relay) and one pooled SMTP transport per distinct relay in use.
pub struct Transports {
    default: Arc<dyn Transport>,
    /// Every egress pool other than `default` (issue 26): its relay, or in
    /// `mx` mode direct delivery from its source addresses. Pools without a
    /// relay in `smtp`/`capture` mode use the default transport.
    pools: HashMap<String, Arc<dyn Transport>>,
    /// Options of tenant relays: these carry the SSRF guard.
    options: SmtpOptions,
    relays: Mutex<HashMap<RelayConfig, CachedRelay>>,
}

impl Transports {
    /// Timeouts and the per-relay connection bound come from `delivery.*`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self::from_settings_shared(settings, None)
    }

    /// [`Transports::from_settings`] with the MX sites' limits shared by
    /// every node (issue 27).
    pub fn from_settings_shared(settings: &Settings, shared: Option<mx::SharedSites>) -> Self {
        let d = &settings.delivery;
        let options = SmtpOptions {
            connect_timeout: Duration::from_secs(d.connect_timeout_secs.max(1)),
            command_timeout: Duration::from_secs(d.command_timeout_secs.max(1)),
            // RFC 5321 §4.5.3.2.6: wait 10 minutes for the reply to the
            // final dot (the relay may be filtering the message), not the
            // command timeout.
            data_timeout: Duration::from_secs(600),
            attempt_timeout: Duration::from_secs(d.attempt_timeout_secs.max(1)),
            max_connections: d.max_connections_per_relay.max(1),
            ..SmtpOptions::default()
        };
        Self::with_options_shared(settings, options, shared)
    }

    /// Like [`Transports::from_settings`] with explicit SMTP timeouts and
    /// limits (tests shorten them).
    pub fn with_options(settings: &Settings, options: SmtpOptions) -> Self {
        Self::with_options_shared(settings, options, None)
    }

    fn with_options_shared(
        settings: &Settings,
        options: SmtpOptions,
        shared: Option<mx::SharedSites>,
    ) -> Self {
        let delivery = &settings.delivery;
        let options = SmtpOptions {
            allow_plaintext_auth: options.allow_plaintext_auth || delivery.allow_plaintext_auth,
            ..options
        };
        let mut relays = HashMap::new();
        let mut pools: HashMap<String, Arc<dyn Transport>> = HashMap::new();
        let default: Arc<dyn Transport> = match delivery.mode {
            DeliveryMode::Capture => Arc::new(CaptureTransport::new(delivery.capture_dir.clone())),
            DeliveryMode::Mx => {
                let mx =
                    Arc::new(mx::MxTransport::new(settings, options.clone()).with_shared(shared));
                mx.spawn_sweeper();
                for p in delivery.pools.iter().filter(|p| mx.has_pool(&p.name)) {
                    let via: Arc<dyn Transport> = Arc::new(pools::PoolTransport {
                        mx: mx.clone(),
                        pool: p.name.clone(),
                    });
                    pools.insert(p.name.clone(), via);
                }
                mx
            }
            DeliveryMode::Smtp => {
                let relay = RelayConfig::from_settings(&delivery.smtp);
                let transport = Arc::new(SmtpTransport::new(relay.clone(), options.clone()));
                relays.insert(
                    relay,
                    CachedRelay {
                        transport: transport.clone(),
                        last_used: Instant::now(),
                    },
                );
                transport
            }
        };
        // A pool's relay is trusted config, like the default relay.
        for p in &delivery.pools {
            if let Some(relay) = p.relay_config() {
                let via: Arc<dyn Transport> = Arc::new(SmtpTransport::new(relay, options.clone()));
                pools.insert(p.name.clone(), via);
            }
        }
        let guard = Guard::new(delivery.allow_private_relays);
        Transports {
            default,
            pools,
            options: SmtpOptions {
                guard: Some(guard),
                ..options
            },
            relays: Mutex::new(relays),
        }
    }

    /// The transport for one message: the tenant's SMTP override when given
    /// (a pooled transport cached per distinct [`RelayConfig`], so a changed
    /// override yields a new transport), else the default: capture
    /// (mode=capture), the default relay (mode=smtp) or direct delivery
    /// (mode=mx).
    pub fn for_tenant(&self, override_relay: Option<RelayConfig>) -> Arc<dyn Transport> {
        self.for_message(override_relay, pools::DEFAULT_POOL)
    }

    /// The transport for one message of egress pool `pool` (the tenant's
    /// pool for the message's stream): the tenant's SMTP override wins, then
    /// the pool's relay or (mode=mx) direct delivery from the pool's source
    /// addresses, else the default transport. A pool not configured (any
    /// more) is `default`.
    pub fn for_message(
        &self,
        override_relay: Option<RelayConfig>,
        pool: &str,
    ) -> Arc<dyn Transport> {
        let Some(relay) = override_relay else {
            return match self.pools.get(pool) {
                Some(t) => t.clone(),
                None => self.default.clone(),
            };
        };
        // A poisoned lock only means a panic elsewhere mid-update of a plain
        // map; its entries are still whole.
        let mut relays = self.relays.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(cached) = relays.get_mut(&relay) {
            cached.last_used = now;
            return cached.transport.clone();
        }
        relays.retain(|_, c| {
            Arc::strong_count(&c.transport) > 1
                || now.duration_since(c.last_used) < RELAY_UNUSED_TTL
        });
        let transport = Arc::new(SmtpTransport::new(relay.clone(), self.options.clone()));
        relays.insert(
            relay,
            CachedRelay {
                transport: transport.clone(),
                last_used: now,
            },
        );
        transport
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash(r: &RelayConfig) -> u64 {
        let mut h = DefaultHasher::new();
        r.hash(&mut h);
        h.finish()
    }

    #[test]
    fn relay_from_settings_treats_empty_credentials_as_none() {
        let smtp = SmtpSettings {
            host: "relay.test".into(),
            port: 587,
            tls: TlsMode::Starttls,
            username: String::new(),
            password: Secret::default(),
        };
        let relay = RelayConfig::from_settings(&smtp);
        assert_eq!(relay.username, None);
        assert_eq!(relay.password, None);
    }

    #[test]
    fn equal_relays_hash_equal_and_passwords_tell_them_apart() {
        let a = RelayConfig {
            host: "relay.test".into(),
            port: 465,
            tls: TlsMode::Tls,
            username: Some("u".into()),
            password: Some(Secret::new("p1")),
        };
        let b = RelayConfig {
            password: Some(Secret::new("p2")),
            ..a.clone()
        };
        assert_eq!(hash(&a), hash(&a.clone()));
        assert_ne!(a, b);
        assert!(!format!("{a:?}").contains("p1"));
    }
}
