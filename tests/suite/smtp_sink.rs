//! The test SMTP sink, exercised with lettre's async client and a raw socket,
//! so the harness itself is known to speak SMTP correctly before delivery
//! tests rely on it. No database needed.

use crate::common;

use std::time::Duration;

use common::smtp_sink::{SinkConfig, SmtpSink};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

fn client(sink: &SmtpSink) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port())
        .build()
}

fn auth_client(
    sink: &SmtpSink,
    user: &str,
    pass: &str,
    m: Mechanism,
) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port())
        .credentials(Credentials::new(user.into(), pass.into()))
        .authentication(vec![m])
        .build()
}

fn message(to: &str, body: &str) -> Message {
    Message::builder()
        .from("Sender <sender@example.com>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject("sink test")
        .body(body.to_string())
        .unwrap()
}

fn code(err: &SmtpError) -> u16 {
    err.status().map(u16::from).unwrap_or(0)
}

#[tokio::test]
async fn accepts_a_message_with_its_body_intact() {
    let sink = SmtpSink::start().await;
    let body = "line one\r\n.leading dot survives\r\n..two dots\r\nend";
    client(&sink)
        .send(message("rcpt@example.org", body))
        .await
        .expect("250");
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "sender@example.com");
    assert_eq!(got[0].rcpt_to, vec!["rcpt@example.org".to_string()]);
    assert!(got[0].text().contains(body), "{}", got[0].text());
    assert!(got[0].auth_user.is_none());
    assert!(sink.rejected().is_empty());
}

#[tokio::test]
async fn defers_and_bounces_by_local_part() {
    let sink = SmtpSink::start().await;
    let c = client(&sink);
    let err = c
        .send(message("defer-me@example.org", "x"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(code(&err), 451);
    let err = c
        .send(message("bounce@example.org", "x"))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert_eq!(code(&err), 550);
    assert_eq!(
        sink.rejected(),
        vec![
            ("defer-me@example.org".to_string(), 451),
            ("bounce@example.org".to_string(), 550)
        ]
    );
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn scripts_are_consumed_one_per_attempt() {
    let sink = SmtpSink::start().await;
    sink.script("Flaky@Example.org", vec![451, 550, 250]);
    let c = client(&sink);
    let first = c.send(message("flaky@example.org", "x")).await.unwrap_err();
    assert_eq!(code(&first), 451);
    let second = c.send(message("flaky@example.org", "x")).await.unwrap_err();
    assert_eq!(code(&second), 550);
    c.send(message("flaky@example.org", "x"))
        .await
        .expect("third attempt is scripted 250");
    // Script exhausted: back to the default (250).
    c.send(message("flaky@example.org", "x"))
        .await
        .expect("default 250");
    assert_eq!(sink.wait_for(2, WAIT).await.len(), 2);
}

#[tokio::test]
async fn auth_is_enforced_for_plain_and_login() {
    let sink = SmtpSink::start_with(SinkConfig {
        require_auth: Some(("relay-user".into(), "s3cret".into())),
        advertise_starttls: false,
        ..Default::default()
    })
    .await;

    let err = client(&sink)
        .send(message("a@example.org", "x"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), 530, "{err}");

    let err = auth_client(&sink, "relay-user", "wrong", Mechanism::Plain)
        .send(message("a@example.org", "x"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), 535, "{err}");
    let err = auth_client(&sink, "relay-user", "wrong", Mechanism::Login)
        .send(message("a@example.org", "x"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), 535, "{err}");

    auth_client(&sink, "relay-user", "s3cret", Mechanism::Plain)
        .send(message("plain@example.org", "x"))
        .await
        .expect("PLAIN");
    auth_client(&sink, "relay-user", "s3cret", Mechanism::Login)
        .send(message("login@example.org", "x"))
        .await
        .expect("LOGIN");
    let got = sink.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|m| m.auth_user.as_deref() == Some("relay-user")));
}

#[tokio::test]
async fn two_messages_on_one_connection() {
    let sink = SmtpSink::start().await;
    let mut conn = AsyncSmtpConnection::connect_tokio1(
        sink.addr(),
        Some(WAIT),
        &ClientId::Domain("client.test".into()),
        None,
        None,
    )
    .await
    .expect("connect");
    for to in ["one@example.org", "two@example.org"] {
        let msg = message(to, "same connection");
        conn.send(msg.envelope(), &msg.formatted())
            .await
            .expect("250");
    }
    conn.quit().await.expect("221");
    let got = sink.wait_for(2, WAIT).await;
    assert_eq!(got[0].connection_id, got[1].connection_id);
    assert_eq!(sink.connections(), 1);
}

/// A client that sends the whole transaction in one write gets every reply,
/// and DATA is refused with 554 when every recipient was rejected.
#[tokio::test]
async fn tolerates_pipelining() {
    let sink = SmtpSink::start().await;
    let stream = TcpStream::connect(sink.addr()).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    macro_rules! next {
        () => {
            lines.next_line().await.unwrap().unwrap_or_default()
        };
    }

    assert!(next!().starts_with("220"));
    w.write_all(
        b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<bounce@x.test>\r\nDATA\r\n",
    )
    .await
    .unwrap();
    let mut ehlo = Vec::new();
    loop {
        let l = next!();
        let last = l.starts_with("250 ");
        ehlo.push(l);
        if last {
            break;
        }
    }
    assert!(ehlo.iter().any(|l| l.contains("PIPELINING")), "{ehlo:?}");
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    assert!(next!().starts_with("250")); // MAIL
    assert!(next!().starts_with("250")); // RCPT b
    assert!(next!().starts_with("550")); // RCPT bounce
    assert!(next!().starts_with("354")); // DATA
    w.write_all(b"Subject: p\r\n\r\n..dot\r\n.\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<bounce2@x.test>\r\nDATA\r\nQUIT\r\n")
        .await
        .unwrap();
    assert!(next!().starts_with("250")); // end of data
    assert!(next!().starts_with("250")); // MAIL
    assert!(next!().starts_with("550")); // RCPT
    assert!(next!().starts_with("554")); // DATA with no valid recipient
    assert!(next!().starts_with("221"));
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].data, b"Subject: p\r\n\r\n.dot\r\n");
    assert_eq!(got[0].rcpt_to, vec!["b@x.test".to_string()]);
}

#[tokio::test]
async fn many_concurrent_connections() {
    let sink = SmtpSink::start().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let addr = sink.addr();
        tasks.push(tokio::spawn(async move {
            let mut conn = AsyncSmtpConnection::connect_tokio1(
                addr,
                Some(WAIT),
                &ClientId::Domain("client.test".into()),
                None,
                None,
            )
            .await
            .unwrap();
            for j in 0..5 {
                let msg = message(&format!("r{i}-{j}@example.org"), &"x".repeat(2000));
                conn.send(msg.envelope(), &msg.formatted()).await.unwrap();
            }
            conn.quit().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(sink.wait_for(100, WAIT).await.len(), 100);
    assert_eq!(sink.connections(), 20);
}

/// The relay-down drill stops the sink and brings it back on the same port:
/// while stopped, connections are refused and open sessions are cut; after
/// the restart it accepts again and keeps what it had received.
#[tokio::test]
async fn stops_and_restarts_on_the_same_port() {
    let mut sink = SmtpSink::start().await;
    let port = sink.port();
    let mut open = AsyncSmtpConnection::connect_tokio1(
        sink.addr(),
        Some(WAIT),
        &ClientId::Domain("client.test".into()),
        None,
        None,
    )
    .await
    .unwrap();
    let msg = message("before@example.org", "one");
    open.send(msg.envelope(), &msg.formatted()).await.unwrap();

    sink.stop().await;
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    let msg = message("during@example.org", "two");
    assert!(open.send(msg.envelope(), &msg.formatted()).await.is_err());

    sink.restart().await;
    assert_eq!(sink.port(), port);
    client(&sink)
        .send(message("after@example.org", "three"))
        .await
        .unwrap();
    let got = sink.wait_for(2, WAIT).await;
    let rcpts: Vec<&str> = got.iter().map(|m| m.rcpt_to[0].as_str()).collect();
    assert_eq!(rcpts, ["before@example.org", "after@example.org"]);

    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let other = SmtpSink::start_on(free).await;
    assert_eq!(other.port(), free);
    client(&other)
        .send(message("x@example.org", "four"))
        .await
        .unwrap();
    assert_eq!(other.wait_for(1, WAIT).await.len(), 1);
}
