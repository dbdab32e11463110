//! `delivery.mx.*`: direct delivery to the recipients' MX hosts (issue 16).
//! Validated by [`MxSettings::validate`], which names the bad key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

/// How STARTTLS is used towards MX hosts.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MxTls {
    /// STARTTLS when offered, certificate not verified (RFC 7435); a failed
    /// handshake falls back to a plain session on a new connection.
    Opportunistic,
    /// STARTTLS must be offered and succeed; the certificate is not verified.
    Required,
    /// STARTTLS must succeed with a certificate valid for the MX host name
    /// (webpki roots).
    RequiredVerify,
}

/// Which address families MX hosts are reached over, and in which order.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum IpFamily {
    PreferIpv4,
    PreferIpv6,
    Ipv4Only,
    Ipv6Only,
}

/// Limits of one destination site (a set of MX hosts).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SiteRule {
    /// The metrics label and the name in logs.
    pub name: String,
    /// MX host names ending in one of these (e.g. `google.com` matches
    /// `alt1.aspmx.l.google.com`) belong to this site.
    pub mx_suffixes: Vec<String>,
    pub max_connections: usize,
    pub messages_per_connection: u32,
    pub messages_per_minute: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MxSettings {
    /// 25 in production; tests point it at sinks on loopback.
    pub port: u16,
    /// The EHLO name (should match the sending IP's PTR); empty = host name.
    pub ehlo_name: String,
    pub tls: MxTls,
    pub ip_family: IpFamily,
    /// Source addresses to bind outgoing connections to; empty = any.
    pub source_ipv4: String,
    pub source_ipv6: String,
    /// Domains (and MX host names) whose DNS answers are cached, at most.
    pub cache_entries: usize,
    /// Longest a DNS answer is cached, whatever its TTL.
    pub cache_max_ttl_secs: u64,
    /// Destination sites tracked at once (idle ones are forgotten first).
    pub max_sites: usize,
    /// Longest a message waits for its site's connection or rate slot before
    /// it goes back to the queue (not counted as an attempt).
    pub max_wait_ms: u64,
    /// A site whose every MX host failed to connect is not tried again for
    /// this long: its mail defers at once instead of holding worker slots.
    pub down_secs: u64,
    /// After a 421 / 4.7.x "slow down", the site's rate is halved for this
    /// long, then doubles back each period up to its limit.
    pub slowdown_secs: u64,
    /// Waits between tries of deferred mail in mx mode (RFC 5321 §4.5.4.1);
    /// the last repeats until `delivery.max_lifetime_secs`.
    pub retry_schedule_secs: Vec<u64>,
    /// Limits of sites not in `sites` nor the built-in table.
    pub default_max_connections: usize,
    pub default_messages_per_connection: u32,
    pub default_messages_per_minute: u32,
    /// Site rules; a rule named like a built-in one replaces it.
    pub sites: Vec<SiteRule>,
    /// MX hosts and addresses in loopback, private, link-local, CGNAT, …
    /// ranges (`net_guard`) are dialled only when true; metadata never.
    pub allow_private_destinations: bool,
    /// Addresses dialled per attempt, over every MX host (Postfix's
    /// `smtp_mx_address_limit`): a domain listing many dead hosts costs at
    /// most this many connection timeouts.
    pub max_addresses: usize,
    /// With several nodes, a site's `messages_per_minute` is shared as a
    /// leased budget per fixed window of this many seconds (the limit scaled
    /// to the window, rounded up); 60 = per calendar minute (issue 27).
    #[serde(default = "default_rate_window")]
    pub site_rate_window_secs: u64,
}

fn default_rate_window() -> u64 {
    60
}

impl MxSettings {
    pub fn source_v4(&self) -> Option<IpAddr> {
        self.source_ipv4.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }

    pub fn source_v6(&self) -> Option<IpAddr> {
        self.source_ipv6.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }

    /// `Err((key, why))` for the first bad value.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        let bad = |key: &str, why| Err((format!("delivery.mx.{key}"), why));
        if self.port == 0 {
            return bad("port", "must be 1-65535");
        }
        if self.ehlo_name.len() > 253 || self.ehlo_name.contains(|c: char| c.is_whitespace()) {
            return bad(
                "ehlo_name",
                "must be a host name (no spaces, at most 253 bytes)",
            );
        }
        if !self.source_ipv4.is_empty() && self.source_v4().is_none() {
            return bad("source_ipv4", "must be an IPv4 address or empty");
        }
        if !self.source_ipv6.is_empty() && self.source_v6().is_none() {
            return bad("source_ipv6", "must be an IPv6 address or empty");
        }
        if !(1..=1_000_000).contains(&self.cache_entries) {
            return bad("cache_entries", "must be between 1 and 1000000");
        }
        if !(1..=100_000).contains(&self.max_sites) {
            return bad("max_sites", "must be between 1 and 100000");
        }
        if !(1..=100).contains(&self.max_addresses) {
            return bad("max_addresses", "must be between 1 and 100");
        }
        if self.max_wait_ms > 60_000 {
            return bad("max_wait_ms", "must be at most 60000");
        }
        if !(1..=60).contains(&self.site_rate_window_secs) {
            return bad("site_rate_window_secs", "must be between 1 and 60");
        }
        if self.slowdown_secs == 0 {
            return bad("slowdown_secs", "must be at least 1");
        }
        if self.retry_schedule_secs.is_empty()
            || self.retry_schedule_secs.len() > 32
            || self.retry_schedule_secs.contains(&0)
        {
            return bad(
                "retry_schedule_secs",
                "must list 1-32 waits, each at least 1",
            );
        }
        let defaults = [(
            "default_*",
            self.default_max_connections,
            self.default_messages_per_connection,
            self.default_messages_per_minute,
        )];
        if self.sites.len() > 256 {
            return bad("sites", "at most 256 rules");
        }
        let rules = self.sites.iter().map(|r| {
            (
                "sites",
                r.max_connections,
                r.messages_per_connection,
                r.messages_per_minute,
            )
        });
        for (key, conns, per_conn, per_minute) in defaults.into_iter().chain(rules) {
            if !(1..=1000).contains(&conns) || per_conn == 0 || per_minute == 0 {
                return bad(
                    key,
                    "max_connections must be 1-1000, messages_per_connection and messages_per_minute at least 1",
                );
            }
        }
        for rule in &self.sites {
            let empty = rule.name.trim().is_empty() || rule.name.len() > 64;
            if empty || rule.mx_suffixes.is_empty() || rule.mx_suffixes.len() > 64 {
                return bad(
                    "sites",
                    "each rule needs a name (1-64 bytes) and 1-64 mx_suffixes",
                );
            }
        }
        Ok(())
    }
}
