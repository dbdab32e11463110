//! `tracking.*` (issue 29). Every key has a default, so a config file
//! without the section keeps tracking links unmade (no `public_url`).

use serde::Deserialize;

/// Apple Mail Privacy Protection fetches from Apple's own network
/// (17.0.0.0/8); Gmail's image proxy from Google's ranges it uses for
/// `GoogleImageProxy`. Operators extend or replace the list.
pub const DEFAULT_PROXY_CIDRS: &[&str] = &[
    "17.0.0.0/8",
    "66.102.0.0/20",
    "66.249.80.0/20",
    "64.233.160.0/19",
    "72.14.192.0/18",
    "74.125.0.0/16",
    "209.85.128.0/17",
    "2a00:1450::/32",
    "2404:6800::/32",
    "2607:f8b0::/32",
];

/// Substrings (case-insensitive) of user agents that fetch for a proxy.
pub const DEFAULT_PROXY_USER_AGENTS: &[&str] = &["GoogleImageProxy", "YahooMailProxy"];

/// Substrings (case-insensitive) of user agents of link scanners and
/// security gateways, and of HTTP libraries no person clicks with.
pub const DEFAULT_SCANNER_USER_AGENTS: &[&str] = &[
    "barracuda",
    "mimecast",
    "proofpoint",
    "urldefense",
    "messagelabs",
    "symantec",
    "trendmicro",
    "forcepoint",
    "sophos",
    "fireeye",
    "ironport",
    "zscaler",
    "safelinks",
    "bitdefender",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "curl/",
    "wget/",
    "headlesschrome",
    "phantomjs",
    "bot/",
    "crawler",
    "spider",
    "scanner",
];

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingSettings {
    /// Base URL of tracked links when the sending domain has no tracking
    /// record that checks ok (e.g. `https://t.platform.example`). Empty:
    /// no message is rewritten (tracking asked for is skipped, logged).
    pub public_url: String,
    /// The CNAME target of the `track.<domain>` records (empty: the record
    /// is not listed and every link uses `public_url`).
    pub domain: String,
    /// A click sooner than this after delivery is a scanner's.
    pub scanner_secs: u64,
    /// Prefetch proxies by address (CIDR).
    pub proxy_cidrs: Vec<String>,
    /// Prefetch proxies by user agent (substring, any case).
    pub proxy_user_agents: Vec<String>,
    /// Link scanners by user agent (substring, any case).
    pub scanner_user_agents: Vec<String>,
    /// Events waiting to be written, all addresses together; more are
    /// dropped (the redirect is still answered).
    pub max_pending_events: usize,
    /// Events waiting from one client address (IPv6: its /64).
    pub max_pending_per_address: usize,
    /// Longer link targets are left as they are (not tracked).
    pub max_url_bytes: usize,
    /// The most bytes one message's per-recipient copies may take together
    /// (a copy per recipient, each naming it); a larger message is sent as
    /// one copy whose links name no recipient (logged).
    pub max_copies_bytes: usize,
}

impl Default for TrackingSettings {
    fn default() -> Self {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        TrackingSettings {
            public_url: String::new(),
            domain: String::new(),
            scanner_secs: 5,
            proxy_cidrs: list(DEFAULT_PROXY_CIDRS),
            proxy_user_agents: list(DEFAULT_PROXY_USER_AGENTS),
            scanner_user_agents: list(DEFAULT_SCANNER_USER_AGENTS),
            max_pending_events: 10_000,
            max_pending_per_address: 50,
            max_url_bytes: 2048,
            max_copies_bytes: 32 * 1024 * 1024,
        }
    }
}

impl TrackingSettings {
    /// `Err((key, why))` for the first bad value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = self.public_url.trim();
        if !url.is_empty() {
            let ok = url::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if ok.is_none() {
                return Err((
                    "tracking.public_url",
                    "expected an http(s) URL, e.g. https://t.example.com".into(),
                ));
            }
        }
        if !self.domain.is_empty()
            && crate::domain::parse_hostname("tracking.domain", &self.domain).is_err()
        {
            return Err(("tracking.domain", "expected a host name".into()));
        }
        for c in &self.proxy_cidrs {
            if c.parse::<ipnet::IpNet>().is_err() {
                return Err(("tracking.proxy_cidrs", format!("{c:?} is not a CIDR")));
            }
        }
        if self.max_pending_events == 0 || self.max_pending_events > 1_000_000 {
            return Err((
                "tracking.max_pending_events",
                "must be between 1 and 1000000".into(),
            ));
        }
        if self.max_pending_per_address == 0 {
            return Err((
                "tracking.max_pending_per_address",
                "must be at least 1".into(),
            ));
        }
        if !(64..=8192).contains(&self.max_url_bytes) {
            return Err((
                "tracking.max_url_bytes",
                "must be between 64 and 8192".into(),
            ));
        }
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&self.max_copies_bytes) {
            return Err((
                "tracking.max_copies_bytes",
                "must be between 65536 (64 KiB) and 1073741824 (1 GiB)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copies_budget_is_taken_within_its_range_only() {
        let mut s = TrackingSettings::default();
        assert!(s.validate().is_ok());
        for ok in [64 * 1024, 1024 * 1024 * 1024] {
            s.max_copies_bytes = ok;
            assert!(s.validate().is_ok(), "{ok}");
        }
        for bad in [64 * 1024 - 1, 1024 * 1024 * 1024 + 1, 0] {
            s.max_copies_bytes = bad;
            assert_eq!(s.validate().unwrap_err().0, "tracking.max_copies_bytes");
        }
    }
}
