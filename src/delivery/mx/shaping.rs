//! Traffic shaping per destination site: the set of MX hosts of a domain, so
//! `gmail.com` and every Google Workspace domain share Google's limits. Each
//! site has a connection bound (slots handed out round-robin by tenant,
//! `gate`, so the queue's tenant fairness holds inside the site), a cap on
//! messages per connection, and a rate (GCRA, bursts of up to
//! `max_connections`). A 421 or 4.7.x "slow down" halves the rate for
//! `slowdown_secs`; each quiet period after that doubles it back to its limit.
//! A site whose every host failed to connect is "down" for `down_secs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::connect::Conn;
use super::gate::Gate;
use super::metrics;
use super::settings::{MxSettings, SiteRule};
use crate::delivery::pools::SiteKey;

/// Starting points for the big providers (after KumoMTA's shaping table;
/// not published by the providers): name, MX suffixes, connections,
/// messages per connection, messages per minute. `delivery.mx.sites`
/// replaces a rule of the same name.
pub const BUILTIN: &[(&str, &[&str], usize, u32, u32)] = &[
    ("google", &["google.com", "googlemail.com"], 5, 50, 600),
    ("microsoft", &["outlook.com", "hotmail.com"], 5, 50, 300),
    ("yahoo", &["yahoodns.net"], 5, 20, 300),
    ("apple", &["icloud.com", "me.com"], 5, 50, 300),
];

/// The slowest a slowed site goes: 1/64 of its limit.
const MIN_FACTOR: f64 = 1.0 / 64.0;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub messages_per_connection: u32,
    pub messages_per_minute: u32,
}

/// The rules in matching order: configured ones, then the built-ins not
/// replaced by name.
pub fn rules(settings: &MxSettings) -> Vec<SiteRule> {
    let mut rules = settings.sites.clone();
    for (name, suffixes, conns, per_conn, per_minute) in BUILTIN {
        if !rules.iter().any(|r| r.name == *name) {
            rules.push(SiteRule {
                name: name.to_string(),
                mx_suffixes: suffixes.iter().map(|s| s.to_string()).collect(),
                max_connections: *conns,
                messages_per_connection: *per_conn,
                messages_per_minute: *per_minute,
            });
        }
    }
    rules
}

fn matches(host: &str, suffix: &str) -> bool {
    let suffix = suffix.trim_start_matches('.').to_ascii_lowercase();
    host == suffix || host.ends_with(&format!(".{suffix}"))
}

/// An open session kept for the next message to the same site.
pub struct Idle {
    pub conn: Conn,
    pub host: String,
    /// Transactions done on it so far.
    pub sent: u32,
    pub since: Instant,
    /// The site's cluster-wide connection slot the session holds (issue 27;
    /// `None` without shared limits): freed when the session is dropped.
    pub slot: Option<crate::cluster::slots::Slot>,
}

struct State {
    /// GCRA: the theoretical arrival time of the next message.
    tat: Instant,
    /// The share of `messages_per_minute` in force (1 = the limit).
    factor: f64,
    /// While slowed: when the factor next doubles.
    slowed_until: Option<Instant>,
    down_until: Option<Instant>,
}

pub struct Site {
    /// (pool, site): what the limits below are keyed by.
    pub key: SiteKey,
    /// The egress pool (a metrics label with `label`).
    pub pool: String,
    /// The rule's name, or `other` for sites without one (the metrics label:
    /// bounded by the rules, never one per domain).
    pub label: String,
    pub limits: Limits,
    /// Connection slots, round-robin by tenant.
    pub permits: Arc<Gate>,
    pub idle: Mutex<Vec<Idle>>,
    state: Mutex<State>,
    slowdown: Duration,
    last_used: Mutex<Instant>,
}

impl Site {
    fn new(key: SiteKey, pool: &str, label: String, limits: Limits, slowdown: Duration) -> Site {
        metrics::rate(pool, &label, f64::from(limits.messages_per_minute));
        Site {
            key,
            pool: pool.to_string(),
            permits: Gate::new(limits.max_connections),
            label,
            limits,
            idle: Mutex::new(Vec::new()),
            state: Mutex::new(State {
                tat: Instant::now(),
                factor: 1.0,
                slowed_until: None,
                down_until: None,
            }),
            slowdown,
            last_used: Mutex::new(Instant::now()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn idle_list(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages per minute now (after any slowdown and its recovery).
    pub fn current_rate(&self) -> f64 {
        let mut st = self.state();
        self.recover(&mut st, Instant::now());
        f64::from(self.limits.messages_per_minute) * st.factor
    }

    fn recover(&self, st: &mut State, now: Instant) {
        while let Some(until) = st.slowed_until {
            if now < until {
                break;
            }
            st.factor = (st.factor * 2.0).min(1.0);
            st.slowed_until = (st.factor < 1.0).then(|| until + self.slowdown);
            metrics::rate(
                &self.pool,
                &self.label,
                f64::from(self.limits.messages_per_minute) * st.factor,
            );
        }
    }

    /// Takes a rate slot now, or says how long until one is free.
    pub fn reserve(&self) -> Result<(), Duration> {
        let now = Instant::now();
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = now;
        let mut st = self.state();
        self.recover(&mut st, now);
        let per_minute = f64::from(self.limits.messages_per_minute) * st.factor;
        let interval = Duration::from_secs_f64(60.0 / per_minute.max(1e-3));
        let burst = interval.mul_f64(self.limits.max_connections.saturating_sub(1) as f64);
        let allowed_at = st.tat.checked_sub(burst).unwrap_or(now);
        if now < allowed_at {
            return Err(allowed_at - now);
        }
        st.tat = st.tat.max(now) + interval;
        Ok(())
    }

    /// A 421 / 4.7.x "slow down": halve the rate (not below 1/64) for a while.
    pub fn slow_down(&self) {
        let now = Instant::now();
        let mut st = self.state();
        self.recover(&mut st, now);
        st.factor = (st.factor / 2.0).max(MIN_FACTOR);
        st.slowed_until = Some(now + self.slowdown);
        let rate = f64::from(self.limits.messages_per_minute) * st.factor;
        drop(st);
        metrics::slowdown(&self.pool, &self.label, rate);
        tracing::info!(pool = %self.pool, site = %self.label, rate_per_minute = rate, "destination asked to slow down");
    }

    pub fn mark_down(&self, for_: Duration) {
        self.state().down_until = Some(Instant::now() + for_);
    }

    /// Down until `end` (a later end already set stays).
    pub fn mark_down_until(&self, end: Instant) {
        let mut st = self.state();
        st.down_until = Some(st.down_until.map_or(end, |u| u.max(end)));
    }

    pub fn mark_up(&self) {
        self.state().down_until = None;
    }

    pub fn is_down(&self) -> bool {
        self.state().down_until.is_some_and(|u| Instant::now() < u)
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

/// Every site this node delivers to, at most `max_sites` (the one idle
/// longest is forgotten first; a site in use is never dropped).
pub struct Sites {
    rules: Vec<SiteRule>,
    defaults: Limits,
    slowdown: Duration,
    max_sites: usize,
    sites: Mutex<HashMap<SiteKey, Arc<Site>>>,
}

impl Sites {
    pub fn new(settings: &MxSettings) -> Sites {
        Sites {
            rules: rules(settings),
            defaults: Limits {
                max_connections: settings.default_max_connections.max(1),
                messages_per_connection: settings.default_messages_per_connection.max(1),
                messages_per_minute: settings.default_messages_per_minute.max(1),
            },
            slowdown: Duration::from_secs(settings.slowdown_secs.max(1)),
            max_sites: settings.max_sites.max(1),
            sites: Mutex::new(HashMap::new()),
        }
    }

    /// The site of a domain with these MX hosts as seen from egress pool
    /// `pool`: the first rule one of them matches, else the host set itself.
    /// Each pool has its own limits at a site ([`SiteKey`]).
    pub fn site_for(&self, pool: &str, hosts: &[String]) -> Arc<Site> {
        let rule = self.rules.iter().find(|r| {
            hosts
                .iter()
                .any(|h| r.mx_suffixes.iter().any(|s| matches(h, s)))
        });
        let (key, label, limits) = match rule {
            Some(r) => (
                format!("rule:{}", r.name),
                r.name.clone(),
                Limits {
                    max_connections: r.max_connections.max(1),
                    messages_per_connection: r.messages_per_connection.max(1),
                    messages_per_minute: r.messages_per_minute.max(1),
                },
            ),
            None => {
                let mut set = hosts.to_vec();
                set.sort();
                (set.join(","), "other".to_string(), self.defaults.clone())
            }
        };
        let key = SiteKey::new(pool, &key);
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(site) = sites.get(&key) {
            return site.clone();
        }
        // Over the bound only while more sites than max_sites are in use
        // (at most the messages in flight); shrinks back as they end.
        while sites.len() >= self.max_sites {
            let victim = sites
                .iter()
                .filter(|(_, s)| Arc::strong_count(s) == 1)
                .max_by_key(|(_, s)| s.idle_for())
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => sites.remove(&k),
                None => break,
            };
        }
        let site = Arc::new(Site::new(key.clone(), pool, label, limits, self.slowdown));
        sites.insert(key, site.clone());
        site
    }

    pub fn len(&self) -> usize {
        self.sites.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Takes every idle session older than `idle_timeout` out of every
    /// site, so sites no longer sent to do not keep sockets open.
    pub fn take_expired(&self, idle_timeout: Duration) -> Vec<Idle> {
        let sites: Vec<Arc<Site>> = {
            let map = self.sites.lock().unwrap_or_else(|e| e.into_inner());
            map.values().cloned().collect()
        };
        let mut expired = Vec::new();
        for site in sites {
            let mut idle = site.idle_list();
            let (keep, old): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|i| i.since.elapsed() <= idle_timeout);
            *idle = keep;
            expired.extend(old);
        }
        expired
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(per_minute: u32, conns: usize) -> Site {
        let limits = Limits {
            max_connections: conns,
            messages_per_connection: 10,
            messages_per_minute: per_minute,
        };
        Site::new(
            SiteKey::new("default", "test"),
            "default",
            "test".into(),
            limits,
            Duration::from_millis(200),
        )
    }

    #[test]
    fn rate_allows_a_burst_of_max_connections_then_spaces() {
        let s = site(60, 2);
        assert!(s.reserve().is_ok());
        assert!(s.reserve().is_ok());
        let wait = s.reserve().expect_err("third in the same second");
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn a_shared_down_marking_keeps_the_later_end() {
        let s = site(60, 1);
        assert!(!s.is_down());
        s.mark_down(Duration::from_secs(60));
        s.mark_down_until(Instant::now() + Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.is_down(), "an earlier end does not shorten a marking");
        s.mark_up();
        s.mark_down_until(Instant::now() + Duration::from_millis(20));
        assert!(s.is_down());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!s.is_down(), "down until the end, then tried again");
    }

    #[test]
    fn slow_down_halves_and_recovers() {
        let s = site(600, 1);
        s.slow_down();
        assert_eq!(s.current_rate(), 300.0);
        s.slow_down();
        assert_eq!(s.current_rate(), 150.0);
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(s.current_rate(), 600.0);
    }

    fn sites(max_sites: usize) -> Sites {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let settings = crate::config::Settings::load_layers(&dir, Some("test"), true);
        let mut mx = settings.expect("test settings").delivery.mx;
        mx.max_sites = max_sites;
        Sites::new(&mx)
    }

    fn host(name: &str) -> Vec<String> {
        vec![format!("mx.{name}.test")]
    }

    #[test]
    fn site_map_holds_max_sites_forgetting_the_idle_longest() {
        let s = sites(2);
        let a = Arc::downgrade(&s.site_for("default", &host("a")));
        std::thread::sleep(Duration::from_millis(5));
        let b = Arc::downgrade(&s.site_for("default", &host("b")));
        assert_eq!(s.len(), 2);
        let c = s.site_for("default", &host("c"));
        assert_eq!(s.len(), 2);
        assert!(a.upgrade().is_none(), "a, idle longest, is forgotten");
        assert!(b.upgrade().is_some());
        assert!(
            Arc::ptr_eq(&c, &s.site_for("default", &host("c"))),
            "c is kept"
        );
    }

    #[test]
    fn sites_in_use_are_kept_past_the_bound_and_shed_once_idle() {
        let s = sites(2);
        let held: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| s.site_for("default", &host(n)))
            .collect();
        assert_eq!(s.len(), 3, "no site in use is dropped");
        drop(held);
        s.site_for("default", &host("d"));
        assert_eq!(s.len(), 2, "back within max_sites once they are idle");
    }

    #[test]
    fn each_pool_has_its_own_limits_at_a_site() {
        let s = sites(10);
        let a = s.site_for("default", &host("a"));
        let b = s.site_for("bulk", &host("a"));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.key.as_str(), "bulk/mx.a.test");
        assert!(Arc::ptr_eq(&b, &s.site_for("bulk", &host("a"))));
    }

    #[test]
    fn suffixes_match_on_label_boundaries() {
        assert!(matches("alt1.aspmx.l.google.com", "google.com"));
        assert!(matches("google.com", ".google.com"));
        assert!(!matches("notgoogle.com", "google.com"));
    }
}
