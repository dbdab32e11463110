//! Inbound DSN throughput (issue 13): `deploy/dev bench dsn`.
//!
//! 1. The parse success rate over the whole corpus (`tests/corpus/bounces`,
//!    Sisimai's set-of-emails, BSD-2-Clause): files parsed without error or
//!    panic, and delivery failures whose recipient and status were found.
//! 2. Parse-only throughput (`bounces::dsn::parse`, one thread).
//! 3. The listener: corpus DSNs rewritten to messages of our own (recipient
//!    and return path), sent over real SMTP sessions (`CONNS` at once, one
//!    transaction after another per session) to the running inbound listener,
//!    which parses and records each; the figure counts only recipient rows
//!    recorded `bounced` in Postgres. Same-run baseline: the same sessions and
//!    messages to the same SMTP server with a handler that only accepts
//!    (run before and after the listener; their mean is the baseline).
//!
//! Sizes: `POSTLINE_BENCH_DSN_MESSAGES` (default 3000; the smoke run of
//! `cargo test` sends each template once), `POSTLINE_BENCH_DSN_CONNS` (8).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::app::{settings, BenchApp};
use common::bounced::{delivered, recorded};
use common::{print_figure, BenchEnv};
use postline::bounces::dsn::{self, Kind};
use postline::bounces::token::{return_path, VerpKeys};
use postline::smtp_server::{Envelope, Handler, Limits, Reply, Server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const BOUNCE_DOMAIN: &str = "bounces.bench.test";
const PLACEHOLDER: &str = "placeholder-rcpt@bench.invalid";

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bounces")
}

/// Not bounces: auto-replies and the corpus's own negatives (as in
/// tests/suite/bounce_corpus.rs).
fn is_failure(name: &str) -> bool {
    !(name.starts_with("arf-") || name.starts_with("rfc3834-") || name.starts_with("is-not-bounce"))
}

/// `text` with every ASCII-case-insensitive occurrence of `from` replaced.
fn replace_ci(text: &str, from: &str, to: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let from = from.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(i) = lower[at..].find(&from) {
        out.push_str(&text[at..at + i]);
        out.push_str(to);
        at += i + from.len();
    }
    out.push_str(&text[at..]);
    out
}

/// The corpus's rate, and the failures usable as templates: those whose
/// recipient, rewritten to the placeholder, is what the parser finds.
fn corpus() -> Vec<(String, String)> {
    let dir = corpus_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("bounce corpus at {}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    names.sort();
    let (mut parsed, mut failures, mut found, mut arf, mut complaints) = (0, 0, 0, 0, 0);
    let mut templates = Vec::new();
    for name in &names {
        let raw = std::fs::read(dir.join(name)).expect("corpus file");
        let report = std::panic::catch_unwind(|| dsn::parse(&raw)).ok().flatten();
        if report.is_some() {
            parsed += 1;
        }
        if name.starts_with("arf-") {
            arf += 1;
            if matches!(
                report.as_ref().map(|r| &r.kind),
                Some(Kind::Complaint { .. })
            ) {
                complaints += 1;
            }
            continue;
        }
        if !is_failure(name) {
            continue;
        }
        failures += 1;
        let Some(f) = report.as_ref().and_then(|r| r.failures.first()) else {
            continue;
        };
        if !(f.status_found && f.recipient.contains('@')) {
            continue;
        }
        found += 1;
        let text = replace_ci(&String::from_utf8_lossy(&raw), &f.recipient, PLACEHOLDER);
        let ok = dsn::parse(text.as_bytes()).is_some_and(|r| {
            r.failures.len() == 1 && r.failures[0].recipient.eq_ignore_ascii_case(PLACEHOLDER)
        });
        if ok {
            templates.push((name.clone(), text));
        }
    }
    let pct = |a: usize, b: usize| a as f64 * 100.0 / b.max(1) as f64;
    print_figure(
        "corpus: parsed without error",
        format!(
            "{parsed}/{} files ({:.1}%)",
            names.len(),
            pct(parsed, names.len())
        ),
    );
    print_figure(
        "corpus: failures with rcpt+status",
        format!("{found}/{failures} ({:.1}%)", pct(found, failures)),
    );
    print_figure(
        "corpus: ARF read as complaints",
        format!("{complaints}/{arf}"),
    );
    print_figure(
        "corpus: listener templates",
        format!("{} (single failure, recipient rewritable)", templates.len()),
    );
    templates
}

/// Parse-only throughput over the templates, one thread.
fn parse_only(templates: &[(String, String)], rounds: usize) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    for _ in 0..rounds {
        for (_, t) in templates {
            std::hint::black_box(dsn::parse(t.as_bytes()));
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// A handler that accepts every recipient and message and does nothing.
struct AcceptAll;

#[async_trait]
impl Handler for AcceptAll {
    async fn rcpt(&self, _env: &Envelope, _to: &str) -> Reply {
        Reply::new(250, "2.1.5 OK")
    }
    async fn data(&self, _env: Envelope, _message: Vec<u8>) -> Reply {
        Reply::new(250, "2.0.0 processed")
    }
}

/// One message to deliver: envelope recipient and the dot-stuffed DATA.
struct Dsn {
    rcpt: String,
    data: Vec<u8>,
    /// Which corpus template it was made from (for refusals).
    template: usize,
}

fn stuffed(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 64);
    for line in text.lines() {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> u16 {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return 0;
        }
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
    }
}

/// One session: every message of `mine`, one transaction after another.
/// Returns how many were answered 250 after DATA, and the refusals
/// (template, reply code).
async fn session(addr: SocketAddr, mine: Vec<Arc<Dsn>>) -> (usize, Vec<(usize, u16)>) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    assert_eq!(reply(&mut r).await, 220);
    w.write_all(b"EHLO mta.bench.example\r\n").await.unwrap();
    assert_eq!(reply(&mut r).await, 250);
    let mut ok = 0;
    let mut refused = Vec::new();
    for m in mine {
        w.write_all(b"MAIL FROM:<>\r\n").await.unwrap();
        let mail = reply(&mut r).await;
        w.write_all(format!("RCPT TO:<{}>\r\n", m.rcpt).as_bytes())
            .await
            .unwrap();
        let rcpt = reply(&mut r).await;
        if mail != 250 || rcpt != 250 {
            refused.push((m.template, mail.max(rcpt)));
            w.write_all(b"RSET\r\n").await.unwrap();
            reply(&mut r).await;
            continue;
        }
        w.write_all(b"DATA\r\n").await.unwrap();
        let go = reply(&mut r).await;
        if go != 354 {
            refused.push((m.template, go));
            continue;
        }
        w.write_all(&m.data).await.unwrap();
        match reply(&mut r).await {
            250 => ok += 1,
            code => refused.push((m.template, code)),
        }
    }
    w.write_all(b"QUIT\r\n").await.unwrap();
    let _ = reply(&mut r).await;
    (ok, refused)
}

/// All messages over `conns` sessions at once; (250 answers, elapsed),
/// printing refusals (template and reply code) if any.
async fn run(
    addr: SocketAddr,
    msgs: &[Arc<Dsn>],
    conns: usize,
    names: &[&str],
) -> (usize, Duration) {
    let mut parts: Vec<Vec<Arc<Dsn>>> = vec![Vec::new(); conns];
    for (i, m) in msgs.iter().enumerate() {
        parts[i % conns].push(m.clone());
    }
    let start = Instant::now();
    let tasks: Vec<_> = parts
        .into_iter()
        .map(|p| tokio::spawn(session(addr, p)))
        .collect();
    let mut ok = 0;
    let mut refused = Vec::new();
    for t in tasks {
        let (n, r) = t.await.expect("session task");
        ok += n;
        refused.extend(r);
    }
    let elapsed = start.elapsed();
    if !refused.is_empty() {
        refused.sort_unstable();
        refused.dedup();
        let named: Vec<String> = refused
            .iter()
            .map(|(t, code)| format!("{} {code}", names.get(*t).unwrap_or(&"?")))
            .collect();
        print_figure("  refused (corpus file, code)", named.join(", "));
    }
    (ok, elapsed)
}

fn main() {
    let Some(env) = BenchEnv::from_env("dsn") else {
        return;
    };
    env.print_header();
    let templates = corpus();
    assert!(!templates.is_empty(), "no usable corpus DSN");
    let per_sec = parse_only(&templates, env.iters(20, 1));
    print_figure("parse only (1 thread)", format!("{per_sec:.0} DSNs/s"));

    // The smoke run sends every template once (it found a DSN answered 451).
    let n = env.param("DSN_MESSAGES", 3000, templates.len());
    let conns = env.param("DSN_CONNS", 8, 2).max(1);
    let db = env.fresh_database();
    let mut s = settings(&db.url, None);
    s.bounces.domain = BOUNCE_DOMAIN.into();
    s.inbound.bind = "127.0.0.1:0".into();
    let rt = common::runtime();
    rt.block_on(async {
        let app = BenchApp::start(s.clone()).await;
        let (tenant, rows) = delivered(&app, &db.url, n).await;
        let keys = VerpKeys::from_settings(&s).expect("verp keys");
        let msgs: Vec<Arc<Dsn>> = rows
            .iter()
            .enumerate()
            .map(|(i, (email_id, rcpt))| {
                // One recipient per message: index 0.
                let token = keys.token(tenant, *email_id, 0);
                let text = templates[i % templates.len()].1.replace(PLACEHOLDER, rcpt);
                Arc::new(Dsn {
                    rcpt: return_path(&token, BOUNCE_DOMAIN),
                    data: stuffed(&text),
                    template: i % templates.len(),
                })
            })
            .collect();
        let bytes: usize = msgs.iter().map(|m| m.data.len()).sum();
        print_figure(
            "messages",
            format!(
                "{n} DSNs, mean {} bytes, {conns} sessions at once",
                bytes / n.max(1)
            ),
        );
        let limits = Limits {
            hostname: BOUNCE_DOMAIN.into(),
            ..Limits::default()
        };
        let sink = Server::bind("127.0.0.1:0", limits, Arc::new(AcceptAll))
            .await
            .expect("accept-only server");
        let listener = postline::bounces::inbound::start(&s, app.state.pool.clone())
            .await
            .expect("inbound starts")
            .expect("inbound.bind is set");

        let names: Vec<&str> = templates.iter().map(|(n, _)| n.as_str()).collect();
        let (b1, t1) = run(sink.addr(), &msgs, conns, &names).await;
        let (ok, t) = run(listener.addr(), &msgs, conns, &names).await;
        let (b2, t2) = run(sink.addr(), &msgs, conns, &names).await;
        let got = recorded(&db.url, tenant);
        assert_eq!(b1 + b2, 2 * n, "the accept-only server took every message");
        if env.mode == common::Mode::Smoke {
            assert_eq!(got as usize, n, "every DSN recorded (250s: {ok})");
        }
        let rate = got as f64 / t.as_secs_f64();
        let base = 2.0 * n as f64 / (t1 + t2).as_secs_f64();
        print_figure(
            "listener: parsed + recorded",
            format!(
                "{rate:.0} DSNs/s ({got}/{n} recorded in Postgres, {ok} answered 250, {:.2} s)",
                t.as_secs_f64()
            ),
        );
        print_figure(
            "baseline: accept-only server",
            format!(
                "{base:.0} DSNs/s (same sessions, {:.2} s + {:.2} s)",
                t1.as_secs_f64(),
                t2.as_secs_f64()
            ),
        );
        print_figure(
            "ratio (listener / baseline)",
            format!("{:.3}x", rate / base),
        );
        listener.stop().await;
        sink.stop().await;
    });
}
