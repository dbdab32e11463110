//! Delivery transports against a real SMTP sink on a socket (no mocks) and
//! the capture directory. No database needed.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::smtp_sink::{SinkConfig, SmtpSink};
use postline::config::{DeliveryMode, Secret, Settings, TlsMode};
use postline::delivery::{
    Fate, Outcome, OutgoingMessage, RelayConfig, SmtpOptions, SmtpTransport, Transport, Transports,
};
use postline::domain::TenantId;

const WAIT: Duration = Duration::from_secs(5);

fn options() -> SmtpOptions {
    SmtpOptions {
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        data_timeout: Duration::from_secs(5),
        hello_name: Some("postline.test".into()),
        ..SmtpOptions::default()
    }
}

fn relay(port: u16) -> RelayConfig {
    RelayConfig {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        username: None,
        password: None,
    }
}

fn smtp(sink: &SmtpSink) -> SmtpTransport {
    SmtpTransport::new(relay(sink.port()), options())
}

fn raw(to: &[&str], body: &str) -> Vec<u8> {
    let mut b = lettre::Message::builder()
        .from("App <app@sender.test>".parse().unwrap())
        .subject("delivery test");
    for t in to {
        b = b.to(t.parse().unwrap());
    }
    b.body(body.to_string()).unwrap().formatted()
}

fn message(to: &[&str], body: &str) -> OutgoingMessage {
    OutgoingMessage::new(
        TenantId::new(),
        uuid::Uuid::new_v4(),
        "bounces@sender.test".into(),
        to.iter().map(|s| s.to_string()).collect(),
        raw(to, body),
    )
}

fn settings(mode: DeliveryMode, capture_dir: PathBuf, smtp_port: u16) -> Settings {
    let mut s = common::test_settings("postgres://unused@127.0.0.1/unused");
    s.delivery.mode = mode;
    s.delivery.capture_dir = capture_dir;
    s.delivery.smtp.host = "127.0.0.1".into();
    s.delivery.smtp.port = smtp_port;
    s
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("postline-capture-{}", uuid::Uuid::new_v4()))
}

#[tokio::test]
async fn delivers_over_smtp_with_the_body_intact() {
    let sink = SmtpSink::start().await;
    let msg = message(
        &["rcpt@example.org"],
        "Hello\r\n.dot-led line\r\n\r\nbye\r\n",
    );
    let outcome = smtp(&sink).send(&msg).await;
    let Outcome::Delivered { response } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        response.starts_with("250 2.0.0 Ok: queued as"),
        "{response}"
    );
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].data, msg.raw, "byte-for-byte, no extra line");
    assert_eq!(got[0].mail_from, "bounces@sender.test");
    assert_eq!(got[0].rcpt_to, vec!["rcpt@example.org".to_string()]);
}

#[tokio::test]
async fn reuses_connections() {
    let sink = SmtpSink::start().await;
    let t = smtp(&sink);
    for i in 0..10 {
        let outcome = t.send(&message(&[&format!("r{i}@example.org")], "x")).await;
        assert!(outcome.is_delivered(), "{outcome:?}");
    }
    assert_eq!(sink.connections(), 1);

    // Concurrent sends are bounded by max_connections, not by the load.
    let sink = SmtpSink::start().await;
    let t = Arc::new(SmtpTransport::new(
        relay(sink.port()),
        SmtpOptions {
            max_connections: 2,
            ..options()
        },
    ));
    let sends = (0..10).map(|i| {
        let t = t.clone();
        tokio::spawn(async move { t.send(&message(&[&format!("c{i}@example.org")], "x")).await })
    });
    for s in sends.collect::<Vec<_>>() {
        assert!(s.await.unwrap().is_delivered());
    }
    assert_eq!(sink.wait_for(10, WAIT).await.len(), 10);
    assert!(
        sink.connections() <= 2,
        "{} connections",
        sink.connections()
    );
    assert!(t.idle_connections() <= 2);
}

#[tokio::test]
async fn transient_reply_defers_and_permanent_bounces() {
    let sink = SmtpSink::start().await;
    let t = smtp(&sink);
    let outcome = t.send(&message(&["defer@example.org"], "x")).await;
    assert_eq!(
        outcome,
        Outcome::Deferred {
            response: "451 4.3.0 try later".into()
        }
    );
    let outcome = t.send(&message(&["bounce@example.org"], "x")).await;
    assert_eq!(
        outcome,
        Outcome::Bounced {
            response: "550 5.1.1 no such user".into()
        }
    );
    // Refusals leave the connection in sync and pooled.
    assert!(t
        .send(&message(&["ok@example.org"], "x"))
        .await
        .is_delivered());
    assert_eq!(sink.connections(), 1);
    assert_eq!(sink.wait_for(1, WAIT).await.len(), 1);

    sink.script("later@example.org", vec![451, 250]);
    let first = t.send(&message(&["later@example.org"], "x")).await;
    assert!(matches!(first, Outcome::Deferred { .. }), "{first:?}");
    assert!(t
        .send(&message(&["later@example.org"], "x"))
        .await
        .is_delivered());
}

#[tokio::test]
async fn partial_recipient_refusals() {
    let sink = SmtpSink::start().await;
    let t = smtp(&sink);
    // A permanent refusal: the others still get it; each recipient has its
    // own fate and reply.
    let outcome = t
        .send(&message(&["ok@example.org", "bounce@example.org"], "x"))
        .await;
    let Outcome::PerRecipient { recipients, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(recipients.len(), 2, "{recipients:?}");
    assert_eq!(recipients[0].recipient, "ok@example.org");
    assert_eq!(recipients[0].fate, Fate::Delivered);
    assert_eq!(recipients[1].recipient, "bounce@example.org");
    assert_eq!(recipients[1].fate, Fate::Bounced);
    assert_eq!(recipients[1].response, "550 5.1.1 no such user");
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["ok@example.org".to_string()]);

    // A transient refusal defers that recipient alone; 552 on RCPT is
    // temporary too (RFC 5321 §4.5.3.1.10).
    sink.script("big@example.org", vec![552]);
    let outcome = t
        .send(&message(
            &["ok2@example.org", "defer@example.org", "big@example.org"],
            "x",
        ))
        .await;
    let Outcome::PerRecipient { recipients, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    let fates: Vec<Fate> = recipients.iter().map(|r| r.fate).collect();
    assert_eq!(fates, vec![Fate::Delivered, Fate::Deferred, Fate::Deferred]);
    assert_eq!(recipients[1].response, "451 4.3.0 try later");
    let got = sink.wait_for(2, WAIT).await;
    assert_eq!(got[1].rcpt_to, vec!["ok2@example.org".to_string()]);
    assert!(t
        .send(&message(&["ok3@example.org"], "x"))
        .await
        .is_delivered());
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn authenticates_to_the_relay() {
    let sink = SmtpSink::start_with(SinkConfig {
        require_auth: Some(("tenant-relay".into(), "pa55".into())),
        advertise_starttls: false,
        ..Default::default()
    })
    .await;
    let with = |password: &str| {
        SmtpTransport::new(
            RelayConfig {
                username: Some("tenant-relay".into()),
                password: Some(Secret::new(password)),
                ..relay(sink.port())
            },
            options(),
        )
    };
    let outcome = with("pa55").send(&message(&["a@example.org"], "x")).await;
    assert!(outcome.is_delivered(), "{outcome:?}");
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].auth_user.as_deref(), Some("tenant-relay"));

    let outcome = with("wrong").send(&message(&["b@example.org"], "x")).await;
    let Outcome::Deferred { response } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(response.contains("535"), "{response}");
    assert!(!response.contains("wrong"), "no secret in the response");

    // No credentials configured for a relay that wants them: fixable, so deferred.
    let outcome = smtp(&sink).send(&message(&["c@example.org"], "x")).await;
    assert_eq!(
        outcome,
        Outcome::Deferred {
            response: "MAIL refused: 530 5.7.0 Authentication required".into()
        }
    );
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn network_failures_defer() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let outcome = SmtpTransport::new(relay(port), options())
        .send(&message(&["a@example.org"], "x"))
        .await;
    let Outcome::Deferred { response } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(response.starts_with("connection refused"), "{response}");
    assert!(
        !response.contains("127.0.0.1") && !response.contains(&port.to_string()),
        "the relay address stays in the operator's log: {response}"
    );

    // A relay that accepts but never greets.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let t = SmtpTransport::new(
        relay(silent_port),
        SmtpOptions {
            command_timeout: Duration::from_millis(200),
            ..options()
        },
    );
    let outcome = t.send(&message(&["a@example.org"], "x")).await;
    assert!(
        matches!(&outcome, Outcome::Deferred { response } if response.contains("timed out")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn tls_modes_never_fall_back_to_plaintext() {
    let sink = SmtpSink::start().await;
    let with_tls = |tls, port| SmtpTransport::new(RelayConfig { tls, ..relay(port) }, options());
    let implicit = with_tls(TlsMode::Tls, sink.port())
        .send(&message(&["a@example.org"], "x"))
        .await;
    assert!(
        matches!(&implicit, Outcome::Deferred { response } if response.contains("tls")),
        "{implicit:?}"
    );
    let starttls = with_tls(TlsMode::Starttls, sink.port())
        .send(&message(&["a@example.org"], "x"))
        .await;
    assert!(
        matches!(&starttls, Outcome::Deferred { response } if response.contains("STARTTLS")),
        "{starttls:?}"
    );
    let offering = SmtpSink::start_with(SinkConfig {
        require_auth: None,
        advertise_starttls: true,
        ..Default::default()
    })
    .await;
    let refused = with_tls(TlsMode::Starttls, offering.port())
        .send(&message(&["a@example.org"], "x"))
        .await;
    assert!(
        matches!(&refused, Outcome::Deferred { response } if response.contains("454")),
        "{refused:?}"
    );
    assert!(sink.messages().is_empty() && offering.messages().is_empty());
}

#[tokio::test]
async fn replaces_dropped_and_idle_connections() {
    let sink = SmtpSink::start().await;
    let t = smtp(&sink);
    assert!(t
        .send(&message(&["a@example.org"], "x"))
        .await
        .is_delivered());
    sink.drop_connections().await;
    // The pooled connection is dead; the message still goes, on a new one.
    let outcome = t.send(&message(&["b@example.org"], "x")).await;
    assert!(outcome.is_delivered(), "{outcome:?}");
    assert_eq!(sink.connections(), 2);

    let sink = SmtpSink::start().await;
    let t = SmtpTransport::new(
        relay(sink.port()),
        SmtpOptions {
            idle_timeout: Duration::from_millis(50),
            ..options()
        },
    );
    assert!(t
        .send(&message(&["a@example.org"], "x"))
        .await
        .is_delivered());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(t
        .send(&message(&["b@example.org"], "x"))
        .await
        .is_delivered());
    assert_eq!(sink.connections(), 2);
}

#[tokio::test]
async fn capture_writes_eml_under_the_tenant_dir() {
    let dir = temp_dir();
    let transports = Transports::from_settings(&settings(DeliveryMode::Capture, dir.clone(), 25));
    let msg = message(&["a@example.org"], "captured body");
    let outcome = transports.for_tenant(None).send(&msg).await;
    let path = dir
        .join(msg.tenant_id.to_string())
        .join(format!("{}.eml", msg.email_id));
    assert_eq!(
        outcome,
        Outcome::Delivered {
            response: "250 captured".into()
        },
        "the capture path is the operator's, not the tenant's"
    );
    assert_eq!(std::fs::read(&path).unwrap(), msg.raw);
    let entries = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
    assert_eq!(entries, 1, "no temporary file left behind");

    // An unwritable directory defers instead of losing the message.
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let blocked = Transports::from_settings(&settings(DeliveryMode::Capture, file, 25));
    let outcome = blocked.for_tenant(None).send(&msg).await;
    assert!(matches!(outcome, Outcome::Deferred { .. }), "{outcome:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn transports_are_cached_per_relay_config() {
    let sink = SmtpSink::start().await;
    let other = SmtpSink::start().await;
    let transports = Transports::with_options(
        &settings(DeliveryMode::Smtp, temp_dir(), sink.port()),
        options(),
    );

    // mode=smtp: the default is the configured relay, shared with an equal override.
    let default = transports.for_tenant(None);
    assert!(Arc::ptr_eq(
        &default,
        &transports.for_tenant(Some(relay(sink.port())))
    ));
    assert!(default
        .send(&message(&["a@example.org"], "x"))
        .await
        .is_delivered());
    assert_eq!(sink.wait_for(1, WAIT).await.len(), 1);

    let override_a = RelayConfig {
        username: Some("u".into()),
        password: Some(Secret::new("hunter2")),
        ..relay(other.port())
    };
    let first = transports.for_tenant(Some(override_a.clone()));
    assert!(Arc::ptr_eq(
        &first,
        &transports.for_tenant(Some(override_a.clone()))
    ));
    let changed = RelayConfig {
        password: Some(Secret::new("two")),
        ..override_a.clone()
    };
    assert!(!Arc::ptr_eq(&first, &transports.for_tenant(Some(changed))));
    assert!(!Arc::ptr_eq(&first, &default));

    let plain = transports.for_tenant(Some(relay(other.port())));
    assert!(plain
        .send(&message(&["b@example.org"], "x"))
        .await
        .is_delivered());
    assert_eq!(other.wait_for(1, WAIT).await.len(), 1);
    assert!(
        !format!("{override_a:?}").contains("hunter2"),
        "Debug redacts"
    );
}

/// Finding 7: no password in clear unless the relay is a loopback IP literal
/// or `delivery.allow_plaintext_auth` says so. The sink listens on loopback
/// either way; the name `localhost` stands for "not a loopback literal"
/// (the rule looks at the configured host, not at what it resolves to).
#[tokio::test]
async fn plaintext_auth_is_refused_unless_loopback_literal_or_allowed() {
    let sink = SmtpSink::start_with(SinkConfig {
        require_auth: Some(("relay-user".into(), "s3cret-relay".into())),
        advertise_starttls: false,
        ..Default::default()
    })
    .await;
    let relay_at = |host: &str| RelayConfig {
        host: host.into(),
        username: Some("relay-user".into()),
        password: Some(Secret::new("s3cret-relay")),
        ..relay(sink.port())
    };

    let refused = SmtpTransport::new(relay_at("localhost"), options())
        .send(&message(&["a@example.org"], "x"))
        .await;
    let Outcome::Deferred { response } = &refused else {
        panic!("{refused:?}")
    };
    assert!(response.contains("not encrypted"), "{response}");
    assert!(response.contains("allow_plaintext_auth"), "{response}");
    assert_eq!(
        sink.auth_attempts(),
        0,
        "the password never reached the wire"
    );
    assert!(sink.messages().is_empty());

    let literal = SmtpTransport::new(relay_at("127.0.0.1"), options())
        .send(&message(&["b@example.org"], "x"))
        .await;
    assert!(literal.is_delivered(), "{literal:?}");
    assert_eq!(sink.auth_attempts(), 1);

    let allowed = SmtpTransport::new(
        relay_at("localhost"),
        SmtpOptions {
            allow_plaintext_auth: true,
            ..options()
        },
    )
    .send(&message(&["c@example.org"], "x"))
    .await;
    assert!(allowed.is_delivered(), "{allowed:?}");
    assert_eq!(sink.auth_attempts(), 2);
    let got = sink.wait_for(2, WAIT).await;
    assert!(got
        .iter()
        .all(|m| m.auth_user.as_deref() == Some("relay-user")));
}
