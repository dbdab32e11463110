//! SMTP submission throughput (issue 14): `MESSAGES` messages of `SIZE`
//! bytes (default 10 KB) over `SESSIONS` (16) SMTP sessions (lettre's
//! connection), each with STARTTLS and AUTH PLAIN once, into the real app with its worker
//! delivering to a sink (the in-process one, or `POSTLINE_BENCH_RELAY_PORT`:
//! Postfix's smtp-sink in `SUBMISSION=1 deploy/bench-postfix.sh`, which also
//! times smtp-source into a private Postfix). Same-run baseline: the same
//! client and load into `smtp_server` with a handler that accepts and drops
//! (TLS and protocol alone, no database).
//!
//!   deploy/dev bench submission
//!   POSTLINE_BENCH_MESSAGES=2000 deploy/dev bench submission

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::sink::SinkThread;
use common::{app, print_figure, BenchEnv};
use diesel::prelude::*;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use postline::smtp_server::{self, Handler, Identity, Reply};

#[path = "../tests/suite/common/test_ca.rs"]
mod test_ca;

/// Accepts any login and any message, keeps nothing: the protocol ceiling.
struct Drop;

#[async_trait]
impl Handler for Drop {
    async fn auth(
        &self,
        _: Option<std::net::SocketAddr>,
        _: &str,
        _: &str,
    ) -> Result<Identity, Reply> {
        Ok(Arc::new(()))
    }
    async fn rcpt(&self, _: &smtp_server::Envelope, _: &str) -> Reply {
        Reply::ok()
    }
    async fn data(&self, _: smtp_server::Envelope, _: Vec<u8>) -> Reply {
        Reply::new(250, "2.0.0 dropped")
    }
}

/// One SMTP session: connect, STARTTLS, AUTH PLAIN once, then `n`
/// messages on that connection (a pooled lettre transport may open a new
/// connection while the last one is still being returned to its pool,
/// which would measure TLS handshakes instead of sessions).
async fn session(
    port: u16,
    tls: TlsParameters,
    key: String,
    raw: Arc<Vec<u8>>,
    env: Envelope,
    n: usize,
) -> usize {
    let hello = ClientId::Domain("bench.local".into());
    let timeout = Some(Duration::from_secs(60));
    let mut c =
        match AsyncSmtpConnection::connect_tokio1(("127.0.0.1", port), timeout, &hello, None, None)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("submission bench: connect: {e}");
                return 0;
            }
        };
    let creds = Credentials::new("bench".into(), key);
    if let Err(e) = c.starttls(tls, &hello).await {
        eprintln!("submission bench: STARTTLS: {e}");
        return 0;
    }
    if let Err(e) = c.auth(&[Mechanism::Plain], &creds).await {
        eprintln!("submission bench: AUTH: {e}");
        return 0;
    }
    let mut ok = 0;
    for _ in 0..n {
        match c.send(&env, &raw).await {
            Ok(_) => ok += 1,
            Err(e) => eprintln!("submission bench: refused: {e}"),
        }
    }
    let _ = c.quit().await;
    ok
}

/// `total` messages over `sessions` SMTP sessions at once; the wall time
/// and how many got a 250.
async fn drive(
    port: u16,
    ca: &[u8],
    key: &str,
    raw: Arc<Vec<u8>>,
    env: Envelope,
    total: usize,
    sessions: usize,
) -> (Duration, usize) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let n = total / sessions + usize::from(s < total % sessions);
        let tls = TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(ca).unwrap())
            .build_rustls()
            .unwrap();
        let task = session(port, tls, key.to_string(), raw.clone(), env.clone(), n);
        tasks.push(tokio::spawn(task));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap_or(0);
    }
    (started.elapsed(), ok)
}

fn delivered(url: &str) -> i64 {
    use postline::db::schema::emails::dsl::*;
    let mut c = PgConnection::establish(url).expect("bench db");
    emails
        .filter(status.eq("delivered"))
        .count()
        .get_result(&mut c)
        .unwrap_or(0)
}

fn main() {
    let Some(env) = BenchEnv::from_env("submission") else {
        return;
    };
    env.print_header();
    let total = env.param("MESSAGES", 5000, 40);
    let sessions = env.param("SESSIONS", 16, 4);
    let size = env.param("SIZE", 10 * 1024, 10 * 1024);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (dir, ca) = test_ca::make("pl-bench");
    let db = env.fresh_database();
    let sink = SinkThread::start();
    let relay = std::env::var("POSTLINE_BENCH_RELAY_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(sink.sink.port());
    let mut s = app::settings(&db.url, Some(relay));
    s.submission.tls_cert_file = dir.join("cert.pem").display().to_string();
    s.submission.tls_key_file = dir.join("key.pem").display().to_string();
    s.submission.max_connections_per_tenant = sessions;
    s.delivery.max_connections_per_relay = sessions;
    let mut bench = rt.block_on(app::BenchApp::start(s));
    let tenant = rt.block_on(bench.tenants(1)).remove(0);
    {
        let _rt = rt.enter();
        bench.start_worker();
    }
    let listeners = rt
        .block_on(postline::submission::start(&bench.state))
        .unwrap()
        .expect("submission starts");
    let from = format!("bench@{}", tenant.domain);
    let body = "x".repeat(76) + "\r\n";
    let head = format!("From: {from}\r\nTo: rcpt@example.com\r\nSubject: bench\r\n\r\n");
    let lines = size.saturating_sub(head.len()) / body.len();
    let raw = Arc::new(format!("{head}{}", body.repeat(lines.max(1))).into_bytes());
    let envelope = Envelope::new(
        Some(from.parse().unwrap()),
        vec!["rcpt@example.com".parse().unwrap()],
    )
    .unwrap();
    print_figure("setup", format!("{total} messages of {} B, {sessions} sessions, STARTTLS + AUTH PLAIN; relay port {relay}", raw.len()));

    let port = listeners.starttls.addr().port();
    let base = delivered(&db.url);
    let (wall, ok) = rt.block_on(drive(
        port,
        &ca,
        &tenant.key,
        raw.clone(),
        envelope.clone(),
        total,
        sessions,
    ));
    let rate = ok as f64 / wall.as_secs_f64();
    print_figure(
        "postline submission accepted",
        format!("{ok} in {:.2} s: {rate:.0} msg/s", wall.as_secs_f64()),
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    let started = Instant::now() - wall;
    while delivered(&db.url) - base < ok as i64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let done = started.elapsed();
    print_figure(
        "postline submission delivered",
        format!(
            "{ok} in {:.2} s: {:.0} msg/s",
            done.as_secs_f64(),
            ok as f64 / done.as_secs_f64()
        ),
    );

    let tls =
        postline::submission::tls_config(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let security = smtp_server::Security {
        tls: Some(tls),
        auth: true,
        ..Default::default()
    };
    let limits = smtp_server::Limits {
        max_message_bytes: 10 << 20,
        ..Default::default()
    };
    let drop_server = rt
        .block_on(smtp_server::Server::bind_with(
            "127.0.0.1:0",
            limits,
            security,
            Arc::new(Drop),
        ))
        .unwrap();
    let (bwall, bok) = rt.block_on(drive(
        drop_server.addr().port(),
        &ca,
        "any",
        raw,
        envelope,
        total,
        sessions,
    ));
    let brate = bok as f64 / bwall.as_secs_f64();
    print_figure(
        "baseline smtp_server accept-and-drop",
        format!("{bok} in {:.2} s: {brate:.0} msg/s", bwall.as_secs_f64()),
    );
    print_figure(
        "ratio submission / accept-and-drop",
        format!("{:.2}", rate / brate),
    );
    rt.block_on(async {
        drop_server.stop().await;
        listeners.stop().await;
        bench.stop_worker().await;
    });
    drop(sink);
    let _ = std::fs::remove_dir_all(&dir);
}
