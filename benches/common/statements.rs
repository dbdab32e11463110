//! What Postgres ran during one phase of a benchmark, per accepted message:
//! the statements (`pg_stat_statements`: calls, rows, execution time) and
//! the WAL written (`pg_stat_wal`). On only with `POSTLINE_BENCH_PG_STATEMENTS=1`
//! and a cluster started with the extension preloaded:
//!
//! ```sh
//! POSTLINE_BENCH_PG_STATEMENTS=1 \
//! POSTLINE_BENCH_PG_OPTS="-c shared_preload_libraries=pg_stat_statements" \
//!   deploy/dev bench load
//! ```
//!
//! With `-c pg_stat_statements.track_planning=on` added to the options, the
//! planning time is counted too (else it reads 0).

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text};

use super::print_figure;

/// Whether the statements are to be counted (the environment asks for it).
pub fn wanted() -> bool {
    std::env::var("POSTLINE_BENCH_PG_STATEMENTS").is_ok_and(|v| v == "1")
}

/// Zeroes the statement and WAL statistics of the whole cluster. False (and
/// a line saying why) when the extension is not loaded.
pub fn reset(url: &str) -> bool {
    let mut c = PgConnection::establish(url).expect("connect");
    let ok = diesel::sql_query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut c)
        .and_then(|_| diesel::sql_query("SELECT pg_stat_statements_reset()").execute(&mut c))
        .and_then(|_| diesel::sql_query("SELECT pg_stat_reset_shared('wal')").execute(&mut c));
    if let Err(e) = &ok {
        print_figure("  pg statements", format!("not counted: {e}"));
    }
    ok.is_ok()
}

#[derive(QueryableByName)]
struct Stmt {
    #[diesel(sql_type = BigInt)]
    calls: i64,
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = Double)]
    ms: f64,
    #[diesel(sql_type = Double)]
    plan_ms: f64,
    #[diesel(sql_type = Text)]
    query: String,
}

#[derive(QueryableByName)]
struct Wal {
    #[diesel(sql_type = BigInt)]
    records: i64,
    #[diesel(sql_type = BigInt)]
    fpi: i64,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

/// Prints, per accepted message, the statements run since [`reset`] (the
/// `top` costliest by execution time, then the totals) and the WAL written.
pub fn report(url: &str, messages: usize, top: i64) {
    let mut c = PgConnection::establish(url).expect("connect");
    let n = messages.max(1) as f64;
    let stmts: Vec<Stmt> = diesel::sql_query(
        // A multi-row INSERT is one text per row count: grouped by its start.
        "SELECT sum(calls)::bigint AS calls, sum(rows)::bigint AS rows, \
           sum(total_exec_time) AS ms, sum(total_plan_time) AS plan_ms, q AS query \
         FROM (SELECT calls, rows, total_exec_time, total_plan_time, \
                 left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS q \
               FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_%') s \
         GROUP BY q ORDER BY sum(total_exec_time) + sum(total_plan_time) DESC",
    )
    .load(&mut c)
    .unwrap_or_default();
    let (mut calls, mut rows, mut ms, mut plan_ms) = (0i64, 0i64, 0f64, 0f64);
    for s in &stmts {
        calls += s.calls;
        rows += s.rows;
        ms += s.ms;
        plan_ms += s.plan_ms;
    }
    for s in stmts.iter().take(top.max(0) as usize) {
        print_figure(
            "  pg statement",
            format!(
                "{:.3} calls, {:.2} rows, {:.1} µs exec, {:.1} µs plan per msg: {}",
                s.calls as f64 / n,
                s.rows as f64 / n,
                s.ms * 1000.0 / n,
                s.plan_ms * 1000.0 / n,
                s.query
            ),
        );
    }
    print_figure(
        "  pg statements, all",
        format!(
            "{} kinds (by their first 90 characters); {:.2} calls, {:.2} rows, {:.1} µs exec, {:.1} µs plan per msg",
            stmts.len(),
            calls as f64 / n,
            rows as f64 / n,
            ms * 1000.0 / n,
            plan_ms * 1000.0 / n
        ),
    );
    let wal: Option<Wal> = diesel::sql_query(
        "SELECT wal_records AS records, wal_fpi AS fpi, wal_bytes::bigint AS bytes FROM pg_stat_wal",
    )
    .get_result(&mut c)
    .ok();
    if let Some(w) = wal {
        print_figure(
            "  pg wal",
            format!(
                "{:.1} records, {:.2} full pages, {:.0} bytes per msg",
                w.records as f64 / n,
                w.fpi as f64 / n,
                w.bytes as f64 / n
            ),
        );
    }
}
