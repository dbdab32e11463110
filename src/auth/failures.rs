//! Failed authentications per client address (issue 11, finding 8). Every
//! well-formed token that is not in the verified cache costs a key lookup in
//! the database; a flood of made-up tokens would cost one each. After
//! `auth.failed_per_ip_per_minute` failures in a minute, an address's cache
//! misses are answered 429 before any lookup, until its window ends. Keys
//! this node has verified before (cached, or their secret proven within the
//! last hour of use) keep working, so a shared address (NAT, an office)
//! loses only keys new to this node while someone on it floods.
//!
//! IPv6 clients are counted per /64: one host usually owns the whole prefix
//! and could otherwise rotate through it.

use std::fmt::Display;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::cluster::failures::SharedFailures;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; beyond it the least recently used are dropped
/// (a dropped address starts a fresh window, so memory stays bounded even
/// under a spray of source addresses).
const MAX_TRACKED: u64 = 100_000;

/// One address's failures in its current window.
struct Window {
    started: Instant,
    failures: AtomicU32,
}

/// Failures per key in one-minute windows: client addresses here (the
/// default), and also e-mail addresses for console sign-ins (`src/console/`).
#[derive(Clone)]
pub struct FailedAuthLimiter<K = IpAddr>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    per_minute: u32,
    windows: moka::sync::Cache<K, Arc<Window>>,
    /// The same limit across the nodes (issue 27), once attached at start.
    shared: Arc<OnceLock<SharedFailures>>,
}

impl<K> FailedAuthLimiter<K>
where
    K: std::hash::Hash + Eq + Send + Sync + Clone + Display + 'static,
{
    /// `per_minute = 0` turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: moka::sync::Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_live(WINDOW)
                .build(),
            shared: Arc::default(),
        }
    }

    /// Counts failures across the nodes too (`cluster::failures`): a key
    /// is blocked when either this node's window or the cluster's is spent.
    pub fn share(&self, shared: SharedFailures) {
        let _ = self.shared.set(shared);
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Seconds until `key` may try again, when it used up its failures.
    pub fn blocked_key(&self, key: &K) -> Option<u64> {
        if self.per_minute == 0 {
            return None;
        }
        let local = self.windows.get(key).and_then(|w| {
            (w.failures.load(Ordering::Relaxed) >= self.per_minute)
                .then(|| WINDOW.saturating_sub(w.started.elapsed()).as_secs().max(1))
        });
        local.or_else(|| self.shared.get().and_then(|s| s.blocked(key)))
    }

    /// [`FailedAuthLimiter::failed_key`], counted across the nodes before
    /// it returns (so this node's next attempt sees a cluster lock-out).
    pub async fn failed_key_now(&self, key: K) {
        if self.per_minute == 0 {
            return;
        }
        if let Some(s) = self.shared.get() {
            s.failed_now(&key).await;
        }
        self.count_here(key);
    }

    /// Counts one failure of `key` (across the nodes in a task of its own).
    pub fn failed_key(&self, key: K) {
        if self.per_minute == 0 {
            return;
        }
        if let Some(s) = self.shared.get() {
            s.failed(&key);
        }
        self.count_here(key);
    }

    fn count_here(&self, key: K) {
        let w = self.windows.get_with(key, || {
            Arc::new(Window {
                started: Instant::now(),
                failures: AtomicU32::new(0),
            })
        });
        w.failures.fetch_add(1, Ordering::Relaxed);
    }
}

impl FailedAuthLimiter<IpAddr> {
    /// Seconds until `ip` may try again, when it used up its failures.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        self.blocked_key(&bucket(ip))
    }

    /// Counts one failed authentication of `ip`.
    pub fn failed(&self, ip: IpAddr) {
        self.failed_key(bucket(ip))
    }

    /// Counts one failed authentication of `ip`, across the nodes before
    /// it returns.
    pub async fn failed_now(&self, ip: IpAddr) {
        self.failed_key_now(bucket(ip)).await
    }
}

/// The unit an address is counted in: the address itself for IPv4, its /64
/// for IPv6 (an IPv4-mapped IPv6 address counts as its IPv4 address).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_counts_ipv6_per_prefix() {
        let l = FailedAuthLimiter::new(3);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let other: IpAddr = "2001:db9::1".parse().unwrap();
        for _ in 0..2 {
            l.failed(a);
        }
        assert_eq!(l.blocked(a), None);
        l.failed(b);
        assert!(l.blocked(a).is_some_and(|s| (1..=60).contains(&s)));
        assert_eq!(l.blocked(other), None);
        assert_eq!(FailedAuthLimiter::new(0).blocked(a), None);
    }
}
