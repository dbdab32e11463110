//! A site's limits shared by every node (issue 27, DESIGN §15): with
//! `serve`/`worker` nodes on one Postgres, a site's `max_connections` and
//! `messages_per_minute` hold for the cluster, not per node.
//!
//! - Connections are a concurrency budget ([`crate::cluster::slots`]): each
//!   open session to the site holds a slot of `mx_conn:<site>`; the node
//!   leases slots one at a time, reuses them in memory, and gives back those
//!   unheld for a renewal period. A message that needs a new session and
//!   finds no slot within `max_wait_ms` goes back to the queue (throttled).
//! - The rate is a leased rate budget ([`crate::cluster::rate`]) of
//!   `mx_rate:<site>` per fixed window of `site_rate_window_secs`, the limit
//!   scaled to the window (rounded up) and to the slow-down in force. The
//!   node's own GCRA (bursts) still applies on top, per node.
//! - A 421 / 4.7.x "slow down" seen by one node halves the site's rate on
//!   every node (`super::slowdowns`, through the `mx_slowdowns` table).
//! - A site one node found down (every address unreachable) is down for
//!   every node until its marking ends (`super::downs`, `mx_site_downs`).
//!
//! The site is named by the key shaping gives it ([`Site::key`], opaque
//! here); keys longer than 100 bytes (a long MX host set) are hashed.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::shaping::Site;
use crate::cluster::rate::Rates;
use crate::cluster::slots::{Slot, Slots, REFUSAL};

/// How long an idle session is kept with shared limits (it holds a slot).
pub const IDLE: Duration = Duration::from_secs(2);

/// The cluster side of site shaping.
#[derive(Clone)]
pub struct SharedSites {
    rates: Rates,
    slots: Slots,
    window_secs: u64,
    /// Slow-downs seen by any node (`super::slowdowns`).
    slowdowns: super::slowdowns::Slowdowns,
    /// Sites marked down by any node (`super::downs`).
    downs: super::downs::Downs,
}

impl std::fmt::Debug for SharedSites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSites")
            .field("window_secs", &self.window_secs)
            .finish()
    }
}

/// The budget name of a site (bounded: long keys are hashed).
pub fn budget_name(what: &str, site_key: &str) -> String {
    if site_key.len() <= 100 {
        format!("{what}:{site_key}")
    } else {
        format!(
            "{what}:sha256:{}",
            hex::encode(Sha256::digest(site_key.as_bytes()))
        )
    }
}

/// A site's `messages_per_minute` scaled to a window of `window_secs`.
pub fn window_limit(per_minute: u32, window_secs: u64) -> i64 {
    (i64::from(per_minute) * window_secs as i64 + 59) / 60
}

impl SharedSites {
    /// On the node's rates (its holder id and pool); the slots' renewer is
    /// started with [`SharedSites::spawn_renewer`].
    /// `slowdown`: `delivery.mx.slowdown_secs`.
    pub fn new(
        rates: &Rates,
        lease_secs: u64,
        window_secs: u64,
        slowdown: Duration,
    ) -> SharedSites {
        SharedSites {
            slots: rates.slots(lease_secs),
            rates: rates.clone(),
            window_secs: window_secs.clamp(1, 60),
            slowdowns: super::slowdowns::Slowdowns::new(rates.pool().clone(), slowdown),
            downs: super::downs::Downs::new(rates.pool().clone()),
        }
    }

    /// The slots' renewal and the poll of slow-downs and down markings.
    pub fn spawn_renewer(&self) -> tokio::task::JoinHandle<()> {
        let renewer = self.slots.spawn_renewer();
        let poll = self.slowdowns.clone().run(self.downs.clone());
        tokio::spawn(async move {
            let _ = tokio::join!(renewer, poll);
        })
    }

    /// `site` answered 421 / 4.7.x here: the other nodes slow down too.
    pub fn slowed(&self, site: &Site) {
        self.slowdowns.publish(site);
    }

    /// This node found every address of `site` unreachable and marked it
    /// down for `for_`: the other nodes defer its mail too.
    pub fn marked_down(&self, site: &Site, for_: Duration) {
        self.downs.publish(site, for_);
    }

    /// Whether `site` is down, here or as another node marked it (in
    /// memory; the marking is read once a second).
    pub fn down(&self, site: &Site) -> bool {
        self.downs.apply(site);
        site.is_down()
    }

    /// A connection slot of the site, waiting until `deadline`; else how
    /// long to wait before trying again.
    pub async fn connection(&self, site: &Site, deadline: Instant) -> Result<Slot, Duration> {
        let name = budget_name("mx_conn", site.key.as_str());
        let limit = site.limits.max_connections as i64;
        loop {
            if let Some(slot) = self.slots.take(&name, limit).await {
                return Ok(slot);
            }
            if Instant::now() + REFUSAL > deadline {
                return Err(Duration::from_secs(1));
            }
            tokio::time::sleep(REFUSAL).await;
        }
    }

    /// One message of the site's rate, waiting until `deadline` for the next
    /// window; else how long until it begins.
    pub async fn rate(&self, site: &Site, deadline: Instant) -> Result<(), Duration> {
        // Another node's slow-down halves this site here too, and the
        // cluster's budget follows the rate in force.
        self.slowdowns.apply(site);
        let name = budget_name("mx_rate", site.key.as_str());
        let per_minute = site.current_rate().ceil().max(1.0) as u32;
        let limit = window_limit(per_minute, self.window_secs);
        loop {
            let a = self
                .rates
                .admit(Uuid::nil(), &name, limit, self.window_secs)
                .await;
            if a.admitted {
                return Ok(());
            }
            let wait = Duration::from_secs(a.reset_secs);
            if Instant::now() + wait > deadline {
                return Err(wait);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Connection slots of a site this node holds now (tests).
    pub fn held(&self, site_key: &str) -> i64 {
        self.slots.held(&budget_name("mx_conn", site_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_limits_round_up_and_long_keys_are_hashed() {
        assert_eq!(window_limit(600, 60), 600);
        assert_eq!(window_limit(600, 5), 50);
        assert_eq!(window_limit(1, 1), 1);
        assert_eq!(budget_name("mx_conn", "rule:google"), "mx_conn:rule:google");
        let long = "mx.example.test,".repeat(20);
        let name = budget_name("mx_conn", &long);
        assert!(name.len() < 100 && name.starts_with("mx_conn:sha256:"));
    }
}
