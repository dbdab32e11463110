//! Issue 22, finding 3: direct delivery never reaches internal addresses
//! unless the operator allows it, dials a bounded number of addresses, and
//! one attempt has a deadline.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::end_to_end::{recipient_status, wait_email};
use super::*;
use postline::delivery::{RelayConfig, SmtpTransport};

/// An MX on loopback with the guard on (the default): nothing is dialled,
/// the recipient bounces (soft: not suppressed) and the stored reply names
/// the host, the address, its class and the setting.
#[tokio::test]
async fn an_mx_on_loopback_is_refused_with_the_guard_on_and_the_reply_says_why() {
    let mut w = World::new().await;
    let sink = w
        .mx_host("mx.internal.test", 3, SinkConfig::default())
        .await;
    w.dns.add_mx("internal.test", 10, "mx.internal.test");
    let mut app = TestApp::spawn_with(|s| {
        w.apply(s);
        s.delivery.mx.allow_private_destinations = false;
    })
    .await;
    app.start_worker();
    let t = app.create_tenant(json!({"name": "Acme"})).await;
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "app@acme.example", "to": "a@internal.test", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap();
    let email = wait_email(&app, &key, id, |e| e["status"] == "bounced").await;
    assert_eq!(recipient_status(&email, "a@internal.test"), "bounced");
    let reply = email["smtp_response"].as_str().unwrap_or_default();
    for part in [
        "mx.internal.test",
        "127.0.0.3",
        "loopback",
        "delivery.mx.allow_private_destinations",
    ] {
        assert!(reply.contains(part), "{part} missing from {reply:?}");
    }
    let rcpt = &email["recipients"][0];
    assert_eq!(rcpt["bounce"]["type"], "soft", "{rcpt}");
    assert_eq!(email["attempts"], 1, "permanent at the first attempt");
    let suppressed: i64 = {
        use diesel::prelude::*;
        use postline::db::schema::suppressions::dsl::*;
        suppressions
            .count()
            .get_result(&mut app.sql_conn())
            .unwrap()
    };
    assert_eq!(suppressed, 0, "a policy refusal suppresses nobody");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.sinks[sink].count(), 0);
    assert_eq!(w.sinks[sink].connections(), 0, "never connected");
}

/// Every non-public class, transport level: refused with the guard on;
/// metadata refused even with private destinations allowed, and an MX host
/// behind it is used instead.
#[tokio::test]
async fn each_internal_range_is_refused_and_metadata_even_when_private_is_allowed() {
    let mut w = World::new().await;
    let ok = w.mx_host("mx.ok.test", 2, SinkConfig::default()).await;
    let ranges = [
        ("loop", "127.0.0.2"),
        ("rfc1918", "10.1.2.3"),
        ("rfc1918b", "192.168.1.1"),
        ("ula", "fd12:3456::1"),
        ("linklocal", "169.254.1.1"),
        ("cgnat", "100.64.0.1"),
        ("unspecified", "0.0.0.0"),
        ("multicast", "224.0.0.1"),
        ("doc", "192.0.2.1"),
        ("metadata", "169.254.169.254"),
        ("metadata6", "fd00:ec2::254"),
        ("mapped", "::ffff:127.0.0.1"),
    ];
    for (name, addr) in ranges {
        let host = format!("mx.{name}.test");
        w.dns.add_ip(&host, addr.parse().unwrap());
        w.dns.add_mx(&format!("{name}.test"), 10, &host);
    }
    // localhost by name, without asking DNS.
    w.dns.add_mx("byname.test", 10, "localhost");
    let mut s = w.settings();
    s.delivery.mx.allow_private_destinations = false;
    let t = MxTransport::new(&s, options());
    let mut domains: Vec<&str> = ranges.iter().map(|(n, _)| *n).collect();
    domains.push("byname");
    for name in domains {
        let out = t.send(&message(&[&format!("x@{name}.test")])).await;
        match &out {
            Outcome::Bounced { response } => {
                assert!(response.contains("5.4.0"), "{name}: {response}")
            }
            other => panic!("{name}: refused, not {other:?}"),
        }
    }
    assert_eq!(w.sinks[ok].connections(), 0);

    // Allowed: loopback passes, metadata never; a second MX takes the mail.
    w.dns.add_mx("metadata.test", 20, "mx.ok.test");
    s.delivery.mx.allow_private_destinations = true;
    let t = MxTransport::new(&s, options());
    let out = t.send(&message(&["y@metadata.test"])).await;
    assert!(out.is_delivered(), "{out:?}");
    let out = t.send(&message(&["z@metadata6.test"])).await;
    match &out {
        Outcome::Bounced { response } => {
            assert!(response.contains("metadata"), "{response}")
        }
        other => panic!("metadata stays refused: {other:?}"),
    }
    assert_eq!(w.sinks[ok].count(), 1);
}

/// Listeners that accept and close at once (a session that fails), counting
/// the connections they got.
async fn closers(w: &World, lasts: std::ops::Range<u8>) -> Arc<AtomicUsize> {
    let seen = Arc::new(AtomicUsize::new(0));
    for last in lasts {
        let l = tokio::net::TcpListener::bind((ip(last), w.port))
            .await
            .unwrap();
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(tcp);
            }
        });
    }
    seen
}

/// Eight addresses whose sessions all fail: one attempt dials five
/// (`delivery.mx.max_addresses`), over hosts in preference order.
#[tokio::test]
async fn one_attempt_dials_at_most_max_addresses() {
    let w = World::new().await;
    let seen = closers(&w, 20..28).await;
    for last in 20..24 {
        w.dns.add_ip("mx1.many.test", ip(last));
    }
    for last in 24..28 {
        w.dns.add_ip("mx2.many.test", ip(last));
    }
    w.dns.add_mx("many.test", 10, "mx1.many.test");
    w.dns.add_mx("many.test", 20, "mx2.many.test");
    let s = w.settings();
    assert_eq!(s.delivery.mx.max_addresses, 5, "the default");
    let t = MxTransport::new(&s, options());
    let out = t.send(&message(&["a@many.test"])).await;
    assert!(matches!(out, Outcome::Deferred { .. }), "{out:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 5);

    let mut s = w.settings();
    s.delivery.mx.max_addresses = 8;
    let t = MxTransport::new(&s, options());
    t.send(&message(&["b@many.test"])).await;
    assert_eq!(seen.load(Ordering::SeqCst), 5 + 8, "all eight exist");
}

/// A destination that stalls after DATA: the attempt defers at
/// `attempt_timeout`, long before the data timeout would end it, for
/// direct delivery and for a relay alike.
#[tokio::test]
async fn an_attempt_that_stalls_is_cut_off_at_the_attempt_timeout() {
    let mut w = World::new().await;
    let stall = SinkConfig {
        data_delay: Duration::from_secs(30),
        ..SinkConfig::default()
    };
    let sink = w.mx_host("mx.stall.test", 3, stall).await;
    w.dns.add_mx("stall.test", 10, "mx.stall.test");
    let opts = SmtpOptions {
        data_timeout: Duration::from_secs(60),
        attempt_timeout: Duration::from_secs(2),
        ..options()
    };
    let mx = MxTransport::new(&w.settings(), opts.clone());
    let relay = SmtpTransport::new(
        RelayConfig {
            host: "127.0.0.3".into(),
            port: w.port,
            tls: postline::config::TlsMode::None,
            username: None,
            password: None,
        },
        opts,
    );
    let transports: [(&str, &dyn Transport); 2] = [("mx", &mx), ("relay", &relay)];
    for (name, t) in transports {
        let started = Instant::now();
        let out = t.send(&message(&["a@stall.test"])).await;
        let took = started.elapsed();
        match &out {
            Outcome::Deferred { response } => assert!(
                response.contains("timed out after 2s (delivery.attempt_timeout_secs)"),
                "{name}: {response}"
            ),
            other => panic!("{name}: deferred, not {other:?}"),
        }
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(5),
            "{name}: {took:?}"
        );
    }
    assert_eq!(w.sinks[sink].count(), 0, "nothing was accepted in time");
}
