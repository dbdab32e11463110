//! Plumbing shared by the benchmarks (`harness = false` programs that print
//! labelled figures). `deploy/dev bench` runs them in release mode against a
//! throwaway, durable cluster named by `POSTLINE_BENCH_DATABASE_URL`.
//!
//! `cargo bench` passes `--bench` to the program; `cargo test --all-targets`
//! (as `deploy/dev test` does) runs it without, and then it does a quick smoke
//! run on the test cluster so the benchmarks cannot silently rot.
#![allow(dead_code)]

pub mod app;
pub mod bounced;
pub mod cpu;
pub mod http;
pub mod sink;
pub mod statements;

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::PgConnection;
use postline::config::{DatabaseSettings, Secret};
use postline::db::PgPool;

/// Full measurement (`cargo bench`) or a few iterations (`cargo test`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    Smoke,
}

pub struct BenchEnv {
    pub name: &'static str,
    pub mode: Mode,
    /// The maintenance database of the cluster; benchmarks make their own.
    pub admin_url: String,
}

impl BenchEnv {
    /// `None` (after saying why) when there is no cluster to run against.
    pub fn from_env(name: &'static str) -> Option<BenchEnv> {
        let mode = if std::env::args().any(|a| a == "--bench") {
            Mode::Full
        } else {
            Mode::Smoke
        };
        let var = match mode {
            Mode::Full => "POSTLINE_BENCH_DATABASE_URL",
            Mode::Smoke => "POSTLINE_TEST_DATABASE_URL",
        };
        let Ok(admin_url) = std::env::var(var) else {
            eprintln!("{name}: {var} is not set, skipping (run `deploy/dev bench {name}`)");
            return None;
        };
        Some(BenchEnv {
            name,
            mode,
            admin_url,
        })
    }

    /// `full` iterations when measuring, `smoke` when only checking it runs.
    pub fn iters(&self, full: usize, smoke: usize) -> usize {
        match self.mode {
            Mode::Full => full,
            Mode::Smoke => smoke,
        }
    }

    /// A size from the environment (`POSTLINE_BENCH_<NAME>`), else `full`
    /// when measuring or `smoke` when only checking it runs.
    pub fn param(&self, name: &str, full: usize, smoke: usize) -> usize {
        std::env::var(format!("POSTLINE_BENCH_{name}"))
            .ok()
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or_else(|| self.iters(full, smoke))
    }

    /// Prints the header every benchmark starts with: what ran, and where.
    pub fn print_header(&self) {
        println!("== {} ({:?}) ==", self.name, self.mode);
        println!("{:<34} {}", "machine", machine());
    }

    /// A new, migrated database on the cluster, dropped again on drop.
    pub fn fresh_database(&self) -> BenchDb {
        let name = format!(
            "bench_{}_{}",
            self.name,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut admin = PgConnection::establish(&self.admin_url).expect("connect to the cluster");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .expect("create bench database");
        let url = with_db(&self.admin_url, &name);
        let mut conn = PgConnection::establish(&url).expect("connect to the bench database");
        postline::db::migrate(&mut conn).expect("migrations apply");
        BenchDb {
            admin_url: self.admin_url.clone(),
            name,
            url,
        }
    }
}

pub struct BenchDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl BenchDb {
    pub fn pool(&self, size: u32) -> PgPool {
        postline::db::build_pool(&DatabaseSettings {
            url: Secret::new(self.url.clone()),
            pool_size: size,
            connect_timeout_secs: 10,
        })
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin);
        }
    }
}

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database url has a path");
    format!("{base}/{db}")
}

/// The server's runtime in the load benchmarks: 2 workers, as on the
/// 2-core bench machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Cores, CPU model and load average: the figures mean little without them
/// (the bench machines are small and shared).
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown cpu".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cores} cores, {model}, load {}", load.join(" "))
}

/// Per-operation latencies of one measurement.
#[derive(Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Samples(Vec::with_capacity(n))
    }

    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// Times one call and records it.
    pub fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.0.push(start.elapsed());
        out
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Nearest-rank percentiles `qs` (0..=1) at once (one sort).
    pub fn percentiles(&self, qs: &[f64]) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort_unstable();
        let n = v.len();
        qs.iter()
            .map(|q| {
                if n == 0 {
                    Duration::ZERO
                } else {
                    v[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
                }
            })
            .collect()
    }

    /// `p50 … p95 … p99 … max …` in milliseconds.
    pub fn latency_line(&self) -> String {
        let p = self.percentiles(&[0.5, 0.95, 0.99, 1.0]);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(p[0]),
            ms(p[1]),
            ms(p[2]),
            ms(p[3])
        )
    }

    pub fn summary(&self) -> Summary {
        let mut v = self.0.clone();
        v.sort_unstable();
        let n = v.len();
        if n == 0 {
            let zero = Duration::ZERO;
            return Summary {
                n,
                mean: zero,
                p50: zero,
                p99: zero,
                max: zero,
            };
        }
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let rank = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        let total: Duration = v.iter().sum();
        Summary {
            n: v.len(),
            mean: total / n as u32,
            p50: rank(0.50),
            p99: rank(0.99),
            max: v[n - 1],
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub n: usize,
    pub mean: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// The unit a line is printed in.
#[derive(Clone, Copy)]
pub enum Unit {
    Micros,
    Millis,
}

impl Unit {
    fn of(self, d: Duration) -> f64 {
        match self {
            Unit::Micros => d.as_secs_f64() * 1e6,
            Unit::Millis => d.as_secs_f64() * 1e3,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Unit::Micros => "us",
            Unit::Millis => "ms",
        }
    }
}

impl Summary {
    /// One labelled line: `label  n=…  mean … p50 … p99 … max …`.
    pub fn print(&self, label: &str, unit: Unit) {
        let u = unit.label();
        println!(
            "{label:<34} n={:<8} mean {:>9.3} {u}  p50 {:>9.3} {u}  p99 {:>9.3} {u}  max {:>9.3} {u}",
            self.n,
            unit.of(self.mean),
            unit.of(self.p50),
            unit.of(self.p99),
            unit.of(self.max),
        );
    }
}

/// A labelled figure that is not a latency distribution (a rate, a ratio).
pub fn print_figure(label: &str, value: impl std::fmt::Display) {
    println!("{label:<34} {value}");
}

/// Failed requests abort a smoke run (the code rotted); a full run reports them.
pub fn check(env: &BenchEnv, label: &str, out: &http::Outcome) {
    if out.failed > 0 {
        let why = out.first_failure.clone().unwrap_or_default();
        if env.mode == Mode::Smoke {
            panic!("{label}: {} request(s) failed, first: {why}", out.failed);
        }
        print_figure(
            &format!("  {label}: FAILED"),
            format!("{} first: {why}", out.failed),
        );
    }
}

/// Cancels what earlier phases left queued, so the next phase starts with
/// an empty due index (and a later worker does not deliver it).
pub fn cancel_queued(url: &str) {
    let mut c = PgConnection::establish(url).expect("connect");
    diesel::sql_query(
        "WITH q AS (DELETE FROM email_queue WHERE lease_until IS NULL RETURNING tenant_id, email_id) \
         UPDATE emails e SET status = 'canceled' FROM q \
         WHERE e.tenant_id = q.tenant_id AND e.id = q.email_id",
    )
    .execute(&mut c)
    .expect("cancel queued");
    for t in ["emails", "email_queue"] {
        diesel::sql_query(format!("VACUUM ANALYZE {t}"))
            .execute(&mut c)
            .expect("vacuum");
    }
}
