//! Which addresses one attempt dials: the MX hosts in preference order, each
//! host's addresses in `ip_family` order, minus those the destination guard
//! refuses (loopback, private, link-local, CGNAT, … unless
//! `delivery.mx.allow_private_destinations`; cloud metadata always), and at
//! most `delivery.mx.max_addresses` of them.

use std::time::Instant;

use super::connect::{Dialer, Failure};
use super::resolve::Resolver;
use super::shaping::{Idle, Site};
use crate::net_guard::{Guard, Refusal};

/// The setting a refusal names.
pub(super) const GUARD_KEY: &str = "delivery.mx.allow_private_destinations";

/// How the walk ended.
pub(super) enum Reached {
    Open(Box<Idle>),
    /// Nothing was dialled: every host or address the walk met was refused
    /// by the guard. The text names the first one and the setting.
    Refused(String),
    /// Nothing took the session; `all_unreachable` when no address answered
    /// at TCP level and no DNS lookup failed (the site is then down).
    Failed {
        text: String,
        all_unreachable: bool,
    },
}

pub(super) struct Walk<'a> {
    pub resolver: &'a Resolver,
    pub dialer: &'a Dialer,
    pub guard: Guard,
    pub max_addresses: usize,
}

impl Walk<'_> {
    pub async fn reach(&self, site: &Site, hosts: &[String], email_id: uuid::Uuid) -> Reached {
        let mut all_unreachable = true;
        let mut last = String::from("no address for any MX host");
        let mut refused: Option<String> = None;
        let mut dialled = 0;
        'hosts: for host in hosts {
            if let Err(r) = self.guard.check_host(host) {
                refused.get_or_insert_with(|| refusal(host, &r));
                continue;
            }
            let addrs = match self.resolver.addresses(host).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::info!(%email_id, %host, error = %e, "MX host address lookup failed");
                    all_unreachable = false;
                    last = "DNS lookup of an MX host failed".into();
                    continue;
                }
            };
            for addr in addrs.iter() {
                if let Err(r) = self.guard.check_ip(*addr) {
                    tracing::info!(%email_id, %host, %addr, reason = %r, "MX address refused by the guard");
                    refused.get_or_insert_with(|| refusal(host, &r));
                    continue;
                }
                if dialled == self.max_addresses {
                    tracing::info!(%email_id, limit = dialled, "delivery.mx.max_addresses reached");
                    break 'hosts;
                }
                dialled += 1;
                match self.dialer.open(host, *addr, &site.label).await {
                    Ok(conn) => {
                        return Reached::Open(Box::new(Idle {
                            conn,
                            host: host.clone(),
                            sent: 0,
                            since: Instant::now(),
                            slot: None,
                        }))
                    }
                    Err(Failure::Unreachable(why)) => {
                        tracing::info!(%email_id, %host, %addr, reason = %why, "MX host unreachable");
                        last = why;
                    }
                    Err(Failure::Session { text, slow_down }) => {
                        tracing::info!(%email_id, %host, %addr, reason = %text, "MX session failed");
                        all_unreachable = false;
                        if slow_down {
                            site.slow_down();
                        }
                        last = text;
                    }
                }
            }
        }
        match refused {
            Some(why) if dialled == 0 && all_unreachable => Reached::Refused(why),
            Some(why) => Reached::Failed {
                text: format!("{last}; also {why}"),
                all_unreachable,
            },
            None => Reached::Failed {
                text: last,
                all_unreachable,
            },
        }
    }
}

fn refusal(host: &str, r: &Refusal) -> String {
    format!("MX host {host} refused: {}", r.explained(GUARD_KEY))
}
