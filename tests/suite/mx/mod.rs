//! Direct delivery (issue 16) against real components: an authoritative DNS
//! server on loopback publishing MX/A records, and SMTP sinks on distinct
//! loopback addresses (127.0.0.x) sharing one port, as MX hosts share 25
//! (`delivery.mx.port` points there). Transport-level tests drive
//! `MxTransport` directly; the end-to-end ones go through the API, the
//! queue and the worker (`end_to_end`); `shaping` holds the per-site
//! limits.

mod end_to_end;
mod envelopes;
mod guard;
mod nodes;
mod nodes_down;
mod nodes_slowdown;
mod shaping;

use crate::common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dns_server::DnsServer;
use common::smtp_sink::{SinkConfig, SmtpSink};
use common::TestApp;
use postline::config::{DeliveryMode, Settings};
use postline::delivery::mx::{MxTls, MxTransport, SiteRule};
use postline::delivery::{Fate, Outcome, OutgoingMessage, SmtpOptions, Transport};
use postline::domain::TenantId;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A DNS server and the port every MX host of this test listens on: the
/// first sink takes a free port on 127.0.0.2, the others bind that same port
/// on their own address (no other test can hold it on 127.0.0.2).
struct World {
    dns: DnsServer,
    port: u16,
    sinks: Vec<SmtpSink>,
}

impl World {
    async fn new() -> World {
        let first = SmtpSink::start_at(ip(2), 0, SinkConfig::default()).await;
        World {
            dns: DnsServer::start().await,
            port: first.port(),
            sinks: vec![first],
        }
    }

    /// A sink at 127.0.0.`last` named `host` in DNS (127.0.0.2 is the first
    /// sink, already running: `cfg` is then ignored).
    async fn mx_host(&mut self, host: &str, last: u8, cfg: SinkConfig) -> usize {
        self.dns.add_ip(host, ip(last));
        if last == 2 {
            return 0;
        }
        self.sinks
            .push(SmtpSink::start_at(ip(last), self.port, cfg).await);
        self.sinks.len() - 1
    }

    fn settings(&self) -> Settings {
        let mut s = common::test_settings("postgres://unused@127.0.0.1/unused");
        self.apply(&mut s);
        s
    }

    fn apply(&self, s: &mut Settings) {
        s.delivery.mode = DeliveryMode::Mx;
        s.dns.nameservers = vec![self.dns.nameserver()];
        s.delivery.mx.port = self.port;
        s.delivery.mx.ehlo_name = "mta.postline.test".into();
        // The sinks are on loopback.
        s.delivery.mx.allow_private_destinations = true;
        s.delivery.mx.retry_schedule_secs = vec![1];
        s.delivery.connect_timeout_secs = 2;
        s.delivery.command_timeout_secs = 5;
        s.worker.poll_interval_ms = 100;
    }
}

fn options() -> SmtpOptions {
    SmtpOptions {
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        ..SmtpOptions::default()
    }
}

fn message(to: &[&str]) -> OutgoingMessage {
    let mut b = lettre::Message::builder()
        .from("App <app@sender.test>".parse().unwrap())
        .subject("mx test");
    for t in to {
        b = b.to(t.parse().unwrap());
    }
    OutgoingMessage::new(
        TenantId::new(),
        uuid::Uuid::new_v4(),
        "bounces@sender.test".into(),
        to.iter().map(|s| s.to_string()).collect(),
        b.body("hello".to_string()).unwrap().formatted(),
    )
}

fn rule(name: &str, suffix: &str, conns: usize, per_conn: u32, per_minute: u32) -> SiteRule {
    SiteRule {
        name: name.into(),
        mx_suffixes: vec![suffix.into()],
        max_connections: conns,
        messages_per_connection: per_conn,
        messages_per_minute: per_minute,
    }
}

fn fates(outcome: &Outcome) -> Vec<(String, Fate)> {
    match outcome {
        Outcome::PerRecipient { recipients, .. } => {
            let mut v: Vec<_> = recipients
                .iter()
                .map(|r| (r.recipient.clone(), r.fate))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }
        other => panic!("expected per-recipient fates, got {other:?}"),
    }
}

#[tokio::test]
async fn mx_preference_order_and_fallback_when_the_first_refuses() {
    let mut w = World::new().await;
    let primary = w.mx_host("mx1.pref.test", 2, SinkConfig::default()).await;
    let backup = w.mx_host("mx2.pref.test", 3, SinkConfig::default()).await;
    w.dns.add_mx("pref.test", 20, "mx2.pref.test");
    w.dns.add_mx("pref.test", 10, "mx1.pref.test");
    // fallback.test's preferred host has nothing listening (refused).
    w.dns.add_ip("dead.fallback.test", ip(250));
    w.dns.add_mx("fallback.test", 5, "dead.fallback.test");
    w.dns.add_mx("fallback.test", 50, "mx2.pref.test");
    let t = MxTransport::new(&w.settings(), options());

    let out = t.send(&message(&["a@pref.test"])).await;
    assert!(out.is_delivered(), "{out:?}");
    assert_eq!(w.sinks[primary].count(), 1, "lowest preference first");
    assert_eq!(w.sinks[backup].count(), 0);

    let out = t.send(&message(&["b@fallback.test"])).await;
    assert!(out.is_delivered(), "{out:?}");
    let got = w.sinks[backup].wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["b@fallback.test".to_string()]);
}

#[tokio::test]
async fn no_mx_falls_back_to_the_address_and_null_mx_bounces() {
    let mut w = World::new().await;
    let only = w.mx_host("bare.test", 2, SinkConfig::default()).await;
    w.dns.add_null_mx("nomail.test");
    let t = MxTransport::new(&w.settings(), options());

    let out = t.send(&message(&["x@bare.test"])).await;
    assert!(out.is_delivered(), "implicit MX: {out:?}");
    assert_eq!(
        w.sinks[only].wait_for(1, WAIT).await[0].rcpt_to,
        vec!["x@bare.test".to_string()]
    );

    let out = t.send(&message(&["y@nomail.test"])).await;
    match &out {
        Outcome::Bounced { response } => assert!(response.contains("5.1.10"), "{response}"),
        other => panic!("null MX must bounce: {other:?}"),
    }
    // A name with neither MX nor address records bounces too.
    let out = t.send(&message(&["z@nowhere.test"])).await;
    assert!(matches!(out, Outcome::Bounced { .. }), "{out:?}");
}

fn self_signed(host: &str) -> Arc<tokio_rustls::rustls::ServerConfig> {
    use tokio_rustls::rustls;
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    Arc::new(config)
}

#[tokio::test]
async fn starttls_offered_is_used_and_required_verify_refuses_a_self_signed_host() {
    let mut w = World::new().await;
    let tls = SinkConfig {
        advertise_starttls: true,
        tls: Some(self_signed("mx.tls.test")),
        ..SinkConfig::default()
    };
    let sink = w.mx_host("mx.tls.test", 3, tls).await;
    let plain = w.mx_host("mx.plain.test", 4, SinkConfig::default()).await;
    w.dns.add_mx("tls.test", 10, "mx.tls.test");
    w.dns.add_mx("plain.test", 10, "mx.plain.test");

    let t = MxTransport::new(&w.settings(), options());
    let out = t.send(&message(&["a@tls.test", "b@plain.test"])).await;
    assert!(out.is_delivered(), "{out:?}");
    let got = w.sinks[sink].wait_for(1, WAIT).await;
    assert!(
        got[0].tls,
        "STARTTLS was offered, so the message went encrypted"
    );
    assert!(
        !w.sinks[plain].wait_for(1, WAIT).await[0].tls,
        "opportunistic: plain where not offered"
    );

    let mut s = w.settings();
    s.delivery.mx.tls = MxTls::RequiredVerify;
    let strict = MxTransport::new(&s, options());
    let out = strict.send(&message(&["c@tls.test"])).await;
    assert!(
        matches!(out, Outcome::Deferred { .. }),
        "self-signed fails verification: {out:?}"
    );
    s.delivery.mx.tls = MxTls::Required;
    let required = MxTransport::new(&s, options());
    let out = required.send(&message(&["d@plain.test"])).await;
    assert!(
        matches!(out, Outcome::Deferred { .. }),
        "no STARTTLS offered: {out:?}"
    );
    let out = required.send(&message(&["e@tls.test"])).await;
    assert!(out.is_delivered(), "required without verification: {out:?}");
    assert_eq!(w.sinks[sink].count(), 2);
    assert_eq!(w.sinks[plain].count(), 1);
}

#[tokio::test]
async fn dns_answers_are_cached_for_their_ttl() {
    let mut w = World::new().await;
    let first = w.mx_host("mx.a.ttl.test", 3, SinkConfig::default()).await;
    let second = w.mx_host("mx.b.ttl.test", 4, SinkConfig::default()).await;
    w.dns.set_ttl(2);
    w.dns.add_mx("ttl.test", 10, "mx.a.ttl.test");
    let t = MxTransport::new(&w.settings(), options());
    assert!(t.send(&message(&["a@ttl.test"])).await.is_delivered());
    w.dns.remove("ttl.test");
    w.dns.add_mx("ttl.test", 10, "mx.b.ttl.test");
    assert!(t.send(&message(&["b@ttl.test"])).await.is_delivered());
    assert_eq!(
        w.sinks[first].count(),
        2,
        "the MX answer is cached within its TTL"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(t.send(&message(&["c@ttl.test"])).await.is_delivered());
    assert_eq!(w.sinks[second].count(), 1, "and looked up again after it");
}

#[tokio::test]
async fn ehlo_name_source_address_and_address_family() {
    let mut w = World::new().await;
    let v4 = w.mx_host("mx.v4.test", 3, SinkConfig::default()).await;
    w.dns.add_mx("v4.test", 10, "mx.v4.test");
    // mx.dual.test: its IPv4 address refuses, its IPv6 one (::1) is a sink.
    let v6 = SmtpSink::start_at(
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        w.port,
        SinkConfig::default(),
    )
    .await;
    w.dns.add_ip("mx.dual.test", ip(253));
    w.dns
        .add_ip("mx.dual.test", IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
    w.dns.add_mx("dual.test", 10, "mx.dual.test");

    let mut s = w.settings();
    s.delivery.mx.source_ipv4 = "127.0.0.77".into();
    let t = MxTransport::new(&s, options());
    assert!(t.send(&message(&["a@v4.test"])).await.is_delivered());
    let got = w.sinks[v4].wait_for(1, WAIT).await;
    assert_eq!(got[0].helo, "mta.postline.test");
    assert_eq!(
        got[0].peer.map(|p| p.ip()),
        Some(ip(77)),
        "bound to delivery.mx.source_ipv4"
    );
    // prefer-ipv4: the refused IPv4 address first, then IPv6.
    assert!(t.send(&message(&["b@dual.test"])).await.is_delivered());

    s.delivery.mx.ip_family = postline::delivery::mx::IpFamily::Ipv4Only;
    let t = MxTransport::new(&s, options());
    let out = t.send(&message(&["c@dual.test"])).await;
    assert!(
        matches!(out, Outcome::Deferred { .. }),
        "IPv4 only: {out:?}"
    );

    s.delivery.mx.ip_family = postline::delivery::mx::IpFamily::PreferIpv6;
    s.delivery.mx.source_ipv4 = String::new();
    let t = MxTransport::new(&s, options());
    assert!(t.send(&message(&["d@dual.test"])).await.is_delivered());
    assert_eq!(v6.count(), 2);
}
