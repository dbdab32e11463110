//! The SSRF guard (DESIGN §10): outbound connections that a tenant chooses
//! (webhook URLs, SMTP override hosts) must not reach the machine itself, the
//! private network behind it, or a cloud metadata service.
//!
//! A target is checked twice: when it is saved (the host as written, in any
//! IPv4 spelling `inet_aton` accepts) and when it is connected to (every
//! address DNS returned), so a name that later resolves somewhere private is
//! still refused. Loopback, private, link-local, CGNAT and the like pass only
//! when the operator allows private targets; metadata addresses never do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a host or address is refused. The text names the class, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is a cloud metadata address")]
    Metadata(String),
    #[error("{addr} is a {class} address")]
    Blocked { addr: String, class: &'static str },
    #[error("'{0}' is a non-canonical IPv4 spelling")]
    ObfuscatedIpv4(String),
    #[error("'{0}' names this machine")]
    LocalName(String),
    #[error("'{0}' is not a usable host")]
    Invalid(String),
    #[error("{0} resolves to no address")]
    Unresolved(String),
}

impl Refusal {
    /// The refusal's text, naming the setting that would allow the address
    /// when one does (`key`: `webhooks.allow_private_targets` or
    /// `delivery.allow_private_relays`); metadata addresses never are.
    pub fn explained(&self, key: &str) -> String {
        match self {
            Refusal::Blocked { .. } | Refusal::ObfuscatedIpv4(_) | Refusal::LocalName(_) => {
                format!("{self} (allowed when {key} is true, as under deploy/dev run)")
            }
            _ => self.to_string(),
        }
    }
}

/// The addresses that are refused even when private targets are allowed.
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, ...
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];
const METADATA_NAMES: [&str; 3] = ["metadata.google.internal", "metadata.goog", "metadata"];

/// The policy: `allow_private` opens loopback/private/link-local targets
/// (development, tests); metadata stays closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guard {
    allow_private: bool,
}

impl Guard {
    pub fn new(allow_private: bool) -> Self {
        Guard { allow_private }
    }

    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Checks one address (as resolved or written).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        if is_metadata(ip) {
            return Err(Refusal::Metadata(ip.to_string()));
        }
        match classify(ip) {
            Some(class) if !self.allow_private => Err(Refusal::Blocked {
                addr: ip.to_string(),
                class,
            }),
            _ => Ok(()),
        }
    }

    /// Checks a host as a user wrote it: an IP literal in any spelling, a
    /// bracketed IPv6 literal, or a DNS name (local and metadata names are
    /// refused; other names are checked again once resolved).
    pub fn check_host(&self, raw: &str) -> Result<(), Refusal> {
        let host = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host);
        if bare.is_empty() || bare.contains(['%', '/', '\\', '@', ' ']) {
            return Err(Refusal::Invalid(raw.to_string()));
        }
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check_ip(ip);
        }
        if let Some(v4) = parse_ipv4_loose(bare) {
            // A spelling like 2130706433, 0177.0.0.1 or 0x7f.1: resolvers
            // accept it, so judge the address, and refuse the disguise itself.
            self.check_ip(IpAddr::V4(v4))?;
            if !self.allow_private {
                return Err(Refusal::ObfuscatedIpv4(raw.to_string()));
            }
            return Ok(());
        }
        if METADATA_NAMES.contains(&bare) {
            return Err(Refusal::Metadata(bare.to_string()));
        }
        if !self.allow_private && (bare == "localhost" || bare.ends_with(".localhost")) {
            return Err(Refusal::LocalName(bare.to_string()));
        }
        Ok(())
    }

    /// Resolves `host` and returns the addresses that pass; refuses when none
    /// does. This is the connect-time check: callers connect only to these.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        self.check_host(host)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let found: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| Refusal::Unresolved(host.to_string()))?
            .collect();
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| match self.check_ip(a.ip()) {
                Ok(()) => true,
                Err(r) => {
                    first_refusal.get_or_insert(r);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(r)) => Err(r),
            (true, None) => Err(Refusal::Unresolved(host.to_string())),
        }
    }

    /// The save-time check of a name: when it resolves, every address must
    /// pass (a name that cannot be resolved now is judged at connect time).
    pub async fn check_resolved(&self, host: &str) -> Result<(), Refusal> {
        self.check_host(host)?;
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let lookup = tokio::net::lookup_host((bare, 0));
        let Ok(Ok(addrs)) = tokio::time::timeout(std::time::Duration::from_secs(3), lookup).await
        else {
            return Ok(());
        };
        for a in addrs {
            self.check_ip(a.ip())?;
        }
        Ok(())
    }
}

/// True for the metadata services, in any IPv6 wrapping of their IPv4 form.
pub fn is_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => METADATA_V4.contains(&v4),
        IpAddr::V6(v6) => {
            METADATA_V6.contains(&v6) || embedded_v4(v6).is_some_and(|v4| METADATA_V4.contains(&v4))
        }
    }
}

/// The class of a non-public address, `None` for a public one.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (CGNAT)",
        (192, 0, 0) => "reserved",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => "private (unique local)",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x0100 if s[1..4] == [0, 0, 0] => "discard",
        _ => return None,
    })
}

/// The IPv4 address carried inside an IPv6 one: mapped (`::ffff:a.b.c.d`),
/// compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(low(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(low(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

/// Parses an IPv4 address the way `inet_aton` (and so `getaddrinfo`) does:
/// one to four parts, each decimal, octal (leading 0) or hex (0x), the last
/// part filling the remaining bytes (`2130706433`, `0177.0.0.1`, `0x7f.1`).
pub fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X"))
        {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if p.is_empty() || (digits.is_empty() && radix != 16) {
            return None;
        }
        let v = if digits.is_empty() {
            0 // "0x" alone is zero for inet_aton
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        values.push(v);
    }
    let (last, head) = values.split_last()?;
    if head.iter().any(|v| *v > 255) {
        return None;
    }
    let last_bits = 8 * (4 - head.len() as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut n: u64 = 0;
    for (i, v) in head.iter().enumerate() {
        n |= v << (24 - 8 * i as u32);
    }
    n |= last;
    Some(Ipv4Addr::from(u32::try_from(n).ok()?))
}

/// A reqwest DNS resolver that returns only the addresses the guard allows:
/// the connect-time half of the check for webhook deliveries.
#[derive(Clone, Debug)]
pub struct GuardedResolver(pub Guard);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = guard.resolve(&host, 0).await.map_err(
                |r| -> Box<dyn std::error::Error + Send + Sync> {
                    format!("refused by the SSRF guard: {r}").into()
                },
            )?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests;
