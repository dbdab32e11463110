//! Load benchmark (issue 7, DESIGN §9): the real `Application` on port 0,
//! driven over real HTTP, against baselines measured in the same run.
//!
//! Ingest (worker off, so only acceptance is measured), `ROUNDS` times:
//! raw single-row INSERT (tokio-postgres, one INSERT of the `emails` row and
//! its `email_events` row per statement, autocommit) → `POST /v1/emails`
//! (~1 KB JSON) → raw 100-row INSERT → `POST /v1/emails/batch` (100 per
//! request). Then an open-loop pass at half the peak single-send rate for
//! the p99 target. Delivery (worker on, relay = the in-process SMTP sink):
//! drain of a 10 KB backlog, the same messages sent by a plain SMTP client
//! (lettre on our own TCP_NODELAY socket, same session count), and
//! open-loop sends measuring 202 → sink latency.
//!
//! The load client and the sink each run on their own thread so their CPU
//! can be told apart from the server's. Sizes come from the environment
//! (`POSTLINE_BENCH_<NAME>`, see `Params`). Run: `deploy/dev bench load`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::app::{self, BenchApp};
use common::cpu::{self, Meter};
use common::http::{self, Load, Outcome};
use common::sink::smtp_sink::SinkConfig;
use common::sink::{latency_to_sink, SinkThread};
use common::{cancel_queued, check, print_figure, statements, BenchEnv, Mode, Samples};
use diesel::prelude::*;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

struct Params {
    tenants: usize,
    concurrency: usize,
    batch_concurrency: usize,
    messages: usize,
    batch_messages: usize,
    rounds: usize,
    half_secs: usize,
    delivery_messages: usize,
    e2e_secs: usize,
    size: usize,
    delivery_size: usize,
}

impl Params {
    fn from(env: &BenchEnv) -> Params {
        Params {
            tenants: env.param("TENANTS", 10, 2),
            concurrency: env.param("CONCURRENCY", 64, 4),
            batch_concurrency: env.param("BATCH_CONCURRENCY", 16, 2),
            messages: env.param("MESSAGES", 30_000, 100),
            batch_messages: env.param("BATCH_MESSAGES", 60_000, 400),
            rounds: env.param("ROUNDS", 2, 1),
            half_secs: env.param("HALF_SECS", 10, 1),
            delivery_messages: env.param("DELIVERY_MESSAGES", 20_000, 100),
            e2e_secs: env.param("E2E_SECS", 10, 1),
            size: env.param("SIZE", 1024, 1024),
            delivery_size: env.param("DELIVERY_SIZE", 10 * 1024, 10 * 1024),
        }
    }
}

fn main() {
    // As `postline` bounds its allocator (issue 24), so RSS figures compare.
    postline::memory::bound_arenas();
    let Some(env) = BenchEnv::from_env("load") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    run(&env, &rt);
}

/// This process's resident size now and at its peak: the server's share
/// dominates (the client's requests are prepared once, ~1 KB each).
fn print_rss(label: &str) {
    if let Some((rss, peak)) = postline::memory::rss_kib() {
        print_figure(
            label,
            format!("{} MB (peak {} MB)", rss / 1024, peak / 1024),
        );
    }
}

/// Everything one figure line needs, kept for the ratio lines at the end.
#[derive(Clone, Copy, Default)]
struct Rate {
    per_sec: f64,
}

fn run(env: &BenchEnv, rt: &tokio::runtime::Runtime) {
    env.print_header();
    let p = Params::from(env);
    if let Some(port) = std::env::var("POSTLINE_BENCH_RELAY_PORT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return side_by_side(env, rt, &p, Target::Relay(port));
    }
    if let Ok(nameserver) = std::env::var("POSTLINE_BENCH_MX_NAMESERVER") {
        return side_by_side(env, rt, &p, Target::Mx(nameserver));
    }
    let db = env.fresh_database();
    let postmaster = cpu::port_of(&env.admin_url).and_then(cpu::postmaster);
    // POSTLINE_BENCH_SINK_COUNT_ONLY=1 (a `serve` soak): the sink counts and
    // keeps nothing, so the RSS printed is the server's; phases that read the
    // received messages (202 -> sink latency) then have none to read.
    let sink = SinkThread::start_with(SinkConfig {
        count_only: std::env::var("POSTLINE_BENCH_SINK_COUNT_ONLY").is_ok_and(|v| v == "1"),
        ..SinkConfig::default()
    });
    let mut bench = rt.block_on(BenchApp::start(app::settings(
        &db.url,
        Some(sink.sink.port()),
    )));
    // As a platform runs it: POSTLINE_BENCH_QUOTA=1 gives every tenant a daily
    // quota (the admission row lock is then on the ingest path);
    // POSTLINE_BENCH_SERVE=1 keeps the worker delivering to the sink during
    // the ingest rounds, as `postline serve` does.
    let quota = std::env::var("POSTLINE_BENCH_QUOTA").is_ok_and(|v| v == "1");
    let serving = std::env::var("POSTLINE_BENCH_SERVE").is_ok_and(|v| v == "1");
    let extra = if quota {
        serde_json::json!({"rate_limit": {"emails_per_day": 1_000_000_000}})
    } else {
        serde_json::json!({})
    };
    let tenants = rt.block_on(bench.tenants_with(p.tenants, extra));
    print_figure(
        "shape",
        format!(
            "tenants {} a daily quota; worker {} during ingest",
            if quota { "with" } else { "without" },
            if serving { "delivering" } else { "off" }
        ),
    );
    if serving {
        let _runtime = rt.enter();
        bench.start_worker();
    }
    let s = &bench.state.settings;
    print_figure(
        "setup",
        format!(
            "db {}, {} tenants, http workers {}, pool {}, ingest writers {} x {} rows, \
             worker {} in flight (claims of {}), {} smtp sessions; postgres cpu {}",
            db.name,
            p.tenants,
            if s.server.workers == 0 {
                "1/core".to_string()
            } else {
                s.server.workers.to_string()
            },
            s.database.pool_size,
            s.ingest.writers,
            s.ingest.max_batch_rows,
            s.worker.concurrency,
            s.worker.claim_batch,
            s.delivery.max_connections_per_relay,
            if postmaster.is_some() {
                "measured"
            } else {
                "not found"
            },
        ),
    );
    let m = Measure {
        env,
        db_url: db.url.clone(),
        addr: bench.addr,
        sink_tid: Some(sink.tid),
        postmaster,
    };

    // The client and HTTP stack alone: if this is not far above the ingest
    // rate, the client (or actix) would be the bottleneck.
    let phases = std::env::var("POSTLINE_BENCH_PHASES").unwrap_or_else(|_| "all".into());
    let only_ingest = phases == "ingest";
    let only_delivery = phases == "delivery";
    let health = Arc::new(vec![http::get("/healthz")]);
    let ceiling = m.closed(
        "client ceiling: GET /healthz",
        health,
        p.messages,
        p.concurrency,
        200,
    );

    let singles = Arc::new(app::single_requests(
        &tenants,
        p.messages / p.tenants + 1,
        p.size,
    ));
    let batches = Arc::new(app::batch_requests(
        &tenants,
        p.batch_messages / 100 / p.tenants + 1,
        100,
        p.size,
    ));
    print_rss("rss idle (server, client, sink)");
    let warm = p.messages.min(5_000);
    m.closed(
        "warm-up: POST /v1/emails",
        singles.clone(),
        warm,
        p.concurrency,
        202,
    );

    let tenant_ids: Vec<Uuid> = tenants.iter().map(|t| t.id.parse().unwrap()).collect();
    let sample = app::message(&tenants[0], 0, p.size);
    let (mut raw1, mut ours1, mut raw100, mut ours100) = (vec![], vec![], vec![], vec![]);
    // POSTLINE_BENCH_REPUTATION_AB=1: odd rounds and drains with
    // reputation tracking (and the paused check) on, even ones off.
    let ab = std::env::var("POSTLINE_BENCH_REPUTATION_AB").is_ok_and(|v| v == "1");
    let track = |i: usize| {
        let on = !ab || i % 2 == 1;
        postline::reputation::track::set_enabled(on);
        if ab {
            println!("   (reputation tracking {})", if on { "on" } else { "off" });
        }
    };
    for round in (1..=p.rounds).filter(|_| !only_delivery) {
        println!("-- ingest round {round}/{} --", p.rounds);
        track(round);
        raw1.push(
            m.raw_insert(
                &db.url,
                &tenant_ids,
                &sample,
                p.messages,
                1,
                p.concurrency,
                None,
            )
            .0,
        );
        let counting = statements::wanted() && statements::reset(&env.admin_url);
        ours1.push(
            m.closed(
                "POST /v1/emails (single)",
                singles.clone(),
                p.messages,
                p.concurrency,
                202,
            )
            .rate(),
        );
        if counting {
            statements::report(&env.admin_url, p.messages, 12);
        }
        print_rss("  rss after the round");
        if p.batch_messages == 0 {
            cancel_queued(&db.url);
            continue;
        }
        raw100.push(
            m.raw_insert(
                &db.url,
                &tenant_ids,
                &sample,
                p.batch_messages,
                100,
                p.batch_concurrency,
                None,
            )
            .0,
        );
        let b = m.closed(
            "POST /v1/emails/batch (100/request)",
            batches.clone(),
            p.batch_messages / 100,
            p.batch_concurrency,
            202,
        );
        print_figure("  = messages/s", format!("{:.0}", b.rate() * 100.0));
        ours100.push(b.rate() * 100.0);
        cancel_queued(&db.url);
    }

    // The rest measures with tracking on (the product's setting), except
    // the A/B drains below.
    postline::reputation::track::set_enabled(true);
    if ab && !only_delivery {
        // Rounds 1, 3, … on; 2, 4, … off (`track`).
        let split = |v: &[f64], on: bool| -> Vec<f64> {
            v.iter()
                .enumerate()
                .filter(|(i, _)| ((i + 1) % 2 == 1) == on)
                .map(|(_, r)| *r)
                .collect()
        };
        ab_line(
            "reputation A/B: POST /v1/emails msg/s",
            &split(&ours1, true),
            &split(&ours1, false),
        );
        ab_line(
            "reputation A/B: POST /v1/emails/batch msg/s",
            &split(&ours100, true),
            &split(&ours100, false),
        );
    }
    if only_ingest {
        std::thread::sleep(Duration::from_secs(5));
        print_rss("rss 5 s after the load");
        // glibc's own account, per arena (on stderr): what is in use and
        // what is kept free.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_stats only reads the allocator's state.
        unsafe {
            libc::malloc_stats();
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let raw: Vec<f64> = raw1.iter().map(|r| r.per_sec).collect();
        print_figure(
            "ingest / raw single-row INSERT",
            format!("{:.2}", mean(&ours1) / mean(&raw)),
        );
        return;
    }
    // p99 at half of the peak single-send rate, open loop.
    let peak = if only_delivery {
        f64::INFINITY
    } else {
        ours1.iter().cloned().fold(0.0, f64::max)
    };
    let (half_rate, half_p99, raw_half) = if only_delivery {
        (0.0, Duration::ZERO, Duration::ZERO)
    } else {
        half_peak(&m, &db.url, &p, peak, &singles, &tenant_ids, &sample)
    };

    // Delivery, from an empty queue (the warm-up's mail is still queued
    // when the ingest phases were skipped).
    let mut drained = 0.0;
    let (mut drains_on, mut drains_off) = (Vec::new(), Vec::new());
    let backlog = (p.delivery_messages / 100).max(1) * 100;
    for drain in 1..=(if ab { 4 } else { 1 }) {
        track(drain);
        rt.block_on(bench.stop_worker());
        cancel_queued(&db.url);
        println!("-- delivery ({} B messages) --", p.delivery_size);
        let big_batches = Arc::new(app::batch_requests(
            &tenants,
            p.delivery_messages / 100 / p.tenants + 1,
            100,
            p.delivery_size,
        ));
        m.closed(
            "enqueue backlog (worker off)",
            big_batches,
            backlog / 100,
            p.batch_concurrency,
            202,
        );
        let base = sink.sink.count();
        let meter = Meter::start(Some(sink.tid), postmaster);
        let t0 = Instant::now();
        {
            let _runtime = rt.enter();
            bench.start_worker();
        }
        let arrived = rt.block_on(
            sink.sink
                .wait_count(base + backlog, Duration::from_secs(600)),
        );
        let drain_wall = t0.elapsed();
        assert!(arrived, "backlog not delivered within 600 s");
        let split = meter.stop(Duration::ZERO);
        drained = backlog as f64 / drain_wall.as_secs_f64();
        if postline::reputation::track::enabled() {
            drains_on.push(drained);
        } else {
            drains_off.push(drained);
        }
        print_figure(
            "worker drain -> sink",
            format!(
                "{backlog} msgs in {:.2} s: {drained:.0} msg/s",
                drain_wall.as_secs_f64()
            ),
        );
        print_figure("  cpu", split.per_message(backlog, drain_wall));
        let recorded = wait_delivered(&db.url, backlog, Duration::from_secs(120));
        print_figure(
            "  all recorded delivered after",
            format!("{:.2} s", (t0.elapsed()).as_secs_f64())
                + if recorded { "" } else { " (TIMED OUT)" },
        );
    }
    postline::reputation::track::set_enabled(true);
    if ab {
        ab_line(
            "reputation A/B: worker drain -> sink msg/s",
            &drains_on,
            &drains_off,
        );
    }

    // The same bytes Postline sent, by a plain SMTP client at the same
    // session count.
    let raw_msg = sink
        .sink
        .messages()
        .pop()
        .expect("a delivered message")
        .data;
    let sessions = bench.state.settings.delivery.max_connections_per_relay;
    let plain = m.plain_smtp(sink.sink.addr(), &raw_msg, backlog, sessions, &sink);

    // 202 -> sink, open loop at half the smaller of the two capacities.
    let e2e_rate = (drained.min(peak) / 2.0).max(1.0);
    let e2e_n = ((e2e_rate * p.e2e_secs as f64) as usize).max(10);
    let e2e_reqs = Arc::new(app::single_requests(
        &tenants,
        e2e_n / p.tenants + 1,
        p.delivery_size,
    ));
    let base = sink.sink.count();
    let meter = Meter::start(Some(sink.tid), postmaster);
    let started = Instant::now();
    let sent = http::drive(&Load {
        addr: bench.addr,
        requests: e2e_reqs,
        total: e2e_n,
        concurrency: p.concurrency,
        rate: Some(e2e_rate),
        expect: 202,
        keep_bodies: true,
    });
    check(env, "e2e sends", &sent);
    let all = rt.block_on(
        sink.sink
            .wait_count(base + sent.ok, Duration::from_secs(120)),
    );
    let wall = started.elapsed();
    let split = meter.stop(sent.client_cpu);
    let e2e = latency_to_sink(&sent, &sink.sink.messages()[base..]);
    print_figure(
        &format!("202 -> sink at {e2e_rate:.0}/s"),
        format!(
            "n={} {}{}",
            e2e.len(),
            e2e.latency_line(),
            if all {
                String::new()
            } else {
                format!(
                    " (NOT ALL ARRIVED: {} accepted, {} failed, {} at the sink)",
                    sent.ok,
                    sent.failed,
                    sink.sink.count() - base
                )
            }
        ),
    );
    print_figure(
        "  delivered/s over the pass",
        format!("{:.0}", sent.ok as f64 / wall.as_secs_f64()),
    );
    print_figure(
        "  cpu (ingest + delivery)",
        split.per_message(sent.ok, wall),
    );
    rt.block_on(bench.stop_worker());

    // Ratios against DESIGN §9.
    println!("-- targets (DESIGN §9) --");
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let rows = |label: &str, ours: &[f64], raw: &[Rate]| {
        let raw: Vec<f64> = raw.iter().map(|r| r.per_sec).collect();
        let per_round: Vec<String> = ours
            .iter()
            .zip(&raw)
            .map(|(o, r)| format!("{:.2}", o / r))
            .collect();
        print_figure(
            label,
            format!(
                "ours {:.0}/s vs raw {:.0}/s (means): {:.2} (rounds: {})",
                mean(ours),
                mean(&raw),
                mean(ours) / mean(&raw),
                per_round.join(", ")
            ),
        );
        mean(ours) / mean(&raw)
    };
    let judged = env.mode == Mode::Full;
    let verdict = |ok: bool| match (judged, ok) {
        (false, _) => "not judged (smoke)",
        (true, true) => "met",
        (true, false) => "NOT met",
    };
    let r1 = rows("ingest / raw single-row INSERT", &ours1, &raw1);
    print_figure(
        "  target >= 0.70 (goal >= 1.50)",
        format!("{} (goal {})", verdict(r1 >= 0.70), verdict(r1 >= 1.50)),
    );
    let r100 = rows("batch / raw 100-row INSERT", &ours100, &raw100);
    print_figure("  target >= 0.50", verdict(r100 >= 0.50));
    let per_req = mean(&ours100) / mean(&ours1);
    print_figure(
        "batch / single messages/s",
        format!(
            "{per_req:.1}x  (target >= 10x) {}",
            verdict(per_req >= 10.0)
        ),
    );
    print_figure(
        "p99 at 50% of peak",
        format!(
            "{:.2} ms at {half_rate:.0}/s (target <= 25 ms) {}; raw INSERT at that rate: p99 {:.2} ms",
            half_p99.as_secs_f64() * 1e3,
            verdict(half_p99 <= Duration::from_millis(25)),
            raw_half.as_secs_f64() * 1e3
        ),
    );
    let rd = drained / plain;
    print_figure(
        "delivery / plain SMTP client",
        format!(
            "{drained:.0} vs {plain:.0} msg/s: {rd:.2} (target >= 0.70) {}",
            verdict(rd >= 0.70)
        ),
    );
    print_figure(
        "delivery >= 1000 msg/s at 10 KB",
        format!("{drained:.0} msg/s {}", verdict(drained >= 1000.0)),
    );
    print_figure(
        "client ceiling / best ingest",
        format!("{:.1}x", ceiling.rate() / best(&ours1).max(1.0)),
    );
    drop(bench);
    drop(sink);
}

/// Open loop at half the peak single-send rate, then raw INSERTs at the same
/// rate: `(rate, our p99, raw p99)`.
fn half_peak(
    m: &Measure,
    url: &str,
    p: &Params,
    peak: f64,
    singles: &Arc<Vec<Vec<u8>>>,
    tenant_ids: &[Uuid],
    sample: &serde_json::Value,
) -> (f64, Duration, Duration) {
    let half_rate = (peak / 2.0).max(1.0);
    let half_n = ((half_rate * p.half_secs as f64) as usize).max(10);
    let half = m.open(
        &format!("open loop at {half_rate:.0}/s (50% of peak)"),
        singles.clone(),
        half_n,
        p.concurrency,
        half_rate,
    );
    let half_p99 = half.latencies.percentiles(&[0.99])[0];
    // The same offered load as raw INSERTs: what the machine and Postgres
    // alone do to the tail at this rate.
    let raw_half = m
        .raw_insert(
            url,
            tenant_ids,
            sample,
            half_n,
            1,
            p.concurrency,
            Some(half_rate),
        )
        .1
        .percentiles(&[0.99])[0];
    cancel_queued(url);

    (half_rate, half_p99, raw_half)
}

/// For `deploy/bench-postfix.sh`: `DELIVERY_MESSAGES` single sends of
/// `DELIVERY_SIZE` over HTTP at `SESSIONS` (default 16) connections, relayed
/// to an external sink on 127.0.0.1:`port`; the time until all are accepted
/// (202) and until all are recorded delivered, as smtp-source → Postfix is
/// timed there.
///
/// With [`Target::Mx`] the worker delivers directly (`delivery.mode = "mx"`)
/// through the DNS server at that address (`host:port`), the recipients
/// spread over `MX_DOMAINS` (default 50) domains `dNN.bench.test` whose MX
/// hosts the script runs sinks for; each site gets `MX_CONNECTIONS`
/// (default 10, `default_max_connections`) connections and no rate cap, as
/// Postfix has none by default.
fn side_by_side(env: &BenchEnv, rt: &tokio::runtime::Runtime, p: &Params, target: Target) {
    let sessions = env.param("SESSIONS", 16, 2);
    let db = env.fresh_database();
    let (settings, domains) = match target {
        Target::Relay(port) => {
            let mut s = app::settings(&db.url, Some(port));
            s.delivery.max_connections_per_relay = sessions;
            (s, 0)
        }
        Target::Mx(nameserver) => {
            let mut s = app::settings(&db.url, None);
            s.delivery.mode = postline::config::DeliveryMode::Mx;
            s.dns.nameservers = vec![nameserver.clone()];
            let mx = &mut s.delivery.mx;
            // The script's MX hosts are on loopback.
            mx.allow_private_destinations = true;
            mx.default_max_connections = env.param("MX_CONNECTIONS", 10, 2);
            mx.default_messages_per_minute = 1_000_000;
            let domains = env.param("MX_DOMAINS", 50, 50);
            print_figure(
                "direct delivery",
                format!(
                    "{domains} domains via the DNS server at {nameserver}, MX port {}, \
                     {} connections per site, rate cap lifted",
                    mx.port, mx.default_max_connections
                ),
            );
            (s, domains)
        }
    };
    let mut bench = rt.block_on(BenchApp::start(settings));
    // As a platform runs it: POSTLINE_BENCH_QUOTA=1 gives every tenant a daily
    // quota (the admission row lock is then on the ingest path).
    let quota = std::env::var("POSTLINE_BENCH_QUOTA").is_ok_and(|v| v == "1");
    let extra = if quota {
        serde_json::json!({"rate_limit": {"emails_per_day": 1_000_000_000}})
    } else {
        serde_json::json!({})
    };
    let tenants = rt.block_on(bench.tenants_with(p.tenants, extra));
    print_figure(
        "shape",
        format!(
            "tenants {} a daily quota; worker delivering during ingest",
            if quota { "with" } else { "without" },
        ),
    );
    let n = p.delivery_messages;
    let reqs = Arc::new(app::spread_requests(
        &tenants,
        n / p.tenants + 1,
        p.delivery_size,
        domains,
    ));
    // The worker delivers while the messages come in: end to end is the
    // time until the last one is out, as for Postfix.
    {
        let _runtime = rt.enter();
        bench.start_worker();
    }
    let counting = statements::wanted() && statements::reset(&env.admin_url);
    let commits = xact_commits(&db.url);
    let postmaster = cpu::port_of(&db.url).and_then(cpu::postmaster);
    let meter = Meter::start(None, postmaster);
    let started = Instant::now();
    let sent = http::drive(&Load {
        addr: bench.addr,
        requests: reqs,
        total: n,
        concurrency: sessions,
        rate: None,
        expect: 202,
        keep_bodies: false,
    });
    check(env, "side by side", &sent);
    let accepted = started.elapsed();
    let all = wait_delivered(&db.url, sent.ok, Duration::from_secs(600));
    let delivered = started.elapsed();
    let split = meter.stop(sent.client_cpu);
    print_figure(
        "postline accepted",
        format!(
            "{} in {:.2} s: {:.0} msg/s",
            sent.ok,
            accepted.as_secs_f64(),
            sent.ok as f64 / accepted.as_secs_f64()
        ),
    );
    print_figure(
        "postline delivered",
        format!(
            "{} in {:.2} s: {:.0} msg/s{}",
            sent.ok,
            delivered.as_secs_f64(),
            sent.ok as f64 / delivered.as_secs_f64(),
            if all { "" } else { " (TIMED OUT)" }
        ),
    );
    print_figure("  cpu per message", split.per_message(sent.ok, delivered));
    let commits = xact_commits(&db.url) - commits;
    print_figure(
        "  postgres commits",
        format!(
            "{commits} ({:.2} per delivered message)",
            commits as f64 / sent.ok.max(1) as f64
        ),
    );
    if counting {
        statements::report(&env.admin_url, sent.ok, 24);
    }
    rt.block_on(bench.stop_worker());
}

/// Where the side by side delivers: a relay on 127.0.0.1:port, or the
/// recipients' MX hosts found through a nameserver.
enum Target {
    Relay(u16),
    Mx(String),
}

struct Measure<'a> {
    env: &'a BenchEnv,
    db_url: String,
    addr: SocketAddr,
    sink_tid: Option<i32>,
    postmaster: Option<i32>,
}

impl Measure<'_> {
    fn closed(
        &self,
        label: &str,
        requests: Arc<Vec<Vec<u8>>>,
        total: usize,
        concurrency: usize,
        expect: u16,
    ) -> Outcome {
        self.drive(label, requests, total, concurrency, None, expect)
    }

    fn open(
        &self,
        label: &str,
        requests: Arc<Vec<Vec<u8>>>,
        total: usize,
        concurrency: usize,
        rate: f64,
    ) -> Outcome {
        self.drive(label, requests, total, concurrency, Some(rate), 202)
    }

    fn drive(
        &self,
        label: &str,
        requests: Arc<Vec<Vec<u8>>>,
        total: usize,
        concurrency: usize,
        rate: Option<f64>,
        expect: u16,
    ) -> Outcome {
        // Commit counts need the stats to settle (~1 s each side): full runs only.
        let full = self.env.mode == Mode::Full;
        let commits = if full { xact_commits(&self.db_url) } else { 0 };
        let meter = Meter::start(self.sink_tid, self.postmaster);
        let out = http::drive(&Load {
            addr: self.addr,
            requests,
            total,
            concurrency,
            rate,
            expect,
            keep_bodies: false,
        });
        let split = meter.stop(out.client_cpu);
        check(self.env, label, &out);
        print_figure(
            label,
            format!(
                "{} ok in {:.2} s: {:.0} req/s, c={concurrency}  {}",
                out.ok,
                out.wall.as_secs_f64(),
                out.rate(),
                out.latencies.latency_line()
            ),
        );
        print_figure("  cpu per request", split.per_message(out.ok, out.wall));
        if full {
            let commits = xact_commits(&self.db_url) - commits;
            print_figure(
                "  postgres commits",
                format!(
                    "{commits} ({:.1} requests per commit)",
                    out.ok as f64 / commits.max(1) as f64
                ),
            );
        }
        out
    }

    /// The baseline: `total` rows, `per_tx` per statement, each statement
    /// inserting the `emails` rows and their `email_events` rows
    /// (autocommit: one COMMIT each), over `concurrency` connections;
    /// open loop at `rate` statements/s when given.
    #[allow(clippy::too_many_arguments)]
    fn raw_insert(
        &self,
        url: &str,
        tenants: &[Uuid],
        sample: &serde_json::Value,
        total: usize,
        per_tx: usize,
        concurrency: usize,
        rate: Option<f64>,
    ) -> (Rate, Samples) {
        let meter = Meter::start(self.sink_tid, self.postmaster);
        let statements = (total / per_tx).max(1);
        let ((lat, wall), client) = http::on_client_thread(|| {
            raw_insert(url, tenants, sample, statements, per_tx, concurrency, rate)
        });
        let split = meter.stop(client);
        let rows = statements * per_tx;
        let per_sec = rows as f64 / wall.as_secs_f64();
        let label = match rate {
            Some(r) => format!("raw INSERT open loop at {r:.0}/s"),
            None => format!("raw INSERT, {per_tx} row(s)/statement"),
        };
        print_figure(
            &label,
            format!(
                "{rows} rows in {:.2} s: {per_sec:.0} rows/s, c={concurrency}  {}",
                wall.as_secs_f64(),
                lat.latency_line()
            ),
        );
        print_figure("  cpu per row", split.per_message(rows, wall));
        (Rate { per_sec }, lat)
    }

    /// `total` copies of `raw` through `sessions` plain SMTP connections.
    fn plain_smtp(
        &self,
        sink: SocketAddr,
        raw: &[u8],
        total: usize,
        sessions: usize,
        st: &SinkThread,
    ) -> f64 {
        let base = st.sink.count();
        let meter = Meter::start(self.sink_tid, self.postmaster);
        let (wall, client) = http::on_client_thread(|| plain_smtp(sink, raw, total, sessions));
        let split = meter.stop(client);
        assert!(
            st.sink.count() >= base + total,
            "plain SMTP: not all accepted"
        );
        let rate = total as f64 / wall.as_secs_f64();
        print_figure(
            "plain SMTP client -> sink",
            format!(
                "{total} msgs of {} B in {:.2} s: {rate:.0} msg/s, {sessions} sessions",
                raw.len(),
                wall.as_secs_f64()
            ),
        );
        print_figure("  cpu", split.per_message(total, wall));
        rate
    }
}

async fn raw_insert(
    url: &str,
    tenants: &[Uuid],
    sample: &serde_json::Value,
    statements: usize,
    per_tx: usize,
    concurrency: usize,
    rate: Option<f64>,
) -> (Samples, Duration) {
    const COLS: usize = 17;
    let values: Vec<String> = (0..per_tx)
        .map(|r| {
            let ps: Vec<String> = (1..=COLS).map(|c| format!("${}", r * COLS + c)).collect();
            format!("({})", ps.join(", "))
        })
        .collect();
    let sql = format!(
        "WITH e AS (INSERT INTO emails (tenant_id, id, expires_at, message_id, from_addr, \
         envelope_from, to_addrs, cc_addrs, bcc_addrs, reply_to, subject, text_body, html_body, \
         headers, attachments, tags, created_at) VALUES {} RETURNING tenant_id, id, created_at) \
         INSERT INTO email_events (tenant_id, email_id, type, detail, at) \
         SELECT tenant_id, id, 'email.queued', '{{}}'::jsonb, created_at FROM e",
        values.join(", ")
    );
    let text = |k: &str| sample[k].as_str().unwrap_or_default().to_string();
    let (from, to, subject, body) = (text("from"), text("to"), text("subject"), text("text"));
    let tags = sample["tags"].clone();
    let next = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("raw connect");
        tokio::spawn(connection);
        let stmt = client.prepare(&sql).await.expect("prepare raw insert");
        conns.push((client, stmt));
    }
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|(client, stmt)| {
            let next = next.clone();
            let tenants = tenants.to_vec();
            let (from, to, subject, body, tags) = (
                from.clone(),
                to.clone(),
                subject.clone(),
                body.clone(),
                tags.clone(),
            );
            tokio::spawn(async move {
                let mut lat = Samples::with_capacity(statements / concurrency.max(1) + 1);
                let empty: Vec<String> = Vec::new();
                let json_empty = serde_json::json!({});
                let json_list = serde_json::json!([]);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= statements {
                        return lat;
                    }
                    // Open loop as in common::http: latency from the due time.
                    let begin = match rate {
                        Some(r) => {
                            let due = start + Duration::from_secs_f64(i as f64 / r);
                            if due > Instant::now() {
                                tokio::time::sleep_until(due.into()).await;
                                Instant::now()
                            } else {
                                due
                            }
                        }
                        None => Instant::now(),
                    };
                    let now = Utc::now();
                    let rows: Vec<(Uuid, Uuid, String)> = (0..per_tx)
                        .map(|r| {
                            let id = Uuid::new_v4();
                            let t = tenants[(i * per_tx + r) % tenants.len()];
                            (t, id, format!("<{}@bench.example>", id.simple()))
                        })
                        .collect();
                    let expires = now + chrono::Duration::days(4);
                    let to_list = vec![to.clone()];
                    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(per_tx * COLS);
                    let text_body = Some(body.clone());
                    let html: Option<String> = None;
                    for (t, id, mid) in &rows {
                        params.extend_from_slice(&[
                            t,
                            id,
                            &expires,
                            mid,
                            &from,
                            &from,
                            &to_list,
                            &empty,
                            &empty,
                            &empty,
                            &subject,
                            &text_body,
                            &html,
                            &json_empty,
                            &json_list,
                            &tags,
                            &now,
                        ]);
                    }
                    client.execute(&stmt, &params).await.expect("raw insert");
                    lat.push(begin.elapsed());
                }
            })
        })
        .collect();
    let mut all = Samples::default();
    for t in tasks {
        all.extend(t.await.expect("raw task"));
    }
    (all, start.elapsed())
}

/// A plain SMTP client: lettre's connection on our own TCP_NODELAY socket
/// (DESIGN §13), `sessions` of them, one message at a time each.
async fn plain_smtp(sink: SocketAddr, raw: &[u8], total: usize, sessions: usize) -> Duration {
    use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
    use lettre::transport::smtp::extension::ClientId;
    let envelope = lettre::address::Envelope::new(
        Some("bounces@sender.example".parse().unwrap()),
        vec!["rcpt@example.com".parse().unwrap()],
    )
    .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let raw: Arc<[u8]> = raw.into();
    let start = Instant::now();
    let tasks: Vec<_> = (0..sessions.max(1))
        .map(|_| {
            let (next, raw, envelope) = (next.clone(), raw.clone(), envelope.clone());
            tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(sink)
                    .await
                    .expect("connect sink");
                tcp.set_nodelay(true).unwrap();
                let stream: Box<dyn AsyncTokioStream> = Box::new(tcp);
                let hello = ClientId::Domain("bench.example".into());
                let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &hello)
                    .await
                    .expect("smtp greeting");
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    conn.send(&envelope, &raw).await.expect("plain smtp send");
                }
                let _ = conn.quit().await;
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("smtp task");
    }
    start.elapsed()
}

/// Transactions committed in the bench database so far (all sessions; the
/// stats are updated by each backend within ~1 s, so read it after a pause).
fn xact_commits(url: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Commits {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    std::thread::sleep(Duration::from_millis(1100));
    let mut c = PgConnection::establish(url).expect("connect");
    diesel::sql_query("SELECT pg_stat_force_next_flush()")
        .execute(&mut c)
        .ok();
    let r: Commits = diesel::sql_query(
        "SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()",
    )
    .get_result(&mut c)
    .expect("commits");
    r.n
}

fn wait_delivered(url: &str, n: usize, limit: Duration) -> bool {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = PgConnection::establish(url).expect("connect");
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let got: Count =
            diesel::sql_query("SELECT count(*) AS n FROM emails WHERE status = 'delivered'")
                .get_result(&mut c)
                .expect("count");
        if got.n as usize >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `name: on a, b (mean m) | off c, d (mean n) | on/off r`.
fn ab_line(name: &str, on: &[f64], off: &[f64]) {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    print_figure(
        name,
        format!(
            "on {} (mean {:.0}) | off {} (mean {:.0}) | on/off {:.3}",
            list(on),
            mean(on),
            list(off),
            mean(off),
            mean(on) / mean(off).max(f64::MIN_POSITIVE)
        ),
    );
}
