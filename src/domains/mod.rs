//! Sending domains (API.md "Sending domains"): per-tenant domains verified by
//! DNS, their DKIM keys (sealed), the sending rule for the From domain, DKIM
//! signing in the worker, and the periodic recheck.

pub mod checks;
pub mod events;
pub mod input;
pub mod keys;
pub mod model;
pub mod routes;
pub mod sending;
pub mod service;
pub mod signing;
pub mod transition;
pub mod view;

use std::sync::Arc;

use crate::config::DomainSettings;
use crate::crypto::Vault;
use crate::db::PgPool;
use crate::dns::Dns;

/// What the domain services share (part of the app state; the worker's
/// recheck task builds its own).
#[derive(Clone)]
pub struct Domains {
    pub pool: PgPool,
    pub vault: Vault,
    pub dns: Dns,
    pub settings: Arc<DomainSettings>,
    pub rule: sending::SendingRule,
    /// `bounces.domain`: the target of each domain's return-path record.
    pub bounce_domain: Arc<str>,
    /// The inbound MX host (`inbound.mx_host`, else `bounces.domain`): the
    /// value of the `inbound` record once a route exists (issue 28).
    pub inbound_mx: Arc<str>,
    /// `tracking.domain`: the target of each domain's tracking record (issue 29).
    pub tracking_domain: Arc<str>,
}
