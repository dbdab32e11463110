//! Where mail for a domain goes (RFC 5321 §5.1): its MX hosts in preference
//! order (equal preferences shuffled), the domain itself when it has no MX
//! (implicit MX), nowhere for a null MX (RFC 7505). Answers and host
//! addresses are cached by their TTL (at most `cache_max_ttl_secs`) in a
//! bounded map; "missing" answers for [`NEGATIVE_TTL`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use super::settings::IpFamily;
use crate::dns::Dns;

/// How long a "no such record" answer is believed.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// The mail hosts of one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Host names to try in this order.
    Hosts(Vec<String>),
    /// `MX 0 .`: the domain accepts no mail (permanent).
    NullMx,
    /// Neither MX nor address records: no mail host (permanent).
    NoHost,
}

#[derive(Clone)]
enum Entry {
    Route(Arc<Route>),
    Addrs(Arc<Vec<IpAddr>>),
}

pub struct Resolver {
    dns: Dns,
    family: IpFamily,
    max_entries: usize,
    max_ttl: Duration,
    cache: Mutex<HashMap<String, (Entry, Instant)>>,
}

impl Resolver {
    pub fn new(dns: Dns, family: IpFamily, max_entries: usize, max_ttl: Duration) -> Self {
        Resolver {
            dns,
            family,
            max_entries: max_entries.max(1),
            max_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Cached entries (tests check the bound).
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Entry, Instant)>> {
        // A poisoned lock only means a panic elsewhere; the map is whole.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<Entry> {
        let cache = self.lock();
        let (entry, until) = cache.get(key)?;
        (Instant::now() < *until).then(|| entry.clone())
    }

    /// Stores an answer; a full map first drops expired entries, then the
    /// one expiring soonest, so the map never exceeds `max_entries`.
    fn put(&self, key: String, entry: Entry, valid_until: Instant) {
        let now = Instant::now();
        let until = valid_until.min(now + self.max_ttl);
        if until <= now {
            return;
        }
        let mut cache = self.lock();
        if cache.len() >= self.max_entries && !cache.contains_key(&key) {
            cache.retain(|_, (_, u)| *u > now);
            while cache.len() >= self.max_entries {
                let soonest = cache
                    .iter()
                    .min_by_key(|(_, (_, u))| *u)
                    .map(|(k, _)| k.clone());
                match soonest {
                    Some(k) => cache.remove(&k),
                    None => break,
                };
            }
        }
        cache.insert(key, (entry, until));
    }

    /// The route of `domain` (lower-cased ASCII). `Err` is a DNS failure
    /// (temporary).
    pub async fn route(&self, domain: &str) -> Result<Arc<Route>, String> {
        // IDNA: a Unicode domain is looked up as its A-label (punycode); a
        // name that is not a valid domain has no mail host.
        let Some(domain) = ascii_domain(domain) else {
            return Ok(Arc::new(Route::NoHost));
        };
        let domain = domain.as_str();
        let key = format!("mx:{domain}");
        if let Some(Entry::Route(r)) = self.get(&key) {
            return Ok(r);
        }
        let (route, until) = match self.dns.mx(domain).await? {
            Some((records, until)) => (hosts_of(records), until),
            None => {
                // Implicit MX: the domain itself, if it has an address.
                let addrs = self.addresses(domain).await?;
                let route = if addrs.is_empty() {
                    Route::NoHost
                } else {
                    Route::Hosts(vec![domain.to_string()])
                };
                (route, Instant::now() + NEGATIVE_TTL)
            }
        };
        let route = Arc::new(route);
        self.put(key, Entry::Route(route.clone()), until);
        Ok(route)
    }

    /// The addresses of an MX host, in the order of `ip_family`; empty when
    /// it has none of the allowed families.
    pub async fn addresses(&self, host: &str) -> Result<Arc<Vec<IpAddr>>, String> {
        let key = format!("ip:{host}");
        if let Some(Entry::Addrs(a)) = self.get(&key) {
            return Ok(a);
        }
        let families: &[bool] = match self.family {
            IpFamily::PreferIpv4 => &[false, true],
            IpFamily::PreferIpv6 => &[true, false],
            IpFamily::Ipv4Only => &[false],
            IpFamily::Ipv6Only => &[true],
        };
        let mut found = Vec::new();
        let mut until: Option<Instant> = None;
        let mut failure = None;
        for v6 in families {
            match self.dns.addresses(host, *v6).await {
                Ok(Some((addrs, valid))) => {
                    found.extend(addrs);
                    until = Some(until.map_or(valid, |u| u.min(valid)));
                }
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        }
        if found.is_empty() {
            if let Some(e) = failure {
                return Err(e);
            }
        }
        let addrs = Arc::new(found);
        let until = until.unwrap_or_else(|| Instant::now() + NEGATIVE_TTL);
        self.put(key, Entry::Addrs(addrs.clone()), until);
        Ok(addrs)
    }
}

fn ascii_domain(domain: &str) -> Option<String> {
    use hickory_resolver::proto::rr::Name;
    if domain.is_ascii() {
        return Some(domain.to_string());
    }
    let name = Name::from_utf8(domain).ok()?;
    Some(name.to_ascii().trim_end_matches('.').to_ascii_lowercase())
}

/// MX records → hosts in preference order, ties shuffled (RFC 5321 §5.1);
/// a lone `MX 0 .` is a null MX. Duplicate names are tried once.
fn hosts_of(mut records: Vec<crate::dns::Mx>) -> Route {
    if records.iter().any(|r| r.exchange.is_empty()) {
        return Route::NullMx;
    }
    records.shuffle(&mut rand::thread_rng());
    records.sort_by_key(|r| r.preference);
    let mut hosts: Vec<String> = Vec::with_capacity(records.len());
    for r in records {
        if !hosts.contains(&r.exchange) {
            hosts.push(r.exchange);
        }
    }
    Route::Hosts(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Mx;

    fn mx(preference: u16, exchange: &str) -> Mx {
        Mx {
            preference,
            exchange: exchange.into(),
        }
    }

    #[test]
    fn preference_order_and_null_mx() {
        let route = hosts_of(vec![mx(20, "b.test"), mx(10, "a.test"), mx(30, "c.test")]);
        assert_eq!(
            route,
            Route::Hosts(vec!["a.test".into(), "b.test".into(), "c.test".into()])
        );
        assert_eq!(hosts_of(vec![mx(0, "")]), Route::NullMx);
        let dup = hosts_of(vec![mx(10, "a.test"), mx(20, "a.test")]);
        assert_eq!(dup, Route::Hosts(vec!["a.test".into()]));
    }

    #[test]
    fn unicode_domains_are_looked_up_as_a_labels() {
        assert_eq!(
            ascii_domain("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(
            ascii_domain("plain.example").as_deref(),
            Some("plain.example")
        );
    }

    #[tokio::test]
    async fn cache_never_exceeds_its_bound() {
        let r = Resolver::new(
            Dns::new(&[]),
            IpFamily::PreferIpv4,
            3,
            Duration::from_secs(60),
        );
        let later = Instant::now() + Duration::from_secs(30);
        for i in 0..10 {
            let entry = Entry::Route(Arc::new(Route::NoHost));
            r.put(
                format!("mx:d{i}.test"),
                entry,
                later + Duration::from_secs(i),
            );
        }
        assert_eq!(r.cached(), 3);
        // The latest-expiring survive.
        assert!(r.get("mx:d9.test").is_some());
        assert!(r.get("mx:d0.test").is_none());
    }
}
