//! Direct delivery (issue 16) against real components: an authoritative DNS
//! server on loopback publishing MX/A records, and SMTP sinks on distinct
//! loopback addresses (127.0.0.x) sharing one port, as MX hosts share 25
//! (`delivery.mx.port` points there). Transport-level tests drive
//! `MxTransport` directly; the end-to-end ones go through the API, the
//! queue and the worker.

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
    OutgoingMessage {
        tenant_id: TenantId::new(),
        email_id: uuid::Uuid::new_v4(),
        envelope_from: "bounces@sender.test".into(),
        recipients: to.iter().map(|s| s.to_string()).collect(),
        raw: b.body("hello".to_string()).unwrap().formatted(),
    }
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
async fn a_site_limited_to_two_connections_never_sees_a_third() {
    let mut w = World::new().await;
    let slow = SinkConfig {
        data_delay: Duration::from_millis(30),
        ..SinkConfig::default()
    };
    let sink = w.mx_host("mx.capped-site.test", 3, slow).await;
    // Two domains with the same MX host: one site, one limit.
    w.dns.add_mx("capped-a.test", 10, "mx.capped-site.test");
    w.dns.add_mx("capped-b.test", 10, "mx.capped-site.test");
    let mut s = w.settings();
    s.delivery.mx.sites = vec![rule("capped", "capped-site.test", 2, 3, 100_000)];
    s.delivery.mx.max_wait_ms = 30_000;
    let t = Arc::new(MxTransport::new(&s, options()));

    let sends = (0..24).map(|i| {
        let t = t.clone();
        let to = format!("u{i}@capped-{}.test", if i % 2 == 0 { "a" } else { "b" });
        tokio::spawn(async move { t.send(&message(&[to.as_str()])).await })
    });
    for out in futures_util::future::join_all(sends).await {
        let out = out.unwrap();
        assert!(out.is_delivered(), "{out:?}");
    }
    assert_eq!(w.sinks[sink].count(), 24);
    assert_eq!(
        w.sinks[sink].peak_connections(),
        2,
        "two at once, never a third"
    );
    // 3 messages per connection: at least 8 sessions were opened in turn.
    assert!(
        w.sinks[sink].connections() >= 8,
        "{}",
        w.sinks[sink].connections()
    );
}

fn rate_metric(site: &str) -> Option<f64> {
    let text = postline::metrics::render(&[]);
    let prefix = format!("postline_mx_site_rate_per_minute{{site=\"{site}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_site_answering_421_is_slowed_and_others_are_not() {
    let mut w = World::new().await;
    let busy = w
        .mx_host("mx.busy-site.test", 3, SinkConfig::default())
        .await;
    let calm = w
        .mx_host("mx.calm-site.test", 4, SinkConfig::default())
        .await;
    w.dns.add_mx("busy.test", 10, "mx.busy-site.test");
    w.dns.add_mx("calm.test", 10, "mx.calm-site.test");
    let mut s = w.settings();
    s.delivery.mx.sites = vec![
        rule("busy421", "busy-site.test", 1, 100, 120),
        rule("calm421", "calm-site.test", 1, 100, 120),
    ];
    s.delivery.mx.max_wait_ms = 200;
    s.delivery.mx.slowdown_secs = 600;
    let t = MxTransport::new(&s, options());
    w.sinks[busy].script("a@busy.test", vec![421]);

    let out = t.send(&message(&["a@busy.test", "b@calm.test"])).await;
    assert_eq!(
        fates(&out),
        vec![
            ("a@busy.test".into(), Fate::Deferred),
            ("b@calm.test".into(), Fate::Delivered)
        ]
    );
    assert_eq!(rate_metric("busy421"), Some(60.0), "halved from 120/min");
    assert_eq!(
        rate_metric("calm421"),
        Some(120.0),
        "the other site keeps its rate"
    );

    // 60/min: the next busy.test message has no slot within max_wait and goes
    // back to the queue unattempted; calm.test (120/min, 1 s apart) still
    // sends once its own interval has passed.
    let out = t.send(&message(&["c@busy.test"])).await;
    assert!(matches!(out, Outcome::Throttled { .. }), "{out:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let out = t.send(&message(&["d@calm.test"])).await;
    assert!(out.is_delivered(), "{out:?}");
    assert_eq!(w.sinks[calm].count(), 2);
    assert_eq!(w.sinks[busy].count(), 0);
}

#[tokio::test]
async fn a_domain_whose_mx_is_down_defers_at_once_while_others_deliver() {
    let mut w = World::new().await;
    let up = w.mx_host("mx.up.test", 3, SinkConfig::default()).await;
    w.dns.add_mx("up.test", 10, "mx.up.test");
    w.dns.add_ip("mx.down.test", ip(251));
    w.dns.add_mx("down.test", 10, "mx.down.test");
    let mut s = w.settings();
    s.delivery.mx.down_secs = 60;
    let t = MxTransport::new(&s, options());

    let out = t.send(&message(&["a@up.test", "b@down.test"])).await;
    assert_eq!(
        fates(&out),
        vec![
            ("a@up.test".into(), Fate::Delivered),
            ("b@down.test".into(), Fate::Deferred)
        ]
    );
    // The site is known down: its mail defers without a connection attempt
    // (no worker slot held for a connect timeout), the other site still flows.
    let started = Instant::now();
    let out = t.send(&message(&["c@down.test"])).await;
    assert!(matches!(out, Outcome::Deferred { .. }), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(t.send(&message(&["d@up.test"])).await.is_delivered());
    assert_eq!(w.sinks[up].count(), 2);
}

async fn wait_email(app: &TestApp, key: &str, id: &str, what: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = app.get(&format!("/v1/emails/{id}"), key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if what(&r.json) {
            return r.json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "email {id} never got there: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn recipient_status(email: &Value, addr: &str) -> String {
    email["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["email"] == addr)
        .unwrap_or_else(|| panic!("no recipient {addr} in {email}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// End to end: one message to five domains. Three arrive at their own MX
/// sinks (each sink sees only its domain's recipient), the null-MX one
/// bounces, the unreachable one defers and is retried on the mx schedule
/// without resending to the others.
#[tokio::test]
async fn three_domains_arrive_at_their_own_sinks_end_to_end() {
    let mut w = World::new().await;
    let mut sinks = Vec::new();
    for (i, d) in ["one", "two", "three"].iter().enumerate() {
        let host = format!("mx.{d}.test");
        sinks.push(w.mx_host(&host, 2 + i as u8, SinkConfig::default()).await);
        w.dns.add_mx(&format!("{d}.test"), 10, &host);
    }
    w.dns.add_null_mx("null.test");
    w.dns.add_ip("mx.gone.test", ip(252));
    w.dns.add_mx("gone.test", 10, "mx.gone.test");
    let mut app = TestApp::spawn_with(|s| w.apply(s)).await;
    app.start_worker();
    let t = app.create_tenant(json!({"name": "Acme"})).await;
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let to = [
        "a@one.test",
        "b@two.test",
        "c@three.test",
        "d@null.test",
        "e@gone.test",
    ];
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "app@acme.example", "to": to, "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    let email = wait_email(&app, &key, &id, |e| {
        e["recipients"]
            .as_array()
            .is_some_and(|rs| rs.iter().all(|r| r["status"] != "queued"))
            && e["attempts"].as_i64().unwrap_or(0) >= 2
    })
    .await;
    for (i, addr) in to[..3].iter().enumerate() {
        assert_eq!(recipient_status(&email, addr), "delivered", "{email}");
        let got = w.sinks[sinks[i]].messages();
        assert_eq!(got.len(), 1, "delivered once, not again on the retry");
        assert_eq!(got[0].rcpt_to, vec![addr.to_string()]);
    }
    assert_eq!(recipient_status(&email, "d@null.test"), "bounced");
    assert_eq!(recipient_status(&email, "e@gone.test"), "deferred");
    assert_eq!(email["status"], "deferred");
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

async fn post(app: &TestApp, key: &str, to: &str) -> String {
    let body = json!({"from": "app@acme.example", "to": to, "subject": "s", "text": "t"});
    let r = app.post("/v1/emails", key, body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

/// Tenant A's burst fills a one-connection site's queue; tenant B's three
/// messages, sent after it, take turns with A's instead of waiting behind
/// all of them.
#[tokio::test]
async fn tenant_fairness_holds_inside_a_site() {
    let mut w = World::new().await;
    let slow = SinkConfig {
        data_delay: Duration::from_millis(100),
        ..SinkConfig::default()
    };
    let sink = w.mx_host("mx.fair-site.test", 3, slow).await;
    w.dns.add_mx("fair.test", 10, "mx.fair-site.test");
    let mut app = TestApp::spawn_with(|s| {
        w.apply(s);
        s.delivery.mx.sites = vec![rule("fair", "fair-site.test", 1, 1000, 100_000)];
        s.delivery.mx.max_wait_ms = 60_000;
        s.delivery.lease_secs = 120;
    })
    .await;
    let a = app.create_tenant(json!({"name": "A"})).await;
    let key_a = app
        .tenant_key(a["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let b = app.create_tenant(json!({"name": "B"})).await;
    let key_b = app
        .tenant_key(b["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    for i in 0..30 {
        post(&app, &key_a, &format!("a{i}@fair.test")).await;
    }
    // A's 30 are claimed and waiting for the site's one connection...
    app.start_worker();
    assert!(w.sinks[sink].wait_count(1, WAIT).await);
    // ...when B's arrive.
    for i in 0..3 {
        post(&app, &key_b, &format!("b{i}@fair.test")).await;
    }
    let delivered_before_b = w.sinks[sink].count();
    let got = w.sinks[sink].wait_for(33, Duration::from_secs(60)).await;
    let order: Vec<char> = got
        .iter()
        .map(|m| m.rcpt_to[0].chars().next().unwrap())
        .collect();
    let last_b = order.iter().rposition(|c| *c == 'b').unwrap();
    let a_ahead = order[delivered_before_b.min(last_b)..last_b]
        .iter()
        .filter(|c| **c == 'a')
        .count();
    // Round-robin: about one of A's per B's (plus the one on the wire);
    // first come first served would put every waiting A (15+) ahead.
    assert!(
        delivered_before_b <= 15,
        "B was sent too late to tell: {delivered_before_b} of A's already delivered"
    );
    assert!(
        a_ahead <= 6,
        "{a_ahead} of A's went ahead of B's last ({delivered_before_b} delivered before B was sent): {order:?}"
    );
}

#[tokio::test]
async fn a_tenant_relay_override_still_wins_in_mx_mode() {
    let mut w = World::new().await;
    let mx = w.mx_host("mx.dest.test", 3, SinkConfig::default()).await;
    w.dns.add_mx("dest.test", 10, "mx.dest.test");
    let relay = SmtpSink::start().await;
    let mut app = TestApp::spawn_with(|s| w.apply(s)).await;
    app.start_worker();
    let own = app
        .create_tenant(json!({"name": "Own", "smtp": {"host": "127.0.0.1", "port": relay.port(), "tls": "none"}}))
        .await;
    let key_own = app
        .tenant_key(own["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let direct = app.create_tenant(json!({"name": "Direct"})).await;
    let key_direct = app
        .tenant_key(direct["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    post(&app, &key_own, "x@dest.test").await;
    post(&app, &key_direct, "y@dest.test").await;
    assert_eq!(
        relay.wait_for(1, WAIT).await[0].rcpt_to,
        vec!["x@dest.test".to_string()]
    );
    assert_eq!(
        w.sinks[mx].wait_for(1, WAIT).await[0].rcpt_to,
        vec!["y@dest.test".to_string()]
    );
}
