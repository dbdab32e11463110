//! Issue 22, finding 4: the inbound listener (and, through the same SMTP
//! server, submission) cannot be worn down by one address: a per-address
//! connection limit, a deadline on a whole DATA transfer and on a whole
//! command line, refused recipients counted as errors, and RCPT checks that
//! cost no query for a token that does not verify (and one per token that
//! does, remembered in a bounded cache).

use std::sync::Arc;
use std::time::{Duration, Instant};

use postline::bounces::inbound::{serve, BounceHandler};
use postline::bounces::known::Known;
use postline::bounces::token::{return_path, Ref, VerpKeys};
use postline::smtp_server::Server;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::bounces::{self, BOUNCE_DOMAIN};
use crate::common::smtp_sink::SmtpSink;
use crate::common::TestApp;

async fn listener(
    tweak: impl FnOnce(&mut postline::config::Settings),
) -> (TestApp, Arc<BounceHandler>, Server) {
    let app = TestApp::spawn_with(|s| {
        bounces::settings(s);
        tweak(s);
    })
    .await;
    let handler =
        Arc::new(BounceHandler::new(&app.state.settings, app.state.pool.clone()).unwrap());
    let server = serve(&app.state.settings, handler.clone()).await.unwrap();
    (app, handler, server)
}

struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    async fn open(server: &Server) -> (Client, String) {
        let (r, w) = TcpStream::connect(server.addr())
            .await
            .unwrap()
            .into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        let greeting = c.line().await;
        (c, greeting)
    }

    /// The next reply line ("" at EOF), within 10 s.
    async fn line(&mut self) -> String {
        let mut l = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut l));
        read.await.expect("a reply within 10 s").unwrap_or(0);
        l
    }

    /// The last line of the next (possibly multi-line) reply.
    async fn reply(&mut self) -> String {
        loop {
            let l = self.line().await;
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return l;
            }
        }
    }

    async fn say(&mut self, text: &str) -> String {
        self.w.write_all(text.as_bytes()).await.unwrap();
        self.reply().await
    }

    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), self.r.read_to_end(&mut rest));
        matches!(read.await, Ok(Ok(_))) && rest.is_empty()
    }
}

/// 60 connections at once from 127.0.0.1: `inbound.max_connections_per_ip`
/// (10 by default) are greeted, the other 50 get 421 4.7.0 and are closed.
#[tokio::test]
async fn sixty_connections_from_one_address_only_the_limit_is_greeted() {
    let (app, _, server) = listener(|_| {}).await;
    assert_eq!(app.state.settings.inbound.max_connections_per_ip, 10);
    let mut greeted = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        let (mut c, greeting) = Client::open(&server).await;
        if greeting.starts_with("220 ") {
            greeted.push(c);
        } else {
            assert!(
                greeting.starts_with("421 4.7.0")
                    && greeting.contains("too many connections from your address"),
                "{greeting:?}"
            );
            assert!(c.closed().await, "closed after the 421");
            refused += 1;
        }
    }
    assert_eq!((greeted.len(), refused), (10, 50));
    // A slot freed is a slot given again.
    let mut first = greeted.remove(0);
    assert!(first.say("QUIT\r\n").await.starts_with("221"));
    assert!(first.closed().await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_c, greeting) = Client::open(&server).await;
    assert!(greeting.starts_with("220 "), "{greeting:?}");
}

/// A DATA that sends a byte a second never trips the per-read timeout; the
/// whole transfer is cut at `inbound.data_timeout_secs`.
#[tokio::test]
async fn a_data_transfer_trickling_a_byte_a_second_is_closed_at_the_deadline() {
    let (_app, _, server) = listener(|s| s.inbound.data_timeout_secs = 3).await;
    let (mut c, _) = Client::open(&server).await;
    assert!(c.say("EHLO t\r\n").await.starts_with("250"));
    assert!(c.say("MAIL FROM:<>\r\n").await.starts_with("250"));
    let rcpt = format!("RCPT TO:<postmaster@{BOUNCE_DOMAIN}>\r\n");
    assert!(c.say(&rcpt).await.starts_with("250"));
    assert!(c.say("DATA\r\n").await.starts_with("354"));
    let started = Instant::now();
    let Client { r, w } = &mut c;
    let trickle = async {
        for b in b"Subject: slow\r\n\r\n".iter().cycle() {
            if w.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let mut got = String::new();
    tokio::select! {
        _ = trickle => {}
        _ = tokio::time::sleep(Duration::from_secs(12)) => {}
        n = r.read_line(&mut got) => { n.unwrap(); }
    }
    let took = started.elapsed();
    assert!(got.starts_with("421 4.4.2"), "{got:?} after {took:?}");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(c.closed().await);
}

/// The same for a command line: trickled, it ends at the command timeout.
#[tokio::test]
async fn a_command_line_trickling_a_byte_a_second_is_closed_at_the_command_timeout() {
    let (_app, _, server) = listener(|s| s.inbound.command_timeout_secs = 2).await;
    let (mut c, _) = Client::open(&server).await;
    let started = Instant::now();
    let Client { r, w } = &mut c;
    let trickle = async {
        for b in b"NOOP NOOP NOOP NOOP NOOP NOOP".iter() {
            if w.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let mut got = String::new();
    tokio::select! {
        _ = trickle => {}
        n = r.read_line(&mut got) => { n.unwrap(); }
    }
    let took = started.elapsed();
    assert!(got.starts_with("421 4.4.2"), "{got:?} after {took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

/// RCPTs that are refused count towards the session's error budget (10):
/// the session is closed at the budget, not served forever, and past the
/// third refusal each reply comes a second late.
#[tokio::test]
async fn a_flood_of_refused_recipients_closes_the_session_at_the_error_budget() {
    let (_app, handler, server) = listener(|_| {}).await;
    let (mut c, _) = Client::open(&server).await;
    assert!(c.say("EHLO t\r\n").await.starts_with("250"));
    assert!(c
        .say("MAIL FROM:<x@example.org>\r\n")
        .await
        .starts_with("250"));
    let started = Instant::now();
    for i in 0..10 {
        let to = match i % 3 {
            0 => format!("someone{i}@elsewhere.test"),
            1 => format!("b+{i}forged@{BOUNCE_DOMAIN}"),
            _ => format!("anyone{i}@{BOUNCE_DOMAIN}"),
        };
        let r = c.say(&format!("RCPT TO:<{to}>\r\n")).await;
        assert!(r.starts_with("550"), "{to}: {r:?}");
    }
    // The tenth refusal spends the budget: the server says so and closes.
    let last = c.line().await;
    assert!(last.starts_with("421 4.7.0"), "{last:?}");
    assert!(c.closed().await);
    // Past the third error each reply waited a second (error_delay).
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(6500), "{took:?}");
    assert_eq!(
        handler.lookups(),
        0,
        "no query for a token that does not verify"
    );
}

/// A return path whose token does not verify is refused without a query;
/// one that verifies but names no message is refused after one query,
/// however often it is tried; a real message's return path is taken.
#[tokio::test]
async fn unknown_return_paths_are_refused_at_rcpt_with_one_query_per_token() {
    let sink = SmtpSink::start().await;
    let mut app = TestApp::spawn_serving(sink.port(), bounces::settings).await;
    app.start_worker();
    let handler =
        Arc::new(BounceHandler::new(&app.state.settings, app.state.pool.clone()).unwrap());
    let server = serve(&app.state.settings, handler.clone()).await.unwrap();
    let keys = VerpKeys::from_settings(&app.state.settings).unwrap();
    let missing = return_path(
        &keys.token(Uuid::new_v4(), Uuid::new_v4(), 0),
        BOUNCE_DOMAIN,
    );
    for _ in 0..4 {
        let (mut c, _) = Client::open(&server).await;
        c.say("EHLO t\r\n").await;
        c.say("MAIL FROM:<>\r\n").await;
        for _ in 0..3 {
            let r = c.say(&format!("RCPT TO:<{missing}>\r\n")).await;
            assert!(r.starts_with("550"), "{r:?}");
        }
        let r = c
            .say(&format!(
                "RCPT TO:<b+zz{}@{BOUNCE_DOMAIN}>\r\n",
                "a".repeat(59)
            ))
            .await;
        assert!(r.starts_with("550"), "{r:?}");
        let r = c
            .say(&format!("RCPT TO:<postmaster@{BOUNCE_DOMAIN}>\r\n"))
            .await;
        assert!(r.starts_with("250"), "{r:?}");
        c.say("QUIT\r\n").await;
    }
    assert_eq!(
        handler.lookups(),
        1,
        "12 RCPTs of one unknown token, one query"
    );

    let t = app.create_tenant(serde_json::json!({"name": "Acme"})).await;
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), bounces::PERMS)
        .await;
    let id = bounces::send(&app, &key, serde_json::json!("kim@example.org")).await;
    bounces::wait_for(&app, &key, &id, |e| e["status"] == "delivered").await;
    let (return_path, _) = bounces::sent_to(&sink, "kim@example.org").await;
    let (mut c, _) = Client::open(&server).await;
    c.say("EHLO t\r\n").await;
    c.say("MAIL FROM:<>\r\n").await;
    let r = c.say(&format!("RCPT TO:<{return_path}>\r\n")).await;
    assert!(r.starts_with("250"), "{r:?}");
    assert_eq!(handler.lookups(), 2);
}

/// The existence cache holds at most its capacity, whatever is asked.
#[tokio::test]
async fn the_existence_cache_stays_within_its_bound() {
    let app = TestApp::spawn().await;
    let known = Known::new(app.state.pool.clone(), 50);
    let one = Ref {
        tenant_id: Uuid::new_v4(),
        email_id: Uuid::new_v4(),
        recipient: Some(0),
    };
    assert!(!known.exists(one).await.unwrap());
    assert!(!known.exists(one).await.unwrap());
    assert_eq!(known.lookups(), 1, "remembered");
    for _ in 0..300 {
        let r = Ref {
            tenant_id: Uuid::new_v4(),
            email_id: Uuid::new_v4(),
            recipient: Some(0),
        };
        assert!(!known.exists(r).await.unwrap());
    }
    assert_eq!(known.lookups(), 301);
    let held = known.entries().await;
    assert!((1..=50).contains(&held), "{held} entries for a bound of 50");
}
