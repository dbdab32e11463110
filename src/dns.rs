//! One DNS resolver per process, built from `dns.nameservers` (`ip:port`
//! entries; empty = the system resolver), so the domain checks of tests run
//! against an authoritative server on loopback. Answers are not cached: a
//! check must see the record as it is now. Direct delivery caches its MX and
//! address answers itself, by TTL (`delivery::mx::resolve`).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;

/// What a lookup of one name and type found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The records (TXT strings joined per record; CNAME targets without the
    /// trailing dot).
    Found(Vec<String>),
    /// NXDOMAIN or no record of that type.
    Missing,
}

/// The resolver, or why it could not be built (no usable system
/// configuration): lookups then fail, which checks treat as "DNS is down",
/// never as "the record is gone".
#[derive(Clone)]
pub struct Dns {
    resolver: Result<TokioResolver, String>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns")
    }
}

/// Parses `dns.nameservers` entries (`ip:port`).
pub fn parse_nameservers(entries: &[String]) -> Result<Vec<SocketAddr>, String> {
    entries
        .iter()
        .map(|e| {
            e.trim()
                .parse::<SocketAddr>()
                .map_err(|_| format!("{e:?} is not ip:port"))
        })
        .collect()
}

impl Dns {
    /// A resolver for `nameservers`, or the system's when empty.
    pub fn new(nameservers: &[SocketAddr]) -> Dns {
        let resolver = Self::build(nameservers).map_err(|e| {
            tracing::warn!(error = %e, "DNS resolver unavailable; domain checks will fail");
            e
        });
        Dns { resolver }
    }

    fn build(nameservers: &[SocketAddr]) -> Result<TokioResolver, String> {
        let (config, mut opts) = if nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("dns: cannot read the system resolver: {e}"))?
        } else {
            let servers = nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    ns.connections = vec![udp, tcp];
                    ns
                })
                .collect();
            (
                ResolverConfig::from_parts(None, vec![], servers),
                ResolverOpts::default(),
            )
        };
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        opts.use_hosts_file = ResolveHosts::Never;
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| format!("dns: cannot build the resolver: {e}"))
    }

    /// The underlying resolver (the DKIM verifier of the tests uses it).
    pub fn resolver(&self) -> Result<&TokioResolver, String> {
        self.resolver.as_ref().map_err(Clone::clone)
    }

    /// TXT records at `name`, each record's strings concatenated (RFC 6376
    /// §3.6.2.2). `Err` is a resolver failure (timeout, SERVFAIL), which a
    /// check must not read as "the record is gone".
    pub async fn txt(&self, name: &str) -> Result<Answer, String> {
        let fqdn = fqdn(name)?;
        match self.resolver()?.txt_lookup(fqdn).await {
            Ok(lookup) => {
                let found: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|part| String::from_utf8_lossy(part))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect();
                Ok(if found.is_empty() {
                    Answer::Missing
                } else {
                    Answer::Found(found)
                })
            }
            Err(e) => missing_or_error(e),
        }
    }

    /// CNAME target(s) of `name`, lower-cased, without the trailing dot.
    pub async fn cname(&self, name: &str) -> Result<Answer, String> {
        use hickory_resolver::proto::rr::RecordType;
        let fqdn = fqdn(name)?;
        match self.resolver()?.lookup(fqdn, RecordType::CNAME).await {
            Ok(lookup) => {
                let found: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::CNAME(c) => {
                            Some(c.0.to_ascii().trim_end_matches('.').to_ascii_lowercase())
                        }
                        _ => None,
                    })
                    .collect();
                Ok(if found.is_empty() {
                    Answer::Missing
                } else {
                    Answer::Found(found)
                })
            }
            Err(e) => missing_or_error(e),
        }
    }
}

/// MX records of a name and how long they may be cached (direct delivery,
/// issue 16). `exchange` is lower-cased without the trailing dot; the root
/// (`.`) is kept as `""` so a null MX (RFC 7505) can be told apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mx {
    pub preference: u16,
    pub exchange: String,
}

/// Records found with the instant their TTL runs out; `None` = missing.
pub type Timed<T> = Option<(Vec<T>, std::time::Instant)>;

impl Dns {
    /// The MX records of `name`; `Ok(None)` when it has none or does not exist.
    pub async fn mx(&self, name: &str) -> Result<Timed<Mx>, String> {
        use hickory_resolver::proto::rr::RecordType;
        let fqdn = fqdn(name)?;
        match self.resolver()?.lookup(fqdn, RecordType::MX).await {
            Ok(lookup) => {
                let found: Vec<Mx> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some(Mx {
                            preference: mx.preference,
                            exchange: mx
                                .exchange
                                .to_ascii()
                                .trim_end_matches('.')
                                .to_ascii_lowercase(),
                        }),
                        _ => None,
                    })
                    .collect();
                Ok((!found.is_empty()).then(|| (found, lookup.valid_until())))
            }
            Err(e) => missing_or_error(e).map(|_| None),
        }
    }

    /// The A (`v6` false) or AAAA (`v6` true) addresses of `name`.
    pub async fn addresses(&self, name: &str, v6: bool) -> Result<Timed<std::net::IpAddr>, String> {
        use hickory_resolver::proto::rr::RecordType;
        let fqdn = fqdn(name)?;
        let rtype = if v6 { RecordType::AAAA } else { RecordType::A };
        match self.resolver()?.lookup(fqdn, rtype).await {
            Ok(lookup) => {
                let found: Vec<std::net::IpAddr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect();
                Ok((!found.is_empty()).then(|| (found, lookup.valid_until())))
            }
            Err(e) => missing_or_error(e).map(|_| None),
        }
    }
}

fn fqdn(name: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(name).map_err(|e| format!("{name:?}: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

fn missing_or_error(e: NetError) -> Result<Answer, String> {
    if e.is_no_records_found() || e.is_nx_domain() {
        Ok(Answer::Missing)
    } else {
        Err(e.to_string())
    }
}
