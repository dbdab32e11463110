//! What every handler shares.

use std::sync::Arc;

use crate::auth::AuthService;
use crate::config::Settings;
use crate::crypto::Vault;
use crate::db::PgPool;
use crate::domains::Domains;
use crate::oauth::OAuthService;
use crate::queue::ingest::Ingestor;
use crate::tenants::cache::TenantCache;
use crate::usage::counter::RequestCounter;
use crate::webhooks::sender::Sender;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    pub vault: Vault,
    pub auth: AuthService,
    /// OAuth clients, the token endpoint and bearer access tokens.
    pub oauth: OAuthService,
    pub tenants: TenantCache,
    pub ingest: Ingestor,
    /// This process's leases of shared budgets (the daily quota).
    pub budgets: crate::cluster::Budgets,
    /// This process in the node registry (its id is the budgets' holder).
    pub registry: crate::cluster::node::Registry,
    /// Cluster-wide rates (`requests_per_minute`) on leased window budgets.
    pub rates: crate::cluster::rate::Rates,
    /// Sends `POST …/webhooks/{id}/test` pings (through the SSRF guard).
    pub webhook_sender: Sender,
    pub requests: RequestCounter,
    /// Sending domains: DNS checks and the From-domain rule.
    pub domains: Domains,
    /// `/metrics` queue gauges, counted at most once per period.
    pub queue_depth: crate::metrics::QueueDepth,
    /// Renders tenant templates in memory-bounded child processes.
    pub renderer: crate::templates::sandbox::Sandbox,
    /// The web console's sign-in throttles (`src/console/`).
    pub console: crate::console::ConsoleState,
    /// Paused tenants (reputation), checked by every send path in memory.
    pub reputation: crate::reputation::Gate,
    /// Open and click tracking: link keys, machine detection, events' sink.
    pub tracking: crate::tracking::Tracking,
}
