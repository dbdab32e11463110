//! Limits and metering (issue 4): what the per-tenant limiter and the usage
//! metering cost on the hot path, and whether a flooding tenant delays a
//! well-behaved one.
//!
//! Part A (worker off): single sends over HTTP, alternating arms round by
//! round — (a) tenants without limits (no limiter check; api_requests are
//! still counted in memory), (b) tenants with a never-binding
//! `requests_per_minute` (governor check + RateLimit headers on every
//! request), (c) tenants with a never-binding `emails_per_day` (the quota
//! path at acceptance). Plus the cluster-wide rate's `Rates::admit` (in memory once its share
//! is leased) and `RequestCounter::hit`
//! timed per call on one thread.
//!
//! Part B (worker on, relay = the in-process sink): tenant W (no limit) at
//! `W_RATE`/s alone, then again while tenant F (`emails_per_second` =
//! `F_LIMIT`) floods at 10× its limit; W's 202 → sink latency both times.
//!
//! Part C (worker on): head-of-line blocking (issue 10). Tenant H, with no
//! limit at all, enqueues a backlog of `BACKLOG` 10 KB messages at once;
//! W's 202 → sink latency while the worker drains it, against W alone in
//! the same run. Fair claiming gives W's mail a share of the next claim.
//! Run: `deploy/dev bench limits` (`POSTLINE_BENCH_PARTS=C` for C alone).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::app::{self, BenchApp};
use common::cpu::{self, Meter};
use common::http::{self, Load, Outcome};
use common::sink::{latency_to_sink, SinkThread};
use common::{cancel_queued, check, print_figure, BenchEnv, Samples};
use postline::usage::counter::RequestCounter;
use serde_json::json;
use uuid::Uuid;

fn main() {
    let Some(env) = BenchEnv::from_env("limits") else {
        return;
    };
    let rt = common::runtime();
    env.print_header();
    let db = env.fresh_database();
    let postmaster = cpu::port_of(&env.admin_url).and_then(cpu::postmaster);
    let sink = SinkThread::start();
    let mut bench = rt.block_on(BenchApp::start(app::settings(
        &db.url,
        Some(sink.sink.port()),
    )));
    let s = &bench.state.settings;
    print_figure(
        "setup",
        format!(
            "http workers {}, pool {}, ingest writers {}, worker {} in flight (claims of {}), poll {} ms, \
             default rpm {}, nodes {}",
            s.server.workers,
            s.database.pool_size,
            s.ingest.writers,
            s.worker.concurrency,
            s.worker.claim_batch,
            s.worker.poll_interval_ms,
            s.limits.default_requests_per_minute,
            s.limits.nodes,
        ),
    );

    let parts = std::env::var("POSTLINE_BENCH_PARTS").unwrap_or_else(|_| "ABC".into());
    if parts.contains('A') {
        part_a(&env, &rt, &bench, &db, &sink, postmaster);
        cancel_queued(&db.url);
    }
    if parts.contains('B') {
        part_b(&env, &rt, &mut bench, &db.url, &sink);
    }
    if parts.contains('C') {
        part_c(&env, &rt, &mut bench, &db.url, &sink);
    }
    drop(bench);
    drop(sink);
}

struct Arm {
    name: &'static str,
    requests: Arc<Vec<Vec<u8>>>,
    rates: Vec<f64>,
    lat: Samples,
    server_us: Vec<f64>,
}

fn part_a(
    env: &BenchEnv,
    rt: &tokio::runtime::Runtime,
    bench: &BenchApp,
    db: &common::BenchDb,
    sink: &SinkThread,
    postmaster: Option<i32>,
) {
    println!("-- A: limiter and metering on the ingest path (worker off) --");
    let tenants = env.param("TENANTS", 10, 2);
    let messages = env.param("MESSAGES", 10_000, 100);
    let rounds = env.param("ROUNDS", 3, 1);
    let concurrency = env.param("CONCURRENCY", 64, 4);
    let size = env.param("SIZE", 1024, 1024);
    let arm = |name, extra| {
        let ts = rt.block_on(bench.tenants_with(tenants, extra));
        Arm {
            name,
            requests: Arc::new(app::single_requests(&ts, messages / tenants + 1, size)),
            rates: vec![],
            lat: Samples::default(),
            server_us: vec![],
        }
    };
    let mut arms = [
        arm("(a) no limit", json!({})),
        arm(
            "(b) requests_per_minute 1e9",
            json!({"rate_limit": {"requests_per_minute": 1_000_000_000}}),
        ),
        arm(
            "(c) emails_per_day 1e9",
            json!({"rate_limit": {"emails_per_day": 1_000_000_000}}),
        ),
    ];
    // Warm-up: every arm's tenants into the caches, the JIT-less paths hot.
    for a in &arms {
        let warm = drive(
            bench,
            a.requests.clone(),
            messages.min(2_000),
            concurrency,
            None,
        );
        check(env, "warm-up", &warm);
    }
    cancel_queued(&db.url);
    for round in 1..=rounds {
        for a in arms.iter_mut() {
            let meter = Meter::start(Some(sink.tid), postmaster);
            let out = drive(bench, a.requests.clone(), messages, concurrency, None);
            let split = meter.stop(out.client_cpu);
            check(env, a.name, &out);
            let us = split.server.as_secs_f64() * 1e6 / out.ok.max(1) as f64;
            print_figure(
                &format!("r{round} {}", a.name),
                format!(
                    "{:.0} req/s, server cpu {us:.1} us/req  {}",
                    out.rate(),
                    out.latencies.latency_line()
                ),
            );
            a.rates.push(out.rate());
            a.server_us.push(us);
            a.lat.extend(out.latencies);
            cancel_queued(&db.url);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!("-- A: per arm over {rounds} rounds --");
    for a in &arms {
        let p = a.lat.percentiles(&[0.5, 0.99]);
        print_figure(
            a.name,
            format!(
                "{:.0} msg/s (rounds {}), p50 {:.2} ms, p99 {:.2} ms, server cpu {:.1} us/req",
                mean(&a.rates),
                a.rates
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                p[0].as_secs_f64() * 1e3,
                p[1].as_secs_f64() * 1e3,
                mean(&a.server_us)
            ),
        );
    }
    let base = mean(&arms[0].rates);
    for a in &arms[1..] {
        let per_round: Vec<String> = a
            .rates
            .iter()
            .zip(&arms[0].rates)
            .map(|(x, y)| format!("{:.3}", x / y))
            .collect();
        print_figure(
            &format!("ratio {} / (a)", &a.name[..3]),
            format!(
                "{:.3} (rounds: {})",
                mean(&a.rates) / base,
                per_round.join(", ")
            ),
        );
    }

    // The two in-memory calls alone, one thread.
    let n = env.iters(2_000_000, 1_000);
    let rates = bench.state.rates.clone();
    let subject = Uuid::new_v4();
    let check_ns = rt.block_on(async {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(
                rates
                    .admit(
                        std::hint::black_box(subject),
                        "requests_per_minute",
                        1_000_000_000,
                        60,
                    )
                    .await,
            );
        }
        t.elapsed().as_secs_f64() * 1e9 / n as f64
    });
    let counter = RequestCounter::new(db.pool(1));
    let t = Instant::now();
    for _ in 0..n {
        counter.hit(std::hint::black_box(subject));
    }
    let hit_ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    let server_ns = mean(&arms[0].server_us) * 1e3;
    print_figure("Rates::admit", format!("{check_ns:.0} ns/call (n={n})"));
    print_figure(
        "RequestCounter::hit",
        format!("{hit_ns:.0} ns/call (n={n})"),
    );
    print_figure(
        "  share of server cpu/request",
        format!(
            "{:.3} % ({:.0} ns of {:.1} us, arm (a))",
            (check_ns + hit_ns) / server_ns.max(1.0) * 100.0,
            check_ns + hit_ns,
            server_ns / 1e3
        ),
    );
}

fn drive(
    bench: &BenchApp,
    requests: Arc<Vec<Vec<u8>>>,
    total: usize,
    concurrency: usize,
    rate: Option<f64>,
) -> Outcome {
    http::drive(&Load {
        addr: bench.addr,
        requests,
        total,
        concurrency,
        rate,
        expect: 202,
        keep_bodies: rate.is_some(),
    })
}

fn part_b(
    env: &BenchEnv,
    rt: &tokio::runtime::Runtime,
    bench: &mut BenchApp,
    db_url: &str,
    sink: &SinkThread,
) {
    let f_limit = env.param("F_LIMIT", 20, 20);
    let w_rate = env.param("W_RATE", 5, 5) as f64;
    let secs = env.param("FLOOD_SECS", 15, 1) as f64;
    let f_rate = 10.0 * f_limit as f64;
    println!(
        "-- B: fairness: W at {w_rate}/s, F (emails_per_second {f_limit}) at {f_rate}/s, {secs} s --"
    );
    let w = rt.block_on(bench.tenants(1));
    let f =
        rt.block_on(bench.tenants_with(1, json!({"rate_limit": {"emails_per_second": f_limit}})));
    let w_n = (w_rate * secs) as usize;
    let f_n = (f_rate * secs) as usize;
    let w_reqs = Arc::new(app::single_requests(&w, w_n, 1024));
    let f_reqs = Arc::new(app::single_requests(&f, f_n, 1024));
    {
        let _rt = rt.enter();
        bench.start_worker();
    }
    // Warm the worker and the relay session.
    let warm = drive(bench, w_reqs.clone(), 5, 1, Some(w_rate));
    rt.block_on(sink.sink.wait_count(warm.ok, Duration::from_secs(30)));

    let w_alone = w_pass(env, bench, sink, &w_reqs, w_n, w_rate, None, "W alone");
    let flood = Some((f_reqs, f_n, f_rate, f[0].domain.clone()));
    let w_flood = w_pass(
        env,
        bench,
        sink,
        &w_reqs,
        w_n,
        w_rate,
        flood,
        "W during F's flood",
    );

    let p_alone = w_alone.percentiles(&[0.5, 0.95, 0.99]);
    let p_flood = w_flood.percentiles(&[0.5, 0.95, 0.99]);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    print_figure(
        "W p99 flood / alone",
        format!(
            "{:.2} ({:.2} vs {:.2} ms); p50 {:.2} vs {:.2} ms",
            ms(p_flood[2]) / ms(p_alone[2]).max(1e-6),
            ms(p_flood[2]),
            ms(p_alone[2]),
            ms(p_flood[0]),
            ms(p_alone[0])
        ),
    );
    rt.block_on(bench.stop_worker());
    cancel_queued(db_url);
}

fn part_c(
    env: &BenchEnv,
    rt: &tokio::runtime::Runtime,
    bench: &mut BenchApp,
    db_url: &str,
    sink: &SinkThread,
) {
    let backlog = env.param("BACKLOG", 20_000, 1_000);
    let w_rate = env.param("W_RATE", 5, 5) as f64;
    let secs = env.param("FLOOD_SECS", 15, 1) as f64;
    println!("-- C: head-of-line: H enqueues {backlog} x 10 KB at once, W at {w_rate}/s meanwhile, {secs} s --");
    let w = rt.block_on(bench.tenants(1));
    let h = rt.block_on(bench.tenants(1));
    let w_n = (w_rate * secs) as usize;
    let w_reqs = Arc::new(app::single_requests(&w, w_n, 1024));
    let h_reqs = Arc::new(app::batch_requests(&h, backlog / 100, 100, 10 * 1024));
    {
        let _rt = rt.enter();
        bench.start_worker();
    }
    let warm = drive(bench, w_reqs.clone(), 5, 1, Some(w_rate));
    rt.block_on(sink.sink.wait_count(warm.ok, Duration::from_secs(30)));
    let alone = w_pass(env, bench, sink, &w_reqs, w_n, w_rate, None, "W alone");
    let before = sink.sink.count();
    let t0 = Instant::now();
    let h_out = drive(bench, h_reqs, backlog / 100, 16, None);
    check(env, "H backlog", &h_out);
    let enqueued = t0.elapsed();
    let during = w_pass(
        env,
        bench,
        sink,
        &w_reqs,
        w_n,
        w_rate,
        None,
        "W during H's backlog",
    );
    let window = t0.elapsed();
    let delivered = sink.sink.count() - before;
    print_figure(
        "H backlog",
        format!(
            "{} accepted in {:.2} s; {delivered} of them and W's delivered {:.1} s after H began (still draining: {})",
            h_out.ok * 100,
            enqueued.as_secs_f64(),
            window.as_secs_f64(),
            delivered < h_out.ok * 100
        ),
    );
    let (a, d) = (
        alone.percentiles(&[0.5, 0.99]),
        during.percentiles(&[0.5, 0.99]),
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    print_figure(
        "W p99 during H's backlog / alone",
        format!(
            "{:.2} ({:.2} vs {:.2} ms; target <= 2000 ms); p50 {:.2} vs {:.2} ms",
            ms(d[1]) / ms(a[1]).max(1e-6),
            ms(d[1]),
            ms(a[1]),
            ms(d[0]),
            ms(a[0])
        ),
    );
    rt.block_on(bench.stop_worker());
    cancel_queued(db_url);
}

/// F's flood: its requests, how many, the rate, F's domain.
type Flood = (Arc<Vec<Vec<u8>>>, usize, f64, String);

/// W's open-loop pass (with F's flood alongside when given); prints and
/// returns W's 202 → sink latencies, and F's delivered rate.
#[allow(clippy::too_many_arguments)]
fn w_pass(
    env: &BenchEnv,
    bench: &BenchApp,
    sink: &SinkThread,
    w_reqs: &Arc<Vec<Vec<u8>>>,
    w_n: usize,
    w_rate: f64,
    flood: Option<Flood>,
    label: &str,
) -> Samples {
    let base = sink.sink.count();
    let t0 = Instant::now();
    let (w_out, f_out) = std::thread::scope(|s| {
        let fl = flood
            .clone()
            .map(|(reqs, n, rate, _)| s.spawn(move || drive(bench, reqs, n, 64, Some(rate))));
        let w_out = drive(bench, w_reqs.clone(), w_n, 4, Some(w_rate));
        (w_out, fl.map(|h| h.join().expect("flood thread")))
    });
    let window = t0.elapsed();
    check(env, label, &w_out);
    // W's messages only: wait for every one to arrive (F's backlog is not
    // waited for, it drains at F's pace).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lat = latency_to_sink(&w_out, &sink.sink.messages()[base..]);
    while lat.len() < w_out.ok && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        lat = latency_to_sink(&w_out, &sink.sink.messages()[base..]);
    }
    print_figure(
        label,
        format!(
            "n={} of {} {}{}",
            lat.len(),
            w_out.ok,
            lat.latency_line(),
            if lat.len() < w_out.ok {
                " (NOT ALL ARRIVED)"
            } else {
                ""
            }
        ),
    );
    if let (Some(f_out), Some((_, _, _, f_domain))) = (f_out, flood) {
        check(env, "F flood", &f_out);
        // F's arrivals within the flood window (by envelope sender).
        let arrived = sink.sink.messages()[base..]
            .iter()
            .filter(|m| m.received_at <= t0 + window && m.mail_from.contains(&f_domain))
            .count();
        print_figure(
            "F accepted",
            format!(
                "{} in {:.2} s: {:.0}/s offered",
                f_out.ok,
                f_out.wall.as_secs_f64(),
                f_out.rate()
            ),
        );
        print_figure(
            "F delivered during the window",
            format!(
                "{arrived} in {:.2} s: {:.1}/s (limit {}/s + burst)",
                window.as_secs_f64(),
                arrived as f64 / window.as_secs_f64(),
                env.param("F_LIMIT", 20, 20)
            ),
        );
    }
    lat
}
