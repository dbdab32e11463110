//! Per-site metrics of direct delivery. The `site` label is a site rule's
//! name or `other`: bounded by the configuration, never one per domain or
//! per tenant.

use std::sync::OnceLock;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

struct Mx {
    connections: IntGaugeVec,
    opened: IntCounterVec,
    deferrals: IntCounterVec,
    slowdowns: IntCounterVec,
    rate: GaugeVec,
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
                    &["site"],
                )?,
                opened: IntCounterVec::new(
                    Opts::new(
                        "mx_site_connections_opened_total",
                        "SMTP connections opened per destination site",
                    ),
                    &["site"],
                )?,
                deferrals: IntCounterVec::new(
                    Opts::new(
                        "mx_site_deferrals_total",
                        "Recipient domains deferred per destination site",
                    ),
                    &["site"],
                )?,
                slowdowns: IntCounterVec::new(
                    Opts::new(
                        "mx_site_slowdowns_total",
                        "421 / 4.7.x replies that halved a site's rate",
                    ),
                    &["site"],
                )?,
                rate: GaugeVec::new(
                    Opts::new(
                        "mx_site_rate_per_minute",
                        "Messages per minute a site is allowed now",
                    ),
                    &["site"],
                )?,
            };
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

pub fn opened(site: &str) {
    if let Some(m) = get() {
        m.opened.with_label_values(&[site]).inc();
        m.connections.with_label_values(&[site]).inc();
    }
}

pub fn closed(site: &str) {
    if let Some(m) = get() {
        m.connections.with_label_values(&[site]).dec();
    }
}

pub fn deferred(site: &str) {
    if let Some(m) = get() {
        m.deferrals.with_label_values(&[site]).inc();
    }
}

pub fn slowdown(site: &str, rate: f64) {
    if let Some(m) = get() {
        m.slowdowns.with_label_values(&[site]).inc();
        m.rate.with_label_values(&[site]).set(rate);
    }
}

pub fn rate(site: &str, rate: f64) {
    if let Some(m) = get() {
        m.rate.with_label_values(&[site]).set(rate);
    }
}
