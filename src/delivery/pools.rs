//! Egress pools (issue 26, `[[delivery.pools]]`): named sets of source
//! addresses with their own EHLO name, or a relay of their own. A tenant is
//! assigned a pool per stream (`tenants.pools`); the pool named `default`
//! always exists (no source binding beyond `delivery.mx.source_ipv4/6`,
//! `delivery.mx.ehlo_name`). In `mx` mode each pool has its own shaping per
//! destination site ([`super::mx::shaping`], keyed by [`SiteKey`]).

use std::collections::HashSet;
use std::net::IpAddr;

use serde::Deserialize;

use crate::config::{Secret, TlsMode};
use crate::emails::stream::Stream;

use super::mx::MxTransport;
use super::{Outcome, OutgoingMessage, RelayConfig, Transport};

/// The pool every tenant uses unless assigned another.
pub const DEFAULT_POOL: &str = "default";

/// Pools configured at most (each has its own sites and connections).
pub const MAX_POOLS: usize = 64;
/// Source addresses of one pool at most.
pub const MAX_SOURCES: usize = 256;

/// A pool's relay: its mail goes through this host instead of the MX hosts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRelay {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: Secret,
}

/// One `[[delivery.pools]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    pub name: String,
    /// Connections bind these in turn (round robin); empty = any address.
    #[serde(default)]
    pub source_addresses: Vec<String>,
    pub ehlo_name: String,
    #[serde(default)]
    pub relay: Option<PoolRelay>,
}

impl PoolSettings {
    /// The parsed source addresses (validated at start: every one parses).
    pub fn sources(&self) -> Vec<IpAddr> {
        self.source_addresses
            .iter()
            .filter_map(|a| a.trim().parse().ok())
            .collect()
    }

    pub fn relay_config(&self) -> Option<RelayConfig> {
        self.relay.as_ref().map(|r| RelayConfig {
            host: r.host.clone(),
            port: r.port,
            tls: r.tls,
            username: Some(r.username.clone()).filter(|u| !u.is_empty()),
            password: Some(r.password.clone()).filter(|p| !p.is_empty()),
        })
    }
}

/// Direct delivery from one egress pool (`mx` mode).
pub struct PoolTransport {
    pub mx: std::sync::Arc<MxTransport>,
    pub pool: String,
}

#[async_trait::async_trait]
impl Transport for PoolTransport {
    async fn send(&self, msg: &OutgoingMessage) -> Outcome {
        self.mx.send_via(&self.pool, msg).await
    }
}

/// A pool name is 1-64 bytes of letters, digits, `-`, `_` and `.`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `Err((key, why))` for the first bad entry: names unique and well formed
/// (`default` is built in), every source address an IP, a non-empty EHLO
/// name, a relay with a host and a port.
pub fn validate(pools: &[PoolSettings]) -> Result<(), (String, String)> {
    let bad = |i: usize, key: &str, why: &str| {
        Err((format!("delivery.pools[{i}].{key}"), why.to_string()))
    };
    if pools.len() > MAX_POOLS {
        return Err((
            "delivery.pools".into(),
            format!("at most {MAX_POOLS} pools"),
        ));
    }
    let mut names = HashSet::new();
    for (i, p) in pools.iter().enumerate() {
        if !valid_name(&p.name) {
            return bad(i, "name", "must be 1-64 letters, digits, '-', '_' or '.'");
        }
        if p.name == DEFAULT_POOL {
            return bad(i, "name", "\"default\" is built in (delivery.mx.*)");
        }
        if !names.insert(p.name.as_str()) {
            return bad(i, "name", "must be unique");
        }
        if p.source_addresses.len() > MAX_SOURCES {
            return bad(i, "source_addresses", "at most 256 addresses");
        }
        if p.source_addresses
            .iter()
            .any(|a| a.trim().parse::<IpAddr>().is_err())
        {
            return bad(i, "source_addresses", "each must be an IP address");
        }
        let ehlo = p.ehlo_name.trim();
        if ehlo.is_empty() || ehlo.len() > 253 || ehlo.contains(|c: char| c.is_whitespace()) {
            return bad(
                i,
                "ehlo_name",
                "must be a host name (not empty, no spaces, at most 253 bytes)",
            );
        }
        if let Some(r) = &p.relay {
            if r.host.trim().is_empty() || r.port == 0 {
                return bad(i, "relay", "needs a host and a port (1-65535)");
            }
        }
    }
    Ok(())
}

/// The configured pool names and `default`: what a tenant may be assigned.
#[derive(Clone, Debug, Default)]
pub struct PoolNames(HashSet<String>);

impl PoolNames {
    pub fn new(pools: &[PoolSettings]) -> Self {
        let mut names: HashSet<String> = pools.iter().map(|p| p.name.clone()).collect();
        names.insert(DEFAULT_POOL.to_string());
        PoolNames(names)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// A tenant's pool per stream, as stored in `tenants.pools`
/// (`{"transactional": "<pool>", "broadcast": "<pool>"}`; absent = default).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TenantPools {
    #[serde(default = "default_name")]
    pub transactional: String,
    #[serde(default = "default_name")]
    pub broadcast: String,
}

fn default_name() -> String {
    DEFAULT_POOL.to_string()
}

impl Default for TenantPools {
    fn default() -> Self {
        TenantPools {
            transactional: default_name(),
            broadcast: default_name(),
        }
    }
}

impl TenantPools {
    /// From the stored JSON; anything unreadable is the default pool.
    pub fn from_json(v: &serde_json::Value) -> Self {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"transactional": self.transactional, "broadcast": self.broadcast})
    }

    pub fn for_stream(&self, stream: Stream) -> &str {
        match stream {
            Stream::Transactional => &self.transactional,
            Stream::Broadcast => &self.broadcast,
        }
    }
}

/// The shaping key of a destination site as seen from one pool: a remote
/// site judges each sending IP on its own, so connection and rate limits
/// apply per (pool, site). Rendered `"{pool}/{site}"` (pool names hold no
/// `/`), e.g. `"bulk/rule:google"` or `"default/mx1.a.test,mx2.a.test"`;
/// anything that shares limits across nodes may use it as an opaque string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SiteKey(String);

impl SiteKey {
    pub fn new(pool: &str, site: &str) -> Self {
        SiteKey(format!("{pool}/{site}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, sources: &[&str], ehlo: &str) -> PoolSettings {
        PoolSettings {
            name: name.into(),
            source_addresses: sources.iter().map(|s| s.to_string()).collect(),
            ehlo_name: ehlo.into(),
            relay: None,
        }
    }

    #[test]
    fn validation_names_the_bad_entry() {
        let ok = pool("bulk", &["192.0.2.1", "2001:db8::1"], "bulk.example.com");
        assert!(validate(std::slice::from_ref(&ok)).is_ok());
        let dup = validate(&[ok.clone(), ok.clone()]).unwrap_err();
        assert_eq!(dup.0, "delivery.pools[1].name");
        let ip = validate(&[pool("x", &["300.1.1.1"], "h")]).unwrap_err();
        assert_eq!(ip.0, "delivery.pools[0].source_addresses");
        let ehlo = validate(&[pool("x", &[], " ")]).unwrap_err();
        assert_eq!(ehlo.0, "delivery.pools[0].ehlo_name");
        assert!(validate(&[pool("default", &[], "h")]).is_err());
        assert!(validate(&[pool("a/b", &[], "h")]).is_err());
        let many: Vec<_> = (0..=MAX_POOLS)
            .map(|i| pool(&format!("p{i}"), &[], "h"))
            .collect();
        assert!(validate(&many[..MAX_POOLS]).is_ok());
        assert!(validate(&many).is_err());
    }

    #[test]
    fn settings_refuse_a_bad_pool_at_start() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut settings =
            crate::config::Settings::load_layers(&dir, Some("test"), true).expect("test settings");
        settings.delivery.pools = vec![pool("bulk", &["192.0.2.1"], "bulk.example.com")];
        assert!(settings.validate().is_ok());
        settings.delivery.pools.push(pool("bulk", &[], "h"));
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("delivery.pools[1].name"), "{err}");
    }

    #[test]
    fn tenant_pools_default_and_unreadable_json_is_default() {
        let p = TenantPools::from_json(&serde_json::json!({}));
        assert_eq!(p, TenantPools::default());
        let p = TenantPools::from_json(&serde_json::json!({"broadcast": "bulk"}));
        assert_eq!(p.for_stream(Stream::Broadcast), "bulk");
        assert_eq!(p.for_stream(Stream::Transactional), "default");
        assert_eq!(
            TenantPools::from_json(&serde_json::json!(3)),
            TenantPools::default()
        );
    }

    #[test]
    fn site_keys_include_the_pool() {
        assert_ne!(
            SiteKey::new("a", "rule:google"),
            SiteKey::new("b", "rule:google")
        );
        assert_eq!(SiteKey::new("a", "x").as_str(), "a/x");
    }
}
