//! Per-site metrics of direct delivery, labelled by egress pool and site
//! (shaping is per (pool, site), issue 26). The `site` label is a site
//! rule's name or `other` and `pool` a configured pool name or `default`:
//! both bounded by the configuration, never one per domain or per tenant.
//! Per egress pool (issue 26; `pool` is a configured pool name
//! or `default`, never a tenant): open connections, connections opened, and
//! messages sent by outcome in every mode.

use std::sync::OnceLock;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

struct Mx {
    connections: IntGaugeVec,
    opened: IntCounterVec,
    deferrals: IntCounterVec,
    slowdowns: IntCounterVec,
    rate: GaugeVec,
    pool_connections: IntGaugeVec,
    pool_opened: IntCounterVec,
    pool_messages: IntCounterVec,
}

fn get() -> Option<&'static Mx> {
    static MX: OnceLock<Option<Mx>> = OnceLock::new();
    MX.get_or_init(|| {
        let built = (|| -> prometheus::Result<Mx> {
            let m = Mx {
                connections: IntGaugeVec::new(
                    Opts::new(
                        "mx_site_connections",
                        "Open SMTP connections per destination site",
                    ),
                    &["pool", "site"],
                )?,
                opened: IntCounterVec::new(
                    Opts::new(
                        "mx_site_connections_opened_total",
                        "SMTP connections opened per destination site",
                    ),
                    &["pool", "site"],
                )?,
                deferrals: IntCounterVec::new(
                    Opts::new(
                        "mx_site_deferrals_total",
                        "Recipient domains deferred per destination site",
                    ),
                    &["pool", "site"],
                )?,
                slowdowns: IntCounterVec::new(
                    Opts::new(
                        "mx_site_slowdowns_total",
                        "421 / 4.7.x replies that halved a site's rate",
                    ),
                    &["pool", "site"],
                )?,
                rate: GaugeVec::new(
                    Opts::new(
                        "mx_site_rate_per_minute",
                        "Messages per minute a site is allowed now",
                    ),
                    &["pool", "site"],
                )?,
                pool_connections: IntGaugeVec::new(
                    Opts::new(
                        "mx_pool_connections",
                        "Open SMTP connections to MX hosts per egress pool",
                    ),
                    &["pool"],
                )?,
                pool_opened: IntCounterVec::new(
                    Opts::new(
                        "mx_pool_connections_opened_total",
                        "SMTP connections to MX hosts opened per egress pool",
                    ),
                    &["pool"],
                )?,
                pool_messages: IntCounterVec::new(
                    Opts::new(
                        "pool_messages_total",
                        "Delivery attempts per egress pool by outcome",
                    ),
                    &["pool", "outcome"],
                )?,
            };
            crate::metrics::register(Box::new(m.pool_connections.clone()));
            crate::metrics::register(Box::new(m.pool_opened.clone()));
            crate::metrics::register(Box::new(m.pool_messages.clone()));
            crate::metrics::register(Box::new(m.connections.clone()));
            crate::metrics::register(Box::new(m.opened.clone()));
            crate::metrics::register(Box::new(m.deferrals.clone()));
            crate::metrics::register(Box::new(m.slowdowns.clone()));
            crate::metrics::register(Box::new(m.rate.clone()));
            Ok(m)
        })();
        built.ok()
    })
    .as_ref()
}

pub fn opened(pool: &str, site: &str) {
    if let Some(m) = get() {
        m.opened.with_label_values(&[pool, site]).inc();
        m.connections.with_label_values(&[pool, site]).inc();
    }
}

pub fn closed(pool: &str, site: &str) {
    if let Some(m) = get() {
        m.connections.with_label_values(&[pool, site]).dec();
    }
}

pub fn deferred(pool: &str, site: &str) {
    if let Some(m) = get() {
        m.deferrals.with_label_values(&[pool, site]).inc();
    }
}

pub fn slowdown(pool: &str, site: &str, rate: f64) {
    if let Some(m) = get() {
        m.slowdowns.with_label_values(&[pool, site]).inc();
        m.rate.with_label_values(&[pool, site]).set(rate);
    }
}

pub fn rate(pool: &str, site: &str, rate: f64) {
    if let Some(m) = get() {
        m.rate.with_label_values(&[pool, site]).set(rate);
    }
}

pub fn pool_opened(pool: &str) {
    if let Some(m) = get() {
        m.pool_opened.with_label_values(&[pool]).inc();
        m.pool_connections.with_label_values(&[pool]).inc();
    }
}

pub fn pool_closed(pool: &str) {
    if let Some(m) = get() {
        m.pool_connections.with_label_values(&[pool]).dec();
    }
}

/// One delivery attempt through `pool` (any mode) and its outcome label.
pub fn pool_sent(pool: &str, outcome: &str) {
    if let Some(m) = get() {
        m.pool_messages.with_label_values(&[pool, outcome]).inc();
    }
}
