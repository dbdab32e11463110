//! Layered settings: the compiled-in `config/default.toml`, then an optional
//! `config/<POSTLINE_ENV>.toml`, then `POSTLINE__SECTION__KEY` environment
//! variables and `DATABASE_URL`. Every value is checked here so a bad
//! deployment fails at start with the offending key named, not at first use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use crate::secret::Secret;
use base64::Engine;
use serde::Deserialize;
use zeroize::Zeroizing;

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub security: SecuritySettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub delivery: DeliverySettings,
    pub webhooks: WebhookSettings,
    pub worker: WorkerSettings,
    pub ingest: IngestSettings,
    pub tenants: TenantSettings,
    pub domains: DomainSettings,
    pub dns: DnsSettings,
    pub retention: RetentionSettings,
    pub templates: TemplateSettings,
    pub metrics: MetricsSettings,
    pub oauth: OAuthSettings,
    pub log: LogSettings,
    pub bounces: BounceSettings,
    pub inbound: InboundSettings,
    pub suppressions: SuppressionSettings,
    /// The web console (issue 17, `src/console/`).
    pub console: ConsoleSettings,
    pub submission: SubmissionSettings,
    /// Leased budgets shared by the nodes (`src/cluster/`).
    pub cluster: crate::cluster::ClusterSettings,
    /// Tenant reputation policy defaults (`src/reputation/`).
    pub reputation: crate::reputation::ReputationSettings,
    /// RFC 8058 one-click unsubscribe (`src/unsubscribe/`).
    #[serde(default)]
    pub unsubscribe: crate::unsubscribe::UnsubscribeSettings,
    /// Open and click tracking (`src/tracking/`).
    #[serde(default)]
    pub tracking: crate::tracking::TrackingSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    pub workers: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub pool_size: u32,
    pub connect_timeout_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    pub master_key: Secret,
    pub master_key_file: String,
    /// Comma-separated base64 keys still accepted for reading during a
    /// rotation (`postline secrets rotate`); never used to encrypt.
    pub previous_master_keys: Secret,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub cache_ttl_secs: u64,
    pub last_used_flush_secs: u64,
    /// Failed authentications of well-formed tokens per client address and
    /// minute before its cache misses get 429 without a lookup (0 = off).
    pub failed_per_ip_per_minute: u32,
    /// Count failures against the rightmost `X-Forwarded-For` address
    /// instead of the TCP peer: only behind a proxy that appends it.
    pub trust_x_forwarded_for: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_request_bytes: usize,
    /// One message as MIME-encoded (headers, bodies, attachments).
    pub max_message_bytes: usize,
    /// Attachments per message, each one's and all of them decoded.
    pub max_attachments: usize,
    pub max_attachment_bytes: usize,
    pub max_attachments_total_bytes: usize,
    pub default_requests_per_minute: u32,
    pub admin_requests_per_minute: u32,
    /// Processes sharing a limiter that runs without leased budgets: only
    /// a delivery worker started without them (in-process tests) paces
    /// `emails_per_second` at `limit / nodes`. Every `api`, `serve` and
    /// `worker` process shares its limits through Postgres (`src/cluster/`),
    /// whatever this says.
    pub nodes: u32,
    pub usage_flush_secs: u64,
    /// Messages of a tenant's daily quota a node leases at once (grown
    /// under steady use, up to 16 of them); below one chunk left, the quota
    /// is decided exactly under a lock.
    pub quota_chunk: u32,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    Capture,
    Smtp,
    /// Direct to each recipient domain's MX (issue 16, `delivery.mx`).
    Mx,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    Starttls,
    Tls,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Tls => "tls",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(TlsMode::None),
            "starttls" => Some(TlsMode::Starttls),
            "tls" => Some(TlsMode::Tls),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    pub mode: DeliveryMode,
    pub capture_dir: PathBuf,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub max_lifetime_secs: u64,
    pub lease_secs: u64,
    pub connect_timeout_secs: u64,
    pub command_timeout_secs: u64,
    /// One delivery attempt of one message (relay or direct), connecting
    /// included; past it the attempt defers. Longer than the 10 minutes RFC
    /// 5321 gives the reply to the final dot, so only a stuck attempt hits it.
    pub attempt_timeout_secs: u64,
    pub max_connections_per_relay: usize,
    /// Tenant SMTP overrides on loopback/private/link-local hosts (never
    /// metadata). The default relay (`delivery.smtp`) is trusted config.
    pub allow_private_relays: bool,
    /// SMTP AUTH without TLS to relays other than a loopback IP literal.
    pub allow_plaintext_auth: bool,
    pub smtp: SmtpSettings,
    /// Direct delivery (issue 16).
    pub mx: crate::delivery::mx::MxSettings,
    /// Egress pools (issue 26, `[[delivery.pools]]`); `default` is built in.
    #[serde(default)]
    pub pools: Vec<crate::delivery::pools::PoolSettings>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: String,
    pub password: Secret,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Webhook URLs on loopback/private/link-local addresses (never metadata).
    pub allow_private_targets: bool,
    /// Per-request timeout of a delivery POST.
    pub timeout_secs: u64,
    /// Backoff of failed deliveries: first retry after about
    /// `retry_initial_ms`, doubling with jitter, capped at `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// A delivery is retried until this long after its event, then failed.
    pub retry_window_secs: u64,
    /// A claimed delivery belongs to one dispatcher for this long.
    pub lease_secs: u64,
    /// Deliveries in flight per dispatcher.
    pub concurrency: usize,
    /// How often an idle dispatcher looks for due deliveries.
    pub poll_interval_ms: u64,
    /// Finished deliveries (and their attempt log) are kept this many days.
    pub log_retention_days: u32,
    /// Endpoints one tenant may register (the 21st → 422 by default).
    pub max_endpoints_per_tenant: usize,
    /// Deliveries in flight at once to one endpoint, and to one tenant's
    /// endpoints together, so slow endpoints hold only their owner's slots.
    pub max_in_flight_per_endpoint: usize,
    pub max_in_flight_per_tenant: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Messages in flight at once (per worker process).
    pub concurrency: usize,
    /// Messages taken by one claim at most.
    pub claim_batch: usize,
    /// Content bytes in flight at once (`email_queue.size_bytes` summed).
    pub max_inflight_bytes: u64,
    /// Messages of one tenant in flight at once; 0 = half of `concurrency`.
    pub max_inflight_per_tenant: usize,
    /// Content bytes of one tenant in flight at once; 0 = half of
    /// `max_inflight_bytes`, so one tenant's large mail cannot hold the
    /// whole budget.
    pub max_tenant_inflight_bytes: u64,
    /// Connections of the worker's own pool for lease heartbeats, reclaims
    /// and outcome writes, apart from `database.pool_size`, so API load
    /// cannot delay them past a lease.
    pub lease_pool_size: u32,
    /// Leases of one message that may expire without an outcome before it
    /// fails ("worker lost it repeatedly").
    pub max_lost_leases: u32,
    pub poll_interval_ms: u64,
    pub shutdown_timeout_secs: u64,
    /// `postline worker` only: serve `/metrics` and `/healthz` here ("" = off).
    pub metrics_bind: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub writers: usize,
    pub max_batch_rows: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub auto_create: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSettings {
    /// The From domain must be a verified domain of the tenant (false: its
    /// pending domains too; local runs only).
    pub require_verified: bool,
    /// Seconds between DNS rechecks of each domain.
    pub recheck_secs: u64,
    /// A verified domain whose DKIM record is gone this long becomes failed.
    pub grace_secs: u64,
    /// Days a rotated-out DKIM key stays published (`retiring`).
    pub dkim_retire_days: u32,
    /// Seconds the worker keeps a domain's decrypted signing keys, and the
    /// API a From domain's ownership, in memory.
    pub cache_secs: u64,
}

/// `dns.nameservers`: a TOML list, or one comma-separated string (the
/// environment form `POSTLINE__DNS__NAMESERVERS=127.0.0.1:5353`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    #[serde(deserialize_with = "list_or_csv")]
    pub nameservers: Vec<String>,
}

fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::List(l) => l,
        Raw::Csv(s) => s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// How long message content and metadata are kept (`src/retention`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Bodies, headers and attachments of finished mail, in days after
    /// acceptance; a tenant's `retention_content_days` overrides it.
    pub content_days: u32,
    /// The message row, its status and events, in days after acceptance.
    pub metadata_days: u32,
    /// Rows per purge statement.
    pub batch_rows: usize,
    /// Statements of each kind per maintenance run (hourly).
    pub max_batches: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSettings {
    /// Child processes that render tenant templates (renders wait for one).
    pub render_processes: usize,
    /// Memory one render process may use (its data segment, MiB).
    pub render_memory_mb: u64,
    /// Render processes one tenant may hold at once, so one tenant's slow
    /// templates leave the others a process.
    pub render_processes_per_tenant: usize,
    /// How long a render waits for a process before it is refused (429).
    pub render_wait_ms: u64,
    /// The program run as `<program> template-sandbox`; empty = this binary.
    pub sandbox_program: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// The `/metrics` queue gauges are counted at most once per this period.
    pub queue_depth_secs: u64,
}

/// The web console (issue 17): sessions, login throttling, invitations.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Lifetime of a console session (300..=2592000 s), from sign-in.
    pub session_ttl_secs: u64,
    /// Failed sign-ins per minute, per e-mail address and per client address
    /// (IPv6 per /64), before further tries get 429 (0 = unlimited).
    pub login_failures_per_minute: u32,
    /// Lifetime of a one-time invitation link (300..=2592000 s).
    pub invitation_ttl_secs: u64,
    /// Where the console is reached from outside (e.g. `https://mail.example.com`),
    /// printed before invitation links; empty: links are printed as paths.
    pub public_url: String,
    /// Sender of invitation mail (mailed through `delivery.smtp` when
    /// `delivery.mode = "smtp"`); empty: `postline@<bounces.domain>`.
    pub mail_from: String,
    /// Admins without TOTP reach only `/console/account` (to set it up).
    pub require_totp_for_admins: bool,
}

/// OAuth 2.0 client credentials (`src/oauth/`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// Lifetime of an access token (`exp - iat`), 60..=86400 seconds.
    pub token_ttl_secs: u64,
    /// `iss` of issued tokens, checked on every token.
    pub issuer: String,
    /// `aud` of issued tokens, checked on every token.
    pub audience: String,
    /// `POST /oauth/token` requests per client per minute (0 = unlimited).
    pub token_requests_per_minute: u32,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// Return paths and complaint address (issue 13).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceSettings {
    /// The bounce domain: messages go out with `MAIL FROM:<b+TOKEN@domain>`
    /// and the inbound listener accepts mail for it. Empty = off (the
    /// message's own envelope sender is used and no DSN can be matched).
    pub domain: String,
    /// The feedback-loop (ARF) address the inbound listener accepts; empty = none.
    pub fbl_address: String,
}

/// The inbound SMTP listener (bounces, FBL reports).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSettings {
    /// host:port; empty = no listener.
    pub bind: String,
    pub max_connections: usize,
    /// Sessions at once from one client address (421 4.7.0 to the next).
    pub max_connections_per_ip: usize,
    pub max_message_bytes: usize,
    /// RFC 5321 §4.5.3.2.7: the server waits at least 5 minutes for a command.
    pub command_timeout_secs: u64,
    /// A whole DATA transfer, however steadily its bytes trickle in.
    pub data_timeout_secs: u64,
    /// Messages of all sessions held in memory at once, at most (each DATA
    /// reserves `max_message_bytes`).
    pub max_inflight_bytes: usize,
    /// Tenants' inbound mail (issue 28; `crate::inbound`): the MX host the
    /// domains' `inbound` record names; empty = `bounces.domain`.
    #[serde(default)]
    pub mx_host: String,
    /// Attachments up to this size are inlined (base64) in `email.received`.
    #[serde(default = "default_inline_attachment_bytes")]
    pub inline_attachment_bytes: usize,
    /// Attachments per received message, at most (more: 552 5.3.4).
    #[serde(default = "default_max_attachments")]
    pub max_attachments: usize,
    /// Recipients per transaction, at most (more: 452 4.5.3).
    #[serde(default = "default_inbound_max_recipients")]
    pub max_recipients: usize,
    /// Messages per tenant per minute (per node), past it 451 4.7.1.
    #[serde(default = "default_messages_per_tenant_per_minute")]
    pub messages_per_tenant_per_minute: u32,
    #[serde(default)]
    pub spam: InboundSpamSettings,
}

fn default_inline_attachment_bytes() -> usize {
    1024 * 1024
}
fn default_max_attachments() -> usize {
    100
}
fn default_inbound_max_recipients() -> usize {
    50
}
fn default_messages_per_tenant_per_minute() -> u32 {
    600
}

/// `inbound.spam`: rspamd's `/checkv2` (empty URL = no spam check).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSpamSettings {
    #[serde(default)]
    pub rspamd_url: String,
    #[serde(default = "default_rspamd_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for InboundSpamSettings {
    fn default() -> Self {
        InboundSpamSettings {
            rspamd_url: String::new(),
            timeout_ms: default_rspamd_timeout_ms(),
        }
    }
}

fn default_rspamd_timeout_ms() -> u64 {
    5000
}

/// SMTP submission (issue 14; `crate::submission`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionSettings {
    /// STARTTLS listener, host:port; empty = none.
    pub bind: String,
    /// Implicit-TLS listener (RFC 8314), host:port; empty = none.
    pub tls_bind: String,
    /// PEM certificate chain and private key; empty = no TLS.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Offer AUTH before TLS (loopback testing only).
    pub allow_plaintext_auth: bool,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Authenticated sessions at once per tenant.
    pub max_connections_per_tenant: usize,
    /// RFC 5321 §4.5.3.2: at least 5 minutes for each command and data block.
    pub command_timeout_secs: u64,
    /// A whole DATA transfer, however steadily its bytes trickle in.
    pub data_timeout_secs: u64,
    /// Messages of all sessions (both listeners) held in memory at once, at
    /// most (each DATA reserves `limits.max_message_bytes`).
    pub max_inflight_bytes: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressionSettings {
    /// A hard bounce's suppression expires after this many days; 0 = never.
    pub hard_bounce_days: u32,
}

/// Why the configuration could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Loads settings from `config_dir` (defaults compiled in), the environment
    /// named by `POSTLINE_ENV`, and environment variables.
    pub fn load(config_dir: &Path) -> Result<Settings, ConfigError> {
        let env_name = std::env::var("POSTLINE_ENV").ok();
        Self::load_layers(config_dir, env_name.as_deref(), true)
    }

    /// The layers without the process environment when `use_env` is false
    /// (tests build settings side by side in one process).
    pub fn load_layers(
        config_dir: &Path,
        env_name: Option<&str>,
        use_env: bool,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(name) = env_name.filter(|n| !n.is_empty()) {
            builder = builder.add_source(
                config::File::from(config_dir.join(format!("{name}.toml"))).required(false),
            );
        }
        if use_env {
            builder = builder.add_source(
                config::Environment::with_prefix("POSTLINE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
            if let Ok(url) = std::env::var("DATABASE_URL") {
                builder = builder
                    .set_override("database.url", url)
                    .map_err(|e| ConfigError(format!("DATABASE_URL: {e}")))?;
            }
        }
        let raw = builder.build().map_err(|e| ConfigError(e.to_string()))?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the values serde cannot: ranges, addresses, the master key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.server.bind.parse::<SocketAddr>().is_err() {
            return fail("server.bind", "expected host:port, e.g. 127.0.0.1:8080");
        }
        if self.database.url.is_empty() {
            return fail("database.url", "must be set (or DATABASE_URL)");
        }
        if self.database.pool_size == 0 {
            return fail("database.pool_size", "must be at least 1");
        }
        if self.auth.cache_ttl_secs > 5 {
            return fail("auth.cache_ttl_secs", "must be at most 5");
        }
        if self.auth.last_used_flush_secs == 0 {
            return fail("auth.last_used_flush_secs", "must be at least 1");
        }
        if self.limits.max_request_bytes < 1024 {
            return fail("limits.max_request_bytes", "must be at least 1024");
        }
        let l = &self.limits;
        if l.max_message_bytes < 1024 {
            return fail("limits.max_message_bytes", "must be at least 1024");
        }
        if l.max_attachments > crate::emails::input::MAX_ATTACHMENTS {
            return fail(
                "limits.max_attachments",
                &format!("must be at most {}", crate::emails::input::MAX_ATTACHMENTS),
            );
        }
        if l.max_attachment_bytes > l.max_attachments_total_bytes {
            return fail(
                "limits.max_attachment_bytes",
                "must be at most limits.max_attachments_total_bytes",
            );
        }
        if l.max_attachments_total_bytes >= l.max_message_bytes {
            return fail(
                "limits.max_attachments_total_bytes",
                "must be below limits.max_message_bytes (base64 adds a third)",
            );
        }
        if self.limits.nodes == 0 {
            return fail("limits.nodes", "must be at least 1");
        }
        if self.limits.usage_flush_secs == 0 {
            return fail("limits.usage_flush_secs", "must be at least 1");
        }
        if !(1..=1_000_000).contains(&self.limits.quota_chunk) {
            return fail("limits.quota_chunk", "must be between 1 and 1000000");
        }
        if let Err((key, why)) = self.reputation.validate() {
            return fail(&key, &why);
        }
        if let Err((key, why)) = self.tracking.validate() {
            return fail(key, &why);
        }
        if let Err((key, why)) = self.cluster.validate() {
            return fail(key, why);
        }
        if let Err(why) = self.unsubscribe.validate() {
            return fail("unsubscribe.public_url", &why);
        }
        if self.worker.concurrency == 0 {
            return fail("worker.concurrency", "must be at least 1");
        }
        if !self.worker.metrics_bind.is_empty()
            && self.worker.metrics_bind.parse::<SocketAddr>().is_err()
        {
            return fail("worker.metrics_bind", "expected host:port or empty");
        }
        if self.worker.claim_batch == 0 {
            return fail("worker.claim_batch", "must be at least 1");
        }
        if self.worker.max_inflight_bytes < 1024 * 1024 {
            return fail(
                "worker.max_inflight_bytes",
                "must be at least 1048576 (1 MiB)",
            );
        }
        if self.worker.max_tenant_inflight_bytes > self.worker.max_inflight_bytes {
            return fail(
                "worker.max_tenant_inflight_bytes",
                "must be at most worker.max_inflight_bytes (0 = half of it)",
            );
        }
        if self.worker.lease_pool_size == 0 {
            return fail("worker.lease_pool_size", "must be at least 1");
        }
        if self.worker.max_lost_leases == 0 {
            return fail("worker.max_lost_leases", "must be at least 1");
        }
        if self.worker.poll_interval_ms == 0 {
            return fail("worker.poll_interval_ms", "must be at least 1");
        }
        if self.ingest.writers == 0 {
            return fail("ingest.writers", "must be at least 1");
        }
        if !(1..=5000).contains(&self.ingest.max_batch_rows) {
            return fail("ingest.max_batch_rows", "must be between 1 and 5000");
        }
        if self.delivery.retry_initial_ms == 0
            || self.delivery.retry_max_ms < self.delivery.retry_initial_ms
        {
            return fail(
                "delivery.retry_max_ms",
                "must be at least delivery.retry_initial_ms (> 0)",
            );
        }
        if self.delivery.lease_secs < 2 {
            return fail("delivery.lease_secs", "must be at least 2");
        }
        if !(1..=86_400).contains(&self.delivery.attempt_timeout_secs) {
            return fail(
                "delivery.attempt_timeout_secs",
                "must be between 1 and 86400",
            );
        }
        if self.delivery.max_connections_per_relay == 0 {
            return fail("delivery.max_connections_per_relay", "must be at least 1");
        }
        if self.delivery.mode == DeliveryMode::Smtp && self.delivery.smtp.host.trim().is_empty() {
            return fail(
                "delivery.smtp.host",
                "must be set when delivery.mode = \"smtp\"",
            );
        }
        // Direct delivery (issue 16).
        if let Err((key, why)) = self.delivery.mx.validate() {
            return fail(&key, why);
        }
        // Egress pools (issue 26).
        if let Err((key, why)) = crate::delivery::pools::validate(&self.delivery.pools) {
            return fail(&key, &why);
        }
        let w = &self.webhooks;
        if !(1..=60).contains(&w.timeout_secs) {
            return fail("webhooks.timeout_secs", "must be between 1 and 60");
        }
        if w.retry_initial_ms == 0 || w.retry_max_ms < w.retry_initial_ms {
            return fail(
                "webhooks.retry_max_ms",
                "must be at least webhooks.retry_initial_ms (> 0)",
            );
        }
        if w.retry_window_secs == 0 {
            return fail("webhooks.retry_window_secs", "must be at least 1");
        }
        if w.lease_secs <= w.timeout_secs {
            return fail(
                "webhooks.lease_secs",
                "must be longer than webhooks.timeout_secs",
            );
        }
        if w.concurrency == 0 {
            return fail("webhooks.concurrency", "must be at least 1");
        }
        if w.poll_interval_ms == 0 {
            return fail("webhooks.poll_interval_ms", "must be at least 1");
        }
        if w.log_retention_days == 0 {
            return fail("webhooks.log_retention_days", "must be at least 1");
        }
        let d = &self.domains;
        if d.recheck_secs == 0 {
            return fail("domains.recheck_secs", "must be at least 1");
        }
        if d.dkim_retire_days > 365 {
            return fail("domains.dkim_retire_days", "must be at most 365");
        }
        if !(1..=300).contains(&d.cache_secs) {
            return fail("domains.cache_secs", "must be between 1 and 300");
        }
        if self.dns.nameservers.len() > 8 {
            return fail("dns.nameservers", "at most 8 entries");
        }
        if let Err(why) = crate::dns::parse_nameservers(&self.dns.nameservers) {
            return fail("dns.nameservers", &why);
        }
        if !self.inbound.bind.is_empty() && self.inbound.bind.parse::<SocketAddr>().is_err() {
            return fail("inbound.bind", "expected host:port or empty");
        }
        if self.inbound.max_connections == 0 {
            return fail("inbound.max_connections", "must be at least 1");
        }
        if self.inbound.max_connections_per_ip == 0 {
            return fail("inbound.max_connections_per_ip", "must be at least 1");
        }
        if self.inbound.max_inflight_bytes < self.inbound.max_message_bytes {
            return fail(
                "inbound.max_inflight_bytes",
                "must be at least inbound.max_message_bytes",
            );
        }
        if self.inbound.max_message_bytes < 64 * 1024 {
            return fail("inbound.max_message_bytes", "must be at least 65536");
        }
        if self.inbound.command_timeout_secs == 0 {
            return fail("inbound.command_timeout_secs", "must be at least 1");
        }
        if self.inbound.max_attachments == 0 || self.inbound.max_recipients == 0 {
            return fail(
                "inbound.max_attachments",
                "max_attachments and max_recipients must be at least 1",
            );
        }
        if self.inbound.data_timeout_secs == 0 {
            return fail("inbound.data_timeout_secs", "must be at least 1");
        }
        self.validate_submission()?;
        let b = &self.bounces;
        if !b.domain.is_empty()
            && crate::domain::parse_hostname("bounces.domain", &b.domain).is_err()
        {
            return fail("bounces.domain", "not a valid domain name");
        }
        if !b.fbl_address.is_empty() && !b.fbl_address.contains('@') {
            return fail("bounces.fbl_address", "expected an e-mail address or empty");
        }
        let r = &self.retention;
        if !(1..=3650).contains(&r.content_days) {
            return fail("retention.content_days", "must be between 1 and 3650");
        }
        if r.metadata_days < r.content_days || r.metadata_days > 36500 {
            return fail(
                "retention.metadata_days",
                "must be at least retention.content_days (and at most 36500)",
            );
        }
        if !(1..=10_000).contains(&r.batch_rows) {
            return fail("retention.batch_rows", "must be between 1 and 10000");
        }
        if !(1..=10_000).contains(&r.max_batches) {
            return fail("retention.max_batches", "must be between 1 and 10000");
        }
        if w.max_endpoints_per_tenant == 0 {
            return fail("webhooks.max_endpoints_per_tenant", "must be at least 1");
        }
        if w.max_in_flight_per_endpoint == 0 || w.max_in_flight_per_endpoint > w.concurrency {
            return fail(
                "webhooks.max_in_flight_per_endpoint",
                "must be between 1 and webhooks.concurrency",
            );
        }
        if w.max_in_flight_per_tenant < w.max_in_flight_per_endpoint
            || w.max_in_flight_per_tenant > w.concurrency
        {
            return fail(
                "webhooks.max_in_flight_per_tenant",
                "must be between webhooks.max_in_flight_per_endpoint and webhooks.concurrency",
            );
        }
        let t = &self.templates;
        if !(1..=64).contains(&t.render_processes) {
            return fail("templates.render_processes", "must be between 1 and 64");
        }
        if !(16..=4096).contains(&t.render_memory_mb) {
            return fail("templates.render_memory_mb", "must be between 16 and 4096");
        }
        if !(1..=t.render_processes).contains(&t.render_processes_per_tenant) {
            return fail(
                "templates.render_processes_per_tenant",
                "must be between 1 and templates.render_processes",
            );
        }
        if !(1..=600_000).contains(&t.render_wait_ms) {
            return fail("templates.render_wait_ms", "must be between 1 and 600000");
        }
        if self.metrics.queue_depth_secs == 0 {
            return fail("metrics.queue_depth_secs", "must be at least 1");
        }
        for (key, v) in [
            ("console.session_ttl_secs", self.console.session_ttl_secs),
            (
                "console.invitation_ttl_secs",
                self.console.invitation_ttl_secs,
            ),
        ] {
            if !(300..=2_592_000).contains(&v) {
                return fail(key, "must be between 300 and 2592000");
            }
        }
        let from = self.console.mail_from.trim();
        if !from.is_empty() && crate::domain::parse_email("console.mail_from", from).is_err() {
            return fail("console.mail_from", "not a valid e-mail address");
        }
        if !(60..=86400).contains(&self.oauth.token_ttl_secs) {
            return fail("oauth.token_ttl_secs", "must be between 60 and 86400");
        }
        for (key, value) in [
            ("oauth.issuer", &self.oauth.issuer),
            ("oauth.audience", &self.oauth.audience),
        ] {
            if value.trim().is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
                return fail(key, "must be 1-255 printable characters");
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return fail(
                "log.level",
                "not a valid filter (e.g. info, postline=debug)",
            );
        }
        self.vault().map(|_| ())
    }

    /// The 32-byte master key for secrets at rest, from `security.master_key`
    /// or the file named by `security.master_key_file`. Every copy of it
    /// (text, decoded bytes) is wiped when dropped.
    pub fn master_key(&self) -> Result<Zeroizing<[u8; 32]>, ConfigError> {
        let (key, source) = if !self.security.master_key.is_empty() {
            (
                Zeroizing::new(self.security.master_key.expose().trim().to_string()),
                "security.master_key",
            )
        } else if !self.security.master_key_file.is_empty() {
            let text = Zeroizing::new(
                std::fs::read_to_string(&self.security.master_key_file).map_err(|e| {
                    ConfigError(format!(
                        "security.master_key_file: cannot read {}: {e}",
                        self.security.master_key_file
                    ))
                })?,
            );
            (
                Zeroizing::new(text.trim().to_string()),
                "security.master_key_file",
            )
        } else {
            return Err(ConfigError(
                "security.master_key: set it (base64 of 32 bytes) or security.master_key_file"
                    .into(),
            ));
        };
        decode_key(&key, source)
    }

    /// The keys of `security.previous_master_keys`.
    pub fn previous_master_keys(&self) -> Result<Vec<Zeroizing<[u8; 32]>>, ConfigError> {
        self.security
            .previous_master_keys
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| decode_key(k, "security.previous_master_keys"))
            .collect()
    }

    /// The vault for secrets at rest: the master key seals, previous keys
    /// still open values sealed before a rotation.
    pub fn vault(&self) -> Result<crate::crypto::Vault, ConfigError> {
        let mut vault = crate::crypto::Vault::new(&*self.master_key()?);
        for old in self.previous_master_keys()? {
            vault = vault.with_previous(&old);
        }
        Ok(vault)
    }
}

fn decode_key(key: &str, source: &str) -> Result<Zeroizing<[u8; 32]>, ConfigError> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .map_err(|_| ConfigError(format!("{source}: not valid base64")))?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(ConfigError(format!(
            "{source}: must decode to exactly 32 bytes"
        )));
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

// SMTP submission (issue 14).
impl Settings {
    fn validate_submission(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        let s = &self.submission;
        for (key, bind) in [
            ("submission.bind", &s.bind),
            ("submission.tls_bind", &s.tls_bind),
        ] {
            if !bind.is_empty() && bind.parse::<SocketAddr>().is_err() {
                return fail(key, "expected host:port or empty");
            }
        }
        if s.tls_cert_file.is_empty() != s.tls_key_file.is_empty() {
            return fail(
                "submission.tls_cert_file",
                "tls_cert_file and tls_key_file go together",
            );
        }
        if !s.tls_bind.is_empty() && s.tls_cert_file.is_empty() {
            return fail("submission.tls_bind", "needs submission.tls_cert_file");
        }
        if s.max_connections == 0 || s.max_connections_per_ip == 0 {
            return fail("submission.max_connections", "must be at least 1");
        }
        if s.max_inflight_bytes < self.limits.max_message_bytes {
            return fail(
                "submission.max_inflight_bytes",
                "must be at least limits.max_message_bytes",
            );
        }
        if s.max_connections_per_tenant == 0 {
            return fail(
                "submission.max_connections_per_tenant",
                "must be at least 1",
            );
        }
        if s.command_timeout_secs == 0 {
            return fail("submission.command_timeout_secs", "must be at least 1");
        }
        if s.data_timeout_secs == 0 {
            return fail("submission.data_timeout_secs", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(tweak: impl FnOnce(&mut Settings)) -> Option<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut s = Settings::load_layers(&dir, Some("test"), false).expect("test settings");
        tweak(&mut s);
        s.validate().err().map(|e| e.0)
    }

    #[test]
    fn render_shares_waits_and_attachment_counts_are_bounded() {
        assert_eq!(refused(|_| {}), None);
        assert_eq!(refused(|s| s.limits.max_attachments = 100), None);
        let per_tenant = "templates.render_processes_per_tenant";
        for (tweak, key) in [
            (
                Box::new(|s: &mut Settings| s.limits.max_attachments = 101)
                    as Box<dyn FnOnce(&mut Settings)>,
                "limits.max_attachments",
            ),
            (
                Box::new(|s: &mut Settings| s.templates.render_processes_per_tenant = 0),
                per_tenant,
            ),
            (
                Box::new(|s: &mut Settings| {
                    s.templates.render_processes = 2;
                    s.templates.render_processes_per_tenant = 3;
                }),
                per_tenant,
            ),
            (
                Box::new(|s: &mut Settings| s.templates.render_wait_ms = 0),
                "templates.render_wait_ms",
            ),
            (
                Box::new(|s: &mut Settings| s.templates.render_wait_ms = 600_001),
                "templates.render_wait_ms",
            ),
        ] {
            let why = refused(tweak).unwrap_or_default();
            assert!(why.starts_with(key), "{key}: {why}");
        }
        assert_eq!(
            refused(|s| {
                s.templates.render_processes = 4;
                s.templates.render_processes_per_tenant = 4;
                s.templates.render_wait_ms = 600_000;
            }),
            None
        );
    }

    fn test_settings() -> Settings {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        Settings::load_layers(&dir, Some("test"), false).expect("test settings")
    }

    #[test]
    fn quota_chunk_and_lease_secs_are_bounded_and_named() {
        let mut s = test_settings();
        s.limits.quota_chunk = 1_000_000;
        s.cluster.lease_secs = 3600;
        assert!(s.validate().is_ok());
        s.limits.quota_chunk = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .starts_with("limits.quota_chunk"));
        s.limits.quota_chunk = 1_000_001;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .starts_with("limits.quota_chunk"));
        s.limits.quota_chunk = 1;
        s.cluster.lease_secs = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .starts_with("cluster.lease_secs"));
        s.cluster.lease_secs = 3601;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .starts_with("cluster.lease_secs"));
        s.cluster.lease_secs = 1;
        assert!(s.validate().is_ok());
    }
}
