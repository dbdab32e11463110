//! Tracked links (issue 29): redirects per second and p99 of `GET /c/{token}`
//! (HMAC verification, the hit pushed to the events' channel, 302) against
//! the same server's static redirect (`GET /` → 303 `/console`: routing and
//! a fixed answer, nothing else), in one run, alternating static / tracked /
//! static / tracked / static, closed loop over `POSTLINE_BENCH_TRACKING_CONNS`
//! keep-alive connections (32), `POSTLINE_BENCH_TRACKING_REQUESTS` per arm
//! (100,000). In the tracked arms every request comes from one address, so
//! past the first batches most hits are dropped at
//! `tracking.max_pending_per_address` (the answer is unchanged; that is the
//! flood case). A last arm spreads the same link over 4,096 client
//! addresses (`X-Forwarded-For`, trusted here), so hits are kept up to
//! `tracking.max_pending_events` and the events' writer writes them (the
//! link names a delivered message): its answer rate, and the events written
//! per second until the channel is drained.
//!
//! Run: `deploy/dev bench tracking`.

mod common;

use std::sync::Arc;

use common::app::{settings, BenchApp};
use common::http::{self, Load, Outcome};
use common::{print_figure, BenchEnv, Mode};
use diesel::prelude::*;
use postline::tracking::token::{Kind, Link, LinkKeys};

fn main() {
    let Some(env) = BenchEnv::from_env("tracking") else {
        return;
    };
    env.print_header();
    common::runtime().block_on(run(&env));
}

async fn run(env: &BenchEnv) {
    let db = env.fresh_database();
    let mut s = settings(&db.url, None);
    s.tracking.public_url = "https://t.bench.example".into();
    s.auth.trust_x_forwarded_for = true;
    let app = BenchApp::start(s).await;
    let tenant: uuid::Uuid = app.tenants(1).await[0].id.parse().expect("tenant id");
    let email = uuid::Uuid::new_v4();
    let mut conn = PgConnection::establish(&db.url).expect("bench db");
    diesel::sql_query(format!(
        "INSERT INTO emails (tenant_id, id, status, attempts, expires_at, message_id, from_addr, \
           envelope_from, to_addrs, subject, text_body, created_at, delivered_at) \
         VALUES ('{tenant}', '{email}', 'delivered', 1, now() + interval '1 day', '<b@bench.example>', \
           'shop@bench.example', 'shop@bench.example', ARRAY['rcpt@example.org'], 'Hi', 'Hi', \
           now() - interval '1 hour', now() - interval '1 hour')"
    ))
    .execute(&mut conn)
    .expect("a delivered message");
    let keys = LinkKeys::from_settings(&app.state.settings).expect("link keys");
    let token = keys
        .token(&Link {
            kind: Kind::Click,
            tenant_id: tenant,
            email_id: email,
            recipient: Some("rcpt@example.org".into()),
            url: Some(
                "https://shop.example/products/42?utm_source=mail&utm_campaign=december".into(),
            ),
        })
        .expect("a token");
    let total = env.param("TRACKING_REQUESTS", 100_000, 200);
    let concurrency = env.param("TRACKING_CONNS", 32, 4);
    let arm = |path: &str, expect: u16| Load {
        addr: app.addr,
        requests: Arc::new(vec![http::get(path)]),
        total,
        concurrency,
        rate: None,
        expect,
        keep_bodies: false,
    };
    let fixed = arm("/", 303);
    let tracked = arm(&format!("/c/{token}"), 302);
    let one = |label: &str, load: &Load| -> Outcome {
        let out = http::drive(load);
        if out.failed > 0 {
            let why = out.first_failure.clone().unwrap_or_default();
            assert!(
                env.mode == Mode::Full,
                "{label}: {} failed: {why}",
                out.failed
            );
            print_figure("  FAILED", format!("{} first: {why}", out.failed));
        }
        let p99 = out.latencies.percentiles(&[0.99])[0];
        print_figure(
            label,
            format!(
                "{:.0} req/s  p99 {:.2} ms  ({} in {:.2} s)",
                out.rate(),
                p99.as_secs_f64() * 1e3,
                out.ok,
                out.wall.as_secs_f64()
            ),
        );
        out
    };
    // Warm both paths (connections, caches), unmeasured.
    http::drive(&Load {
        total: total / 10 + 1,
        ..fixed.clone()
    });
    http::drive(&Load {
        total: total / 10 + 1,
        ..tracked.clone()
    });
    let (mut s_rate, mut t_rate, mut s_lat, mut t_lat) = (0.0, 0.0, Vec::new(), Vec::new());
    for round in 0..5 {
        if round % 2 == 0 {
            let o = one("static redirect GET /", &fixed);
            s_rate += o.rate() / 3.0;
            s_lat.extend(o.latencies.percentiles(&[0.99]));
        } else {
            let o = one("tracked link GET /c/", &tracked);
            t_rate += o.rate() / 2.0;
            t_lat.extend(o.latencies.percentiles(&[0.99]));
        }
    }
    let mean = |v: &[std::time::Duration]| {
        v.iter().map(|d| d.as_secs_f64() * 1e3).sum::<f64>() / v.len().max(1) as f64
    };
    print_figure(
        "RESULT static (3 arms, mean)",
        format!("{s_rate:.0} req/s  p99 {:.2} ms", mean(&s_lat)),
    );
    print_figure(
        "RESULT tracked (2 arms, mean)",
        format!("{t_rate:.0} req/s  p99 {:.2} ms", mean(&t_lat)),
    );
    print_figure(
        "RESULT ratio tracked / static",
        format!(
            "{:.2} (rate), {:.2} (p99)",
            t_rate / s_rate.max(1e-9),
            mean(&t_lat) / mean(&s_lat).max(1e-9)
        ),
    );
    // Many addresses: hits kept, and written.
    let path = format!("/c/{token}");
    let spread: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 10.{}.{}.1\r\n\r\n",
                i / 256,
                i % 256
            )
            .into_bytes()
        })
        .collect();
    // The single-address arms' last hits written first.
    while app.state.tracking.sink.pending().0 > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before = clicks(&mut conn);
    let t0 = std::time::Instant::now();
    one(
        "tracked, 4096 addresses",
        &Load {
            requests: Arc::new(spread),
            ..tracked.clone()
        },
    );
    while app.state.tracking.sink.pending().0 > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let elapsed = t0.elapsed().as_secs_f64() - 0.2;
    let written = clicks(&mut conn) - before;
    print_figure(
        "events written (many addresses)",
        format!(
            "{written} in {elapsed:.2} s: {:.0} events/s (the rest dropped at max_pending_events)",
            written as f64 / elapsed.max(1e-9)
        ),
    );
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn clicks(conn: &mut PgConnection) -> i64 {
    diesel::sql_query("SELECT count(*) AS n FROM email_events WHERE type = 'email.clicked'")
        .get_result::<Count>(conn)
        .expect("count events")
        .n
}
