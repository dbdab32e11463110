//! Growth benchmark (issue 7, DESIGN §9 "flat under growth"): claim latency
//! (`queue::claim::claim` of 50, as the worker runs it) and the single-send
//! ingest rate over HTTP, first on an empty queue, then with `QUEUED`
//! (default 1,000,000) due messages spread over 1,000 tenants, bulk-loaded
//! with `INSERT … SELECT generate_series` (with their `email.queued`
//! events). Prints the ratios (loaded / empty).
//!
//! Run: `deploy/dev bench growth`; a quick one:
//! `POSTLINE_BENCH_QUEUED=100000 deploy/dev bench growth`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::app::{self, BenchApp};
use common::cpu::{self, Meter};
use common::http::{self, Load, Outcome};
use common::{print_figure, BenchEnv, Mode, Samples};
use diesel::prelude::*;
use diesel::sql_types::BigInt;

const CLAIM: i64 = 50;
const TENANTS: usize = 1000;

fn main() {
    let Some(env) = BenchEnv::from_env("growth") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    env.print_header();
    let queued = env.param("QUEUED", 1_000_000, 2_000);
    let messages = env.param("MESSAGES", 20_000, 100);
    let concurrency = env.param("CONCURRENCY", 64, 4);
    let claims = env.param("CLAIMS", 200, 10);
    let api_tenants = env.param("TENANTS", 10, 2);
    let db = env.fresh_database();
    let postmaster = cpu::port_of(&env.admin_url).and_then(cpu::postmaster);
    let bench = rt.block_on(BenchApp::start(app::settings(&db.url, None)));
    let tenants = rt.block_on(bench.tenants(api_tenants));
    let mut conn = PgConnection::establish(&db.url).expect("connect");
    // The rest of the 1,000 tenants, straight into the table.
    exec(
        &mut conn,
        &format!(
            "INSERT INTO tenants (id, name, domain) \
             SELECT gen_random_uuid(), 'bulk ' || g, 'bulk' || g || '.example' \
             FROM generate_series(1, {}) g",
            TENANTS.saturating_sub(api_tenants)
        ),
    );
    print_figure("postgres", pg_settings(&mut conn));
    print_figure(
        "setup",
        format!(
            "db {}, {TENANTS} tenants ({api_tenants} with keys over HTTP), queued {queued}, \
             ingest {messages} @ c={concurrency}, {claims} claims of {CLAIM}",
            db.name
        ),
    );
    let singles = Arc::new(app::single_requests(
        &tenants,
        messages / api_tenants + 1,
        1024,
    ));
    let ingest = |label: &str| -> Outcome {
        let meter = Meter::start(None, postmaster);
        let out = http::drive(&Load {
            addr: bench.addr,
            requests: singles.clone(),
            total: messages,
            concurrency,
            rate: None,
            expect: 202,
            keep_bodies: false,
        });
        let split = meter.stop(out.client_cpu);
        if out.failed > 0 {
            let why = out.first_failure.clone().unwrap_or_default();
            assert!(
                env.mode == Mode::Full,
                "{label}: {} failed: {why}",
                out.failed
            );
            print_figure("  FAILED", format!("{} first: {why}", out.failed));
        }
        print_figure(
            label,
            format!(
                "{} in {:.2} s: {:.0} req/s  {}",
                out.ok,
                out.wall.as_secs_f64(),
                out.rate(),
                out.latencies.latency_line()
            ),
        );
        print_figure("  cpu per request", split.per_message(out.ok, out.wall));
        out
    };

    // Empty queue. The warm-up fills caches and the pool; its rows and the
    // measured ones become history (delivered), as they would be.
    println!("-- empty queue --");
    ingest("warm-up ingest");
    let empty_ingest = ingest("ingest, empty queue").rate();
    exec(&mut conn, DELIVER_ALL);
    // One claim more than measured: the EXPLAIN after them must find 50 too.
    bulk_load(&mut conn, (claims + 1) * CLAIM as usize, "claim probes");
    vacuum(&mut conn);
    let empty_claim = claim_run(&mut conn, claims, "claim 50, empty queue");

    println!("-- {queued} queued over {TENANTS} tenants --");
    exec(&mut conn, DELIVER_ALL);
    let t = Instant::now();
    let mut left = queued;
    while left > 0 {
        let n = left.min(100_000);
        bulk_load(&mut conn, n, "");
        left -= n;
    }
    let load_secs = t.elapsed().as_secs_f64();
    vacuum(&mut conn);
    // Not measure the checkpoint the bulk load's WAL triggered.
    exec(&mut conn, "CHECKPOINT");
    print_figure(
        "bulk load",
        format!(
            "{queued} rows + events in {load_secs:.1} s ({:.0} rows/s), then VACUUM ANALYZE + CHECKPOINT in {:.1} s; emails {}",
            queued as f64 / load_secs,
            t.elapsed().as_secs_f64() - load_secs,
            table_size(&mut conn)
        ),
    );
    let full_claim = claim_run(&mut conn, claims, "claim 50, queue loaded");
    let full_ingest = ingest("ingest, queue loaded").rate();

    println!("-- ratios (loaded / empty; DESIGN §9: flat) --");
    let p = |s: &Samples| s.percentiles(&[0.5, 0.99]);
    let (e, f) = (p(&empty_claim), p(&full_claim));
    print_figure(
        "claim latency p50",
        format!(
            "{:.2} ms vs {:.2} ms: {:.2}x",
            ms(f[0]),
            ms(e[0]),
            ms(f[0]) / ms(e[0])
        ),
    );
    print_figure(
        "claim latency p99",
        format!(
            "{:.2} ms vs {:.2} ms: {:.2}x",
            ms(f[1]),
            ms(e[1]),
            ms(f[1]) / ms(e[1])
        ),
    );
    print_figure(
        "ingest rate",
        format!(
            "{full_ingest:.0}/s vs {empty_ingest:.0}/s: {:.2}x",
            full_ingest / empty_ingest
        ),
    );
    drop(bench);
}

/// Every queued message becomes history (delivered), as the worker would.
const DELIVER_ALL: &str = "WITH d AS (DELETE FROM email_queue RETURNING tenant_id, email_id) \
         UPDATE emails e SET status = 'delivered', delivered_at = now() FROM d \
         WHERE e.tenant_id = d.tenant_id AND e.id = d.email_id";

fn exec(conn: &mut PgConnection, sql: &str) {
    diesel::sql_query(sql)
        .execute(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn vacuum(conn: &mut PgConnection) {
    exec(conn, "VACUUM ANALYZE emails");
    exec(conn, "VACUUM ANALYZE email_queue");
    exec(conn, "VACUUM ANALYZE email_events");
}

/// `n` due messages spread over every tenant, ~1 KB of text each, due at
/// random moments of the last hour, with their `email.queued` events.
fn bulk_load(conn: &mut PgConnection, n: usize, label: &str) {
    let t = Instant::now();
    exec(
        conn,
        &format!(
            "WITH ts AS (SELECT array_agg(id ORDER BY id) AS ids, \
                          array_agg(domain ORDER BY id) AS ds, count(*)::int AS n FROM tenants), \
             g AS (SELECT ts.ids[1 + g % ts.n] AS t, gen_random_uuid() AS id, ts.ds[1 + g % ts.n] AS d, g, \
                          now() - random() * interval '1 hour' AS due \
                   FROM generate_series(1, {n}) g, ts), \
             e AS (INSERT INTO emails (tenant_id, id, expires_at, message_id, \
                     from_addr, envelope_from, to_addrs, subject, text_body, tags, created_at) \
                   SELECT t, id, now() + interval '4 days', '<' || g || '.bulk@' || d || '>', \
                          'orders@' || d, 'orders@' || d, \
                          ARRAY['customer' || g || '@example.com'], 'Your order #' || g, \
                          repeat('Thank you for your order. We are getting it ready. ', 16), \
                          '{{\"kind\": \"order\"}}'::jsonb, now() - interval '1 hour' \
                   FROM g RETURNING tenant_id, id, created_at), \
             q AS (INSERT INTO email_queue (tenant_id, email_id, next_attempt_at, size_bytes) \
                   SELECT t, id, due, 900 FROM g) \
             INSERT INTO email_events (tenant_id, email_id, type, at) \
             SELECT tenant_id, id, 'email.queued', created_at FROM e"
        ),
    );
    if !label.is_empty() {
        print_figure(
            label,
            format!("{n} rows in {:.2} s", t.elapsed().as_secs_f64()),
        );
    }
}

/// `claims` fair claims of 50 as the worker issues them (no tenant in flight
/// yet, no byte limit), each timed; the claimed rows stay leased.
fn claim_run(conn: &mut PgConnection, claims: usize, label: &str) -> Samples {
    let mut s = Samples::with_capacity(claims);
    let mut claimed = 0;
    let mut cursor = uuid::Uuid::nil();
    let none = std::collections::HashMap::new();
    let want = postline::queue::claim::Want {
        slots: CLAIM as usize,
        bytes: i64::MAX,
        idle: true,
        tenant_cap: CLAIM as usize,
        tenant_bytes: i64::MAX,
        inflight: &none,
        skip: &[],
        lease_secs: 300.0,
    };
    for _ in 0..claims {
        let t = Instant::now();
        let got = postline::queue::claim::claim(conn, &want, &mut cursor).expect("claim");
        s.push(t.elapsed());
        claimed += got.messages.len();
    }
    print_figure(
        label,
        format!("n={claims} ({claimed} rows)  {}", s.latency_line()),
    );
    s
}

fn table_size(conn: &mut PgConnection) -> String {
    #[derive(QueryableByName)]
    struct Size {
        #[diesel(sql_type = diesel::sql_types::Text)]
        s: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let r: Size = diesel::sql_query(
        "SELECT pg_size_pretty(pg_total_relation_size('emails')) || ' emails, ' || \
           pg_size_pretty(pg_total_relation_size('email_queue')) || ' queue' AS s, \
         (SELECT count(*) FROM email_queue WHERE next_attempt_at <= now()) AS n",
    )
    .get_result(conn)
    .expect("size");
    format!("{} total, {} due", r.s, r.n)
}

fn pg_settings(conn: &mut PgConnection) -> String {
    #[derive(QueryableByName)]
    struct S {
        #[diesel(sql_type = diesel::sql_types::Text)]
        s: String,
    }
    let r: S = diesel::sql_query(
        "SELECT 'shared_buffers ' || current_setting('shared_buffers') || ', max_wal_size ' || \
         current_setting('max_wal_size') || ', fsync ' || current_setting('fsync') || \
         ', synchronous_commit ' || current_setting('synchronous_commit') AS s",
    )
    .get_result(conn)
    .expect("settings");
    r.s
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
