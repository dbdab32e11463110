//! The inbound listener under a flood (issue 22, finding 4):
//! `deploy/dev bench inbound_flood`.
//!
//! Legitimate DSNs (one per delivered message, each to the message's own
//! return path, `CONNS` sessions from 127.0.0.1, one transaction after
//! another) are sent to the running inbound listener, which parses and
//! records each; the figure counts recipient rows recorded `bounced` in
//! Postgres per second. Measured twice without a flood (before and after;
//! their mean is the baseline) and once while one other address
//! (127.0.0.2) floods the listener with `FLOODERS` clients that reconnect
//! at once whenever they are refused or closed and, once greeted, send RCPTs
//! of forged return paths, random local parts and foreign domains as fast
//! as the replies come. The flood's own tallies are printed (connections
//! greeted and refused, RCPTs sent, sessions closed at the error budget)
//! and the existence queries the RCPT checks made.
//!
//! Sizes: `POSTLINE_BENCH_FLOOD_MESSAGES` (DSNs per phase, default 1000),
//! `POSTLINE_BENCH_FLOOD_CONNS` (legitimate sessions, 4),
//! `POSTLINE_BENCH_FLOODERS` (flooding clients, 50),
//! `POSTLINE_BENCH_FLOOD_BACKOFF_MS` (a flooding client's pause after a 421
//! refusal; 0: it reconnects at once). The flooding clients run in this
//! process, so on a small machine part of the drop is their CPU (and the
//! kernel's, for every refused connection), not the listener's.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::app::{settings, BenchApp};
use common::bounced::{delivered, recorded};
use common::{print_figure, BenchEnv};
use postline::bounces::inbound::{serve, BounceHandler};
use postline::bounces::token::{return_path, VerpKeys};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream};

const BOUNCE_DOMAIN: &str = "bounces.bench.test";
const LEGIT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// An RFC 3464 report of a 5.1.1 for `rcpt`, dot-stuffed for DATA.
fn dsn(return_path: &str, rcpt: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@mx.example.com\r\n\
         To: <{return_path}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         Your message could not be delivered.\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx.example.com\r\n\
         \r\n\
         Final-Recipient: rfc822; {rcpt}\r\n\
         Action: failed\r\n\
         Status: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: user unknown\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         From: Shop <orders@shop.example>\r\n\
         To: {rcpt}\r\n\
         Subject: Your order\r\n\
         \r\n\
         --b1--\r\n\
         .\r\n"
    )
    .into_bytes()
}

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let tcp = socket.connect(to).await?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The code of the next reply (its last line); 0 at EOF.
async fn reply(r: &mut BufReader<OwnedReadHalf>) -> u16 {
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

/// One legitimate session: each (return path, DSN) in turn; the 250s.
async fn legit_session(addr: SocketAddr, mine: Vec<(String, Vec<u8>)>) -> usize {
    let tcp = connect_from(LEGIT, addr).await.expect("connect");
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    assert_eq!(
        reply(&mut r).await,
        220,
        "the legitimate sender was greeted"
    );
    w.write_all(b"EHLO mta.example.com\r\n").await.unwrap();
    assert_eq!(reply(&mut r).await, 250);
    let mut ok = 0;
    for (rp, data) in mine {
        w.write_all(b"MAIL FROM:<>\r\n").await.unwrap();
        let mail = reply(&mut r).await;
        w.write_all(format!("RCPT TO:<{rp}>\r\n").as_bytes())
            .await
            .unwrap();
        let rcpt = reply(&mut r).await;
        assert_eq!((mail, rcpt), (250, 250), "a real return path is taken");
        w.write_all(b"DATA\r\n").await.unwrap();
        assert_eq!(reply(&mut r).await, 354);
        w.write_all(&data).await.unwrap();
        if reply(&mut r).await == 250 {
            ok += 1;
        }
    }
    w.write_all(b"QUIT\r\n").await.unwrap();
    ok
}

/// Every DSN over `conns` sessions at once: (250s, elapsed).
async fn legit(addr: SocketAddr, msgs: Vec<(String, Vec<u8>)>, conns: usize) -> (usize, Duration) {
    let mut parts = vec![Vec::new(); conns];
    for (i, m) in msgs.into_iter().enumerate() {
        parts[i % conns].push(m);
    }
    let start = Instant::now();
    let tasks: Vec<_> = parts
        .into_iter()
        .map(|p| tokio::spawn(legit_session(addr, p)))
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.expect("legit session");
    }
    (ok, start.elapsed())
}

#[derive(Default)]
struct FloodTally {
    greeted: AtomicU64,
    refused: AtomicU64,
    rcpts: AtomicU64,
    closed_at_budget: AtomicU64,
}

/// One flooding client: connect, and once greeted send refused RCPTs until
/// the server closes; again, until `stop`.
async fn flooder(
    addr: SocketAddr,
    id: usize,
    backoff: Duration,
    stop: Arc<AtomicBool>,
    tally: Arc<FloodTally>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = connect_from(FLOODER, addr).await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let (r, mut w) = tcp.into_split();
        let mut r = BufReader::new(r);
        if reply(&mut r).await != 220 {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            continue;
        }
        tally.greeted.fetch_add(1, Ordering::Relaxed);
        if w.write_all(b"EHLO flood.example\r\nMAIL FROM:<x@flood.example>\r\n")
            .await
            .is_err()
        {
            continue;
        }
        reply(&mut r).await;
        reply(&mut r).await;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let to = match n % 3 {
                0 => format!("b+{id}x{n}forged@{BOUNCE_DOMAIN}"),
                1 => format!("u{id}x{n}@{BOUNCE_DOMAIN}"),
                _ => format!("b+{n}@pl-bounces.d{id}x{n}.example"),
            };
            if w.write_all(format!("RCPT TO:<{to}>\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            tally.rcpts.fetch_add(1, Ordering::Relaxed);
            match reply(&mut r).await {
                550 => {}
                421 => {
                    tally.closed_at_budget.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                _ => break,
            }
        }
    }
}

fn main() {
    let Some(env) = BenchEnv::from_env("inbound_flood") else {
        return;
    };
    env.print_header();
    let n = env.param("FLOOD_MESSAGES", 1000, 20);
    let conns = env.param("FLOOD_CONNS", 4, 2).max(1);
    let flooders = env.param("FLOODERS", 50, 20).max(1);
    let backoff = Duration::from_millis(env.param("FLOOD_BACKOFF_MS", 0, 0) as u64);
    let db = env.fresh_database();
    let mut s = settings(&db.url, None);
    s.bounces.domain = BOUNCE_DOMAIN.into();
    s.inbound.bind = "127.0.0.1:0".into();
    common::runtime().block_on(async {
        let app = BenchApp::start(s.clone()).await;
        let keys = VerpKeys::from_settings(&s).expect("verp keys");
        let mut phases = Vec::new();
        for _ in 0..3 {
            let (tenant, rows) = delivered(&app, &db.url, n).await;
            let msgs: Vec<(String, Vec<u8>)> = rows
                .iter()
                .map(|(email_id, rcpt)| {
                    // One recipient per message: index 0.
                    let rp = return_path(&keys.token(tenant, *email_id, 0), BOUNCE_DOMAIN);
                    let data = dsn(&rp, rcpt);
                    (rp, data)
                })
                .collect();
            phases.push((tenant, msgs));
        }
        let handler =
            Arc::new(BounceHandler::new(&s, app.state.pool.clone()).expect("bounce handler"));
        let listener = serve(&s, handler.clone()).await.expect("inbound starts");
        let addr = listener.addr();
        print_figure(
            "setup",
            format!(
                "{n} DSNs per phase, {conns} legitimate sessions from {LEGIT}; \
                 {flooders} flooding clients from {FLOODER} ({backoff:?} pause after a 421); \
                 inbound.max_connections_per_ip = {}",
                s.inbound.max_connections_per_ip
            ),
        );

        let mut phases = phases.into_iter();
        let (t1, m1) = phases.next().expect("phase 1");
        let (ok1, d1) = legit(addr, m1, conns).await;

        let (t2, m2) = phases.next().expect("phase 2");
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(FloodTally::default());
        let lookups_before = handler.lookups();
        let flood: Vec<_> = (0..flooders)
            .map(|i| tokio::spawn(flooder(addr, i, backoff, stop.clone(), tally.clone())))
            .collect();
        // The flood at full strength before the measured run starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (ok2, d2) = legit(addr, m2, conns).await;
        stop.store(true, Ordering::Relaxed);
        for f in flood {
            let _ = f.await;
        }
        let lookups = handler.lookups() - lookups_before;

        let (t3, m3) = phases.next().expect("phase 3");
        let (ok3, d3) = legit(addr, m3, conns).await;

        let got = [t1, t2, t3].map(|t| recorded(&db.url, t));
        if env.mode == common::Mode::Smoke {
            assert_eq!(
                got, [n as i64; 3],
                "every DSN recorded ({ok1}, {ok2}, {ok3} 250s)"
            );
        }
        let base = (got[0] + got[2]) as f64 / (d1 + d3).as_secs_f64();
        let flooded = got[1] as f64 / d2.as_secs_f64();
        print_figure(
            "baseline: DSNs, no flood",
            format!(
                "{base:.0} DSNs/s recorded ({} + {} in {:.2} s + {:.2} s)",
                got[0],
                got[2],
                d1.as_secs_f64(),
                d3.as_secs_f64()
            ),
        );
        print_figure(
            "DSNs while one address floods",
            format!(
                "{flooded:.0} DSNs/s recorded ({} in {:.2} s)",
                got[1],
                d2.as_secs_f64()
            ),
        );
        print_figure(
            "ratio (flooded / baseline)",
            format!("{:.3}x", flooded / base),
        );
        let t = |c: &AtomicU64| c.load(Ordering::Relaxed);
        print_figure(
            "flood: connections",
            format!(
                "{} greeted, {} refused with 421 4.7.0",
                t(&tally.greeted),
                t(&tally.refused)
            ),
        );
        print_figure(
            "flood: RCPTs",
            format!(
                "{} refused ({:.0}/s), {} sessions closed at the error budget",
                t(&tally.rcpts),
                t(&tally.rcpts) as f64 / d2.as_secs_f64(),
                t(&tally.closed_at_budget)
            ),
        );
        print_figure(
            "existence queries during the flood",
            format!("{lookups} (the legitimate DSNs' {n} included)"),
        );
        listener.stop().await;
    });
}
