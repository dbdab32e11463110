//! Opens and clicks are answered first and written after: each hit goes to
//! a bounded in-memory channel, a writer task takes what is there in
//! batches and writes them with one transaction each ([`super::model`]).
//!
//! Bounds: the channel holds `tracking.max_pending_events`; one client
//! address (IPv6: its /64) has at most `tracking.max_pending_per_address`
//! of them waiting. A hit past either bound is dropped (counted in
//! `tracking_events_dropped_total`); the redirect or pixel is answered all
//! the same. So a flood from one address can neither grow memory nor
//! push out others' events.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::machine::{Detector, Reason};
use super::model::{self, First};
use super::token::{Kind, Link};
use crate::db::{self, PgPool};
use crate::emails::model::NewEvent;

/// Hits written per transaction at most.
const BATCH: usize = 500;
/// Longest user agent kept (characters).
const MAX_USER_AGENT: usize = 512;

/// One open or click as the request showed it.
#[derive(Clone, Debug)]
pub struct Hit {
    pub link: Link,
    pub at: DateTime<Utc>,
    pub ip: Option<IpAddr>,
    pub user_agent: String,
    /// What the request itself gave away (HEAD, proxy, scanner agent).
    pub reason: Option<Reason>,
}

/// The address a hit is counted under: IPv4 as is, IPv6 by its /64.
fn source(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.map(|ip| match ip {
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(
                seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0,
            ))
        }
        v4 => v4,
    })
}

/// The producer side: handlers push hits here.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<(Option<IpAddr>, Hit)>,
    pending: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
    per_address: usize,
}

impl Sink {
    /// A sink and the receiver its writer drains.
    pub fn new(capacity: usize, per_address: usize) -> (Sink, Receiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let pending = Arc::new(Mutex::new(HashMap::new()));
        (
            Sink {
                tx,
                pending: pending.clone(),
                per_address,
            },
            Receiver { rx, pending },
        )
    }

    /// Queues a hit; `false` when it was dropped at a bound.
    pub fn push(&self, mut hit: Hit) -> bool {
        if hit.user_agent.len() > MAX_USER_AGENT {
            let mut end = MAX_USER_AGENT;
            while !hit.user_agent.is_char_boundary(end) {
                end -= 1;
            }
            hit.user_agent.truncate(end);
        }
        let key = source(hit.ip);
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let n = pending.entry(key).or_insert(0);
            if *n >= self.per_address {
                dropped();
                return false;
            }
            *n += 1;
        }
        if self.tx.try_send((key, hit)).is_err() {
            release(&self.pending, key);
            dropped();
            return false;
        }
        true
    }

    /// Hits waiting, all sources together, and how many sources (tests).
    pub fn pending(&self) -> (usize, usize) {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        (pending.values().sum(), pending.len())
    }

    /// Hits waiting from `ip`'s source (tests).
    pub fn pending_from(&self, ip: IpAddr) -> usize {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.get(&source(Some(ip))).copied().unwrap_or(0)
    }
}

fn release(pending: &Mutex<HashMap<Option<IpAddr>, usize>>, key: Option<IpAddr>) {
    let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = pending.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            pending.remove(&key);
        }
    }
}

fn dropped() {
    static C: std::sync::OnceLock<Option<prometheus::IntCounter>> = std::sync::OnceLock::new();
    if let Some(c) = C.get_or_init(|| {
        let c = prometheus::IntCounter::new(
            "tracking_events_dropped_total",
            "Opens and clicks not recorded: past tracking.max_pending_events or max_pending_per_address",
        )
        .ok()?;
        crate::metrics::register(Box::new(c.clone()));
        Some(c)
    }) {
        c.inc();
    }
}

/// The writer's side of the channel.
pub struct Receiver {
    rx: mpsc::Receiver<(Option<IpAddr>, Hit)>,
    pending: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
}

impl Receiver {
    /// Waits for hits, then takes up to [`BATCH`] of them.
    async fn next_batch(&mut self) -> Option<Vec<Hit>> {
        let first = self.rx.recv().await?;
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match self.rx.try_recv() {
                Ok(h) => batch.push(h),
                Err(_) => break,
            }
        }
        let mut hits = Vec::with_capacity(batch.len());
        for (key, hit) in batch {
            release(&self.pending, key);
            hits.push(hit);
        }
        Some(hits)
    }
}

/// The writer task: batches until every sink is gone.
pub async fn run(pool: PgPool, detector: Detector, mut rx: Receiver) {
    // The last click per copy (message, recipient): several links within
    // a second is a scanner. Bounded; an entry older than 10 s is useless.
    let last_click: moka::sync::Cache<(Uuid, Option<String>), (String, DateTime<Utc>)> =
        moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(10))
            .build();
    while let Some(hits) = rx.next_batch().await {
        let keys: Vec<(Uuid, Uuid)> = hits
            .iter()
            .map(|h| (h.link.tenant_id, h.link.email_id))
            .collect();
        let found = match db::run(&pool, move |c| Ok(model::delivered_at(c, &keys)?)).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, count = hits.len(), "tracking events not written");
                continue;
            }
        };
        let (mut events, mut opens, mut clicks) = (Vec::new(), Vec::new(), Vec::new());
        for h in hits {
            // Purged or deleted: the link still worked, nothing to record on.
            let Some(delivered) = found.get(&(h.link.tenant_id, h.link.email_id)) else {
                continue;
            };
            let reason = h.reason.or_else(|| match h.link.kind {
                Kind::Open => None,
                Kind::Click => {
                    let copy = (h.link.email_id, h.link.recipient.clone());
                    let url = h.link.url.clone().unwrap_or_default();
                    let other = last_click
                        .get(&copy)
                        .filter(|(u, _)| *u != url)
                        .map(|(_, at)| at);
                    last_click.insert(copy, (url, h.at));
                    detector.by_timing(h.at, *delivered, other)
                }
            });
            if let (None, Some(r)) = (reason, h.link.recipient.clone()) {
                let first = First {
                    tenant_id: h.link.tenant_id,
                    email_id: h.link.email_id,
                    recipient: r,
                    at: h.at,
                };
                match h.link.kind {
                    Kind::Open => opens.push(first),
                    Kind::Click => clicks.push(first),
                }
            }
            events.push(event(&h, reason));
        }
        let wrote = db::run(&pool, move |c| {
            Ok(model::write(c, &events, &opens, &clicks)?)
        })
        .await;
        if let Err(e) = wrote {
            tracing::warn!(error = %e, "tracking events not written");
        }
    }
}

/// The timeline event; `detail.tracking` is what the webhook's `data`
/// gains (`webhooks::outbox`).
fn event(h: &Hit, reason: Option<Reason>) -> NewEvent {
    let mut tracking = json!({
        "user_agent": h.user_agent,
        "ip": h.ip.map(|i| i.to_string()),
        "machine": reason.is_some(),
        "machine_reason": reason.map(Reason::as_str),
    });
    if let Some(url) = &h.link.url {
        tracking["url"] = json!(url);
    }
    NewEvent {
        tenant_id: h.link.tenant_id,
        email_id: h.link.email_id,
        kind: match h.link.kind {
            Kind::Open => "email.opened",
            Kind::Click => "email.clicked",
        }
        .into(),
        detail: json!({ "recipient": h.link.recipient, "tracking": tracking }),
        at: h.at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(ip: &str) -> Hit {
        Hit {
            link: Link {
                kind: Kind::Open,
                tenant_id: Uuid::new_v4(),
                email_id: Uuid::new_v4(),
                recipient: None,
                url: None,
            },
            at: Utc::now(),
            ip: ip.parse().ok(),
            user_agent: "x".repeat(2000),
            reason: None,
        }
    }

    #[tokio::test]
    async fn one_address_is_held_at_its_bound_and_others_still_get_in() {
        let (sink, mut rx) = Sink::new(10, 3);
        for _ in 0..3 {
            assert!(sink.push(hit("192.0.2.1")));
        }
        assert!(!sink.push(hit("192.0.2.1")), "past the per-address bound");
        assert_eq!(sink.pending_from("192.0.2.1".parse().unwrap()), 3);
        // The /64 of an IPv6 address counts as one source.
        for i in 1..=3 {
            assert!(sink.push(hit(&format!("2001:db8::{i}"))));
        }
        assert!(!sink.push(hit("2001:db8::ffff")));
        for i in 0..4 {
            assert!(sink.push(hit(&format!("198.51.100.{i}"))));
        }
        assert!(!sink.push(hit("203.0.113.9")), "past the channel's bound");
        let batch = rx.next_batch().await.unwrap();
        assert_eq!(batch.len(), 10);
        assert!(batch.iter().all(|h| h.user_agent.len() == MAX_USER_AGENT));
        assert_eq!(sink.pending_from("192.0.2.1".parse().unwrap()), 0);
        assert!(sink.push(hit("192.0.2.1")), "room again once written");
        assert!(rx.pending.lock().unwrap().len() == 1);
    }
}
