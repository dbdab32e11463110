//! `serve` soak (issue 24): the real `postline serve` binary in its own
//! process, many quota tenants sending at once while its worker delivers to
//! a counting sink, for minutes; the server's resident size is sampled from
//! `/proc/<pid>/status` all along, so the figure is the server's alone (the
//! client and the sink live in this process).
//!
//! ```sh
//! deploy/dev bench soak                                   # 50 tenants, 10 min, 2 KB, c=64
//! POSTLINE_BENCH_SOAK_SECS=180 deploy/dev bench soak
//! ```
//!
//! Figures: resident size idle (the baseline: started, tenants made), its
//! peak under load, the mean of the first and of the last minute of load
//! (flat when their ratio is near 1), after the queue drained; accepted and
//! delivered rates, the queue's depth over time, CPU per message of the
//! server (with its children) and of Postgres.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::app::{single_requests, BenchTenant};
use common::http::{self, Load};
use common::sink::smtp_sink::SinkConfig;
use common::sink::SinkThread;
use common::{check, cpu, print_figure, BenchEnv};
use diesel::prelude::*;
use serde_json::json;

/// The issue's bound on the server's resident size under this load.
const TARGET_MB: u64 = 300;

fn main() {
    let Some(env) = BenchEnv::from_env("soak") else {
        return;
    };
    env.print_header();
    let tenants_n = env.param("TENANTS", 50, 3);
    let secs = env.param("SOAK_SECS", 600, 4) as u64;
    let size = env.param("SIZE", 2048, 1024);
    let concurrency = env.param("CONCURRENCY", 64, 4);
    let db = env.fresh_database();
    let postmaster = cpu::port_of(&env.admin_url).and_then(cpu::postmaster);
    let sink = SinkThread::start_with(SinkConfig {
        count_only: true,
        ..SinkConfig::default()
    });
    let mut server = Server::start(&db.url, sink.sink.port());
    let rt = common::runtime();
    let tenants = rt.block_on(make_tenants(&server, &db.url, tenants_n));
    let idle_kib = postline::memory::rss_kib_of(server.pid()).unwrap_or(0);
    print_figure(
        "shape",
        format!(
            "postline serve (pid {}), {tenants_n} tenants with a daily quota, {size} B bodies, \
             c={concurrency}, {secs} s; counting sink",
            server.pid()
        ),
    );
    print_figure("rss idle (baseline)", mb(idle_kib));

    let samples = Arc::new(Mutex::new(Vec::<(f64, u64, i64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampler = {
        let (samples, stop, pid, url) =
            (samples.clone(), stop.clone(), server.pid(), db.url.clone());
        std::thread::spawn(move || {
            let mut conn = PgConnection::establish(&url).expect("connect for sampling");
            while !stop.load(Ordering::SeqCst) {
                let rss = postline::memory::rss_kib_of(pid).unwrap_or(0);
                let queued = queue_depth(&mut conn);
                samples.lock().expect("samples").push((
                    started.elapsed().as_secs_f64(),
                    rss,
                    queued,
                ));
                std::thread::sleep(Duration::from_secs(5));
            }
        })
    };

    let requests = Arc::new(single_requests(&tenants, 20, size));
    let (cpu_server0, cpu_pg0) = (
        cpu::cluster(server.pid() as i32),
        postmaster.map(cpu::cluster).unwrap_or_default(),
    );
    let chunk = env.param("SOAK_CHUNK", 20_000, 200);
    let (mut accepted, mut latencies) = (0usize, common::Samples::with_capacity(0));
    while started.elapsed() < Duration::from_secs(secs) {
        let out = http::drive(&Load {
            addr: server.addr(),
            requests: requests.clone(),
            total: chunk,
            concurrency,
            rate: None,
            expect: 202,
            keep_bodies: false,
        });
        check(&env, "soak", &out);
        accepted += out.ok;
        latencies.extend(out.latencies);
    }
    let load_wall = started.elapsed();
    let drained = wait_drained(&db.url, Duration::from_secs(600));
    let drain_wall = started.elapsed();
    let (cpu_server, cpu_pg) = (
        cpu::cluster(server.pid() as i32).saturating_sub(cpu_server0),
        postmaster
            .map(cpu::cluster)
            .unwrap_or_default()
            .saturating_sub(cpu_pg0),
    );
    std::thread::sleep(Duration::from_secs(5));
    let after_kib = postline::memory::rss_kib_of(server.pid()).unwrap_or(0);
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    let delivered = sink.sink.count();
    server.stop();

    let samples = samples.lock().expect("samples").clone();
    let load_secs = load_wall.as_secs_f64();
    let in_load: Vec<_> = samples.iter().filter(|s| s.0 <= load_secs).collect();
    let peak = in_load.iter().map(|s| s.1).max().unwrap_or(0);
    let mean = |from: f64, to: f64| {
        let v: Vec<u64> = in_load
            .iter()
            .filter(|s| s.0 >= from && s.0 < to)
            .map(|s| s.1)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<u64>() / v.len() as u64)
    };
    let window = 60f64.min(load_secs / 2.0);
    let first = mean(0.0, window);
    let last = mean(load_secs - window, load_secs + 1.0);
    print_figure(
        "accepted",
        format!(
            "{accepted} in {load_secs:.0} s: {:.0} req/s  {}",
            accepted as f64 / load_secs,
            latencies.latency_line()
        ),
    );
    print_figure(
        "delivered",
        format!(
            "{delivered} by {:.0} s{}",
            drain_wall.as_secs_f64(),
            if drained { "" } else { " (queue NOT drained)" }
        ),
    );
    print_figure(
        "cpu per message",
        format!(
            "server {:.0} us, postgres {:.0} us (accepted and delivered)",
            per_msg(cpu_server, accepted),
            per_msg(cpu_pg, accepted)
        ),
    );
    let depth: BTreeMap<u64, i64> = samples
        .iter()
        .filter(|s| s.0 <= load_secs)
        .map(|s| ((s.0 / 60.0) as u64, s.2))
        .fold(BTreeMap::new(), |mut m, (k, v)| {
            let e = m.entry(k).or_insert(0);
            *e = (*e).max(v);
            m
        });
    print_figure("queue depth, max per minute", format!("{depth:?}"));
    print_figure("rss peak under load", mb(peak));
    if let (Some(f), Some(l)) = (first, last) {
        print_figure(
            &format!("rss first / last {window:.0} s"),
            format!(
                "{} / {}: last/first {:.2}",
                mb(f),
                mb(l),
                l as f64 / f.max(1) as f64
            ),
        );
    }
    print_figure("rss after the drain", mb(after_kib));
    print_figure(
        "rss peak / idle baseline",
        format!("{:.2}", peak as f64 / idle_kib.max(1) as f64),
    );
    print_figure(
        "rss peak / target 300 MB",
        format!("{:.2}", peak as f64 / (TARGET_MB * 1024) as f64),
    );
}

fn per_msg(cpu: Duration, n: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / n.max(1) as f64
}

fn mb(kib: u64) -> String {
    format!("{} MB", kib / 1024)
}

#[derive(QueryableByName)]
struct Depth {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn queue_depth(conn: &mut PgConnection) -> i64 {
    diesel::sql_query("SELECT count(*) AS n FROM email_queue")
        .get_result::<Depth>(conn)
        .map_or(-1, |d| d.n)
}

fn wait_drained(url: &str, timeout: Duration) -> bool {
    let mut conn = PgConnection::establish(url).expect("connect");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if queue_depth(&mut conn) == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// `postline serve` as an operator runs it: the production defaults
/// (`config/default.toml`), a random master key, listeners on free loopback
/// ports, delivering to the sink on loopback; configuration in the
/// environment.
struct Server {
    child: Child,
    port: u16,
    env: Vec<(String, String)>,
}

impl Server {
    fn start(db_url: &str, smtp_port: u16) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let key: [u8; 32] = rand::random();
        let env: Vec<(String, String)> = [
            ("DATABASE_URL", db_url.to_string()),
            (
                "POSTLINE_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config").into(),
            ),
            (
                "POSTLINE__SECURITY__MASTER_KEY",
                base64::engine::general_purpose::STANDARD.encode(key),
            ),
            ("POSTLINE__SERVER__BIND", format!("127.0.0.1:{port}")),
            ("POSTLINE__INBOUND__BIND", "127.0.0.1:0".into()),
            ("POSTLINE__SUBMISSION__BIND", "127.0.0.1:0".into()),
            ("POSTLINE__DELIVERY__ALLOW_PRIVATE_RELAYS", "true".into()),
            ("POSTLINE__DELIVERY__MODE", "smtp".into()),
            ("POSTLINE__DELIVERY__SMTP__HOST", "127.0.0.1".into()),
            ("POSTLINE__DELIVERY__SMTP__PORT", smtp_port.to_string()),
            ("POSTLINE__DELIVERY__SMTP__TLS", "none".into()),
            ("POSTLINE__LOG__LEVEL", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut s = Server {
            child: Self::command(&env)
                .arg("serve")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn postline serve"),
            port,
            env,
        };
        s.wait_up();
        s
    }

    fn command(env: &[(String, String)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_postline"));
        for (k, _) in std::env::vars() {
            if k.starts_with("POSTLINE") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(
                self.child.try_wait().expect("child status").is_none(),
                "postline serve exited"
            );
            assert!(Instant::now() < deadline, "postline serve did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn admin_key(&self) -> String {
        let out = Self::command(&self.env)
            .args(["admin-key", "create", "--name", "soak"])
            .output()
            .expect("postline admin-key create");
        assert!(out.status.success(), "admin-key create failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout.lines().last().expect("key").trim().to_string()
    }

    fn stop(&mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` tenants with a daily quota and a send key, their domains marked
/// verified (no DNS here) before the first send.
async fn make_tenants(server: &Server, db_url: &str, n: usize) -> Vec<BenchTenant> {
    let admin = server.admin_key();
    let client = reqwest::Client::new();
    let base = format!("http://{}", server.addr());
    let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let domain = format!("s{i}-{run}.example");
        let t: serde_json::Value = client
            .post(format!("{base}/v1/tenants"))
            .bearer_auth(&admin)
            .json(
                &json!({"name": format!("soak tenant {i}"), "domain": domain,
                          "rate_limit": {"emails_per_day": 1_000_000_000}}),
            )
            .send()
            .await
            .expect("create tenant")
            .json()
            .await
            .expect("tenant json");
        let id = t["id"].as_str().expect("tenant id").to_string();
        let k: serde_json::Value = client
            .post(format!("{base}/v1/tenants/{id}/api-keys"))
            .bearer_auth(&admin)
            .json(&json!({"name": "soak", "permissions": ["send"]}))
            .send()
            .await
            .expect("create key")
            .json()
            .await
            .expect("key json");
        let key = k["key"].as_str().expect("key").to_string();
        out.push(BenchTenant { id, domain, key });
    }
    let mut conn = PgConnection::establish(db_url).expect("connect");
    diesel::sql_query("UPDATE domains SET status = 'verified', verified_at = now()")
        .execute(&mut conn)
        .expect("domains verified");
    out
}
