//! Which opens and clicks were machines (API.md: `data.machine`,
//! `data.machine_reason`). Every event is still reported; only human ones
//! set `first_opened_at` / `first_clicked_at` and count in usage.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::settings::TrackingSettings;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    PrefetchProxy,
    ScannerTiming,
    HeadRequest,
    KnownScanner,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PrefetchProxy => "prefetch_proxy",
            Reason::ScannerTiming => "scanner_timing",
            Reason::HeadRequest => "head_request",
            Reason::KnownScanner => "known_scanner",
        }
    }
}

/// The configured lists, parsed once.
#[derive(Clone, Debug)]
pub struct Detector {
    proxies: Vec<IpNet>,
    proxy_agents: Vec<String>,
    scanner_agents: Vec<String>,
    scanner_secs: i64,
}

/// What a request looked like (the timing is judged when it is written:
/// [`Detector::by_timing`]).
pub struct Seen<'a> {
    pub head: bool,
    pub ip: Option<IpAddr>,
    pub user_agent: &'a str,
}

impl Detector {
    pub fn new(s: &TrackingSettings) -> Self {
        let lower = |l: &[String]| l.iter().map(|s| s.to_ascii_lowercase()).collect();
        Detector {
            proxies: s
                .proxy_cidrs
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            proxy_agents: lower(&s.proxy_user_agents),
            scanner_agents: lower(&s.scanner_user_agents),
            scanner_secs: i64::try_from(s.scanner_secs).unwrap_or(i64::MAX),
        }
    }

    /// The reason the request itself gives, in this order: HEAD, a proxy
    /// (address or agent), a scanner's agent.
    pub fn by_request(&self, r: &Seen) -> Option<Reason> {
        if r.head {
            return Some(Reason::HeadRequest);
        }
        let ua = r.user_agent.to_ascii_lowercase();
        let ip = r.ip.map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        });
        if ip.is_some_and(|ip| self.proxies.iter().any(|n| n.contains(&ip)))
            || self.proxy_agents.iter().any(|a| ua.contains(a.as_str()))
        {
            return Some(Reason::PrefetchProxy);
        }
        if self.scanner_agents.iter().any(|a| ua.contains(a.as_str())) {
            return Some(Reason::KnownScanner);
        }
        None
    }

    /// A click sooner than `scanner_secs` after delivery, or within a
    /// second of a click on another link of the same copy.
    pub fn by_timing(
        &self,
        at: DateTime<Utc>,
        delivered_at: Option<DateTime<Utc>>,
        previous_other_link: Option<DateTime<Utc>>,
    ) -> Option<Reason> {
        let soon =
            delivered_at.is_some_and(|d| at < d + chrono::Duration::seconds(self.scanner_secs));
        let burst = previous_other_link.is_some_and(|p| (at - p).num_milliseconds().abs() < 1000);
        (soon || burst).then_some(Reason::ScannerTiming)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Detector {
        let mut s = TrackingSettings::default();
        s.proxy_cidrs.push("127.0.0.2/32".into());
        Detector::new(&s)
    }

    fn seen<'a>(head: bool, ip: &str, ua: &'a str) -> Seen<'a> {
        Seen {
            head,
            ip: ip.parse().ok(),
            user_agent: ua,
        }
    }

    #[test]
    fn each_request_reason() {
        let d = d();
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(d.by_request(&seen(false, "127.0.0.1", firefox)), None);
        assert_eq!(
            d.by_request(&seen(true, "127.0.0.1", firefox)),
            Some(Reason::HeadRequest)
        );
        assert_eq!(
            d.by_request(&seen(false, "127.0.0.2", firefox)),
            Some(Reason::PrefetchProxy)
        );
        assert_eq!(
            d.by_request(&seen(false, "::ffff:17.1.2.3", firefox)),
            Some(Reason::PrefetchProxy)
        );
        assert_eq!(
            d.by_request(&seen(
                false,
                "127.0.0.1",
                "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"
            )),
            Some(Reason::PrefetchProxy)
        );
        assert_eq!(
            d.by_request(&seen(false, "127.0.0.1", "Barracuda Sentinel")),
            Some(Reason::KnownScanner)
        );
    }

    #[test]
    fn timing_reasons() {
        let d = d();
        let t = Utc::now();
        let s = chrono::Duration::seconds;
        assert_eq!(
            d.by_timing(t, Some(t - s(1)), None),
            Some(Reason::ScannerTiming)
        );
        assert_eq!(d.by_timing(t, Some(t - s(60)), None), None);
        assert_eq!(
            d.by_timing(t, None, Some(t - chrono::Duration::milliseconds(300))),
            Some(Reason::ScannerTiming)
        );
        assert_eq!(d.by_timing(t, Some(t - s(60)), Some(t - s(5))), None);
    }
}
