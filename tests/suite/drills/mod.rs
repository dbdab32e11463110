//! Plumbing of the failure drills (DESIGN §10, issue 7): the real `postline`
//! binary as a child process that can be SIGKILLed and restarted, a bounded
//! load generator that records every acknowledged (202) message id, and the
//! reconciliation against what the SMTP sink received.
//!
//! Everything targets 127.0.0.1 only; every loop is bounded in count and
//! time. `POSTLINE_DRILL_LONG=1` selects the long versions.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::smtp_sink::SmtpSink;

/// True when the long versions were asked for (`POSTLINE_DRILL_LONG=1`).
pub fn long() -> bool {
    std::env::var("POSTLINE_DRILL_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A figure line on the real stderr, past libtest's output capture, so the
/// drills' numbers show in `deploy/dev test` logs.
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "[drill] {}", format!($($arg)*));
    }};
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The `postline` binary under test, run as `postline serve` with its
/// configuration in the environment, as an operator would.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    pub starts: u32,
    /// The subcommand `start` runs: `serve` (API and worker), or `api` alone.
    pub role: &'static str,
}

impl Server {
    /// The environment of a `serve` node on `db_url` relaying to the sink on
    /// `smtp_port`, retrying fast, with short leases; `extra` wins.
    pub fn new(db_url: &str, smtp_port: u16, extra: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut env: BTreeMap<String, String> = [
            ("DATABASE_URL", db_url.to_string()),
            // config/test.toml: the suite's fixed master key, log level warn.
            ("POSTLINE_ENV", "test".into()),
            (
                "POSTLINE_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config").into(),
            ),
            ("POSTLINE__SERVER__BIND", format!("127.0.0.1:{port}")),
            ("POSTLINE__SERVER__WORKERS", "2".into()),
            ("POSTLINE__DATABASE__POOL_SIZE", "8".into()),
            ("POSTLINE__DATABASE__CONNECT_TIMEOUT_SECS", "1".into()),
            ("POSTLINE__DELIVERY__MODE", "smtp".into()),
            ("POSTLINE__DELIVERY__SMTP__HOST", "127.0.0.1".into()),
            ("POSTLINE__DELIVERY__SMTP__PORT", smtp_port.to_string()),
            ("POSTLINE__DELIVERY__SMTP__TLS", "none".into()),
            ("POSTLINE__DELIVERY__LEASE_SECS", "5".into()),
            ("POSTLINE__DELIVERY__RETRY_INITIAL_MS", "200".into()),
            ("POSTLINE__DELIVERY__RETRY_MAX_MS", "1000".into()),
            ("POSTLINE__DELIVERY__CONNECT_TIMEOUT_SECS", "2".into()),
            ("POSTLINE__DELIVERY__COMMAND_TIMEOUT_SECS", "5".into()),
            ("POSTLINE__WORKER__POLL_INTERVAL_MS", "100".into()),
            ("POSTLINE__WORKER__SHUTDOWN_TIMEOUT_SECS", "5".into()),
            ("POSTLINE__LOG__LEVEL", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let log_path =
            std::env::temp_dir().join(format!("postline-drill-{}.log", Uuid::new_v4().simple()));
        Server {
            child: None,
            port,
            base: format!("http://127.0.0.1:{port}"),
            env: env.into_iter().collect(),
            log_path,
            starts: 0,
            role: "serve",
        }
    }

    fn command(&self) -> Command {
        // POSTLINE_TEST_SERVER_BIN runs another build's binary (a release
        // build for the measurements); by default the test build's own.
        let bin = std::env::var_os("POSTLINE_TEST_SERVER_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_postline").into());
        let mut cmd = Command::new(bin);
        // Nothing of the caller's POSTLINE* environment leaks in.
        for (k, _) in std::env::vars() {
            if k.starts_with("POSTLINE") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs another `postline` subcommand with this server's environment.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.command().args(args).output().expect("run postline")
    }

    /// `postline admin-key create`: the key is the last line of stdout.
    pub fn admin_key(&self) -> String {
        let out = self
            .command()
            .args(["admin-key", "create", "--name", "drill"])
            .output()
            .expect("run postline admin-key create");
        assert!(
            out.status.success(),
            "admin-key create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .last()
            .expect("admin-key create prints the key")
            .trim()
            .to_string()
    }

    /// Whether `start` was called and the process was not stopped since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts `postline serve` (or `self.role`); its output is appended to
    /// one log file.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open drill log");
        let err = log.try_clone().expect("clone log handle");
        self.starts += 1;
        let child = self
            .command()
            .arg(self.role)
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn postline");
        self.child = Some(child);
    }

    /// Polls `/healthz` until the server answers (≤ `timeout`); returns the
    /// time it took.
    pub async fn wait_up(&mut self, client: &reqwest::Client, timeout: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "postline exited early ({status}); log:\n{}",
                        self.log_tail()
                    );
                }
            }
            let probe = client
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "postline not up within {timeout:?}; log:\n{}",
            self.log_tail()
        );
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (graceful stop), waiting up to `timeout` before SIGKILL.
    pub fn terminate(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGINT (Ctrl-C), waiting up to `timeout`: the exit status, or `None`
    /// when it had to be killed.
    pub fn interrupt(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The server's log lines that are warnings or errors (the log level is
    /// `warn`), for the report.
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn log_tail(&self) -> String {
        let mut f = match File::open(&self.log_path) {
            Ok(f) => f,
            Err(_) => return String::new(),
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(8000)));
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        s
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log_path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log_path);
        } else {
            let _ = writeln!(
                std::io::stderr(),
                "[drill] server log kept at {}",
                self.log_path.display()
            );
        }
    }
}

/// Creates a tenant and a `send` key for it through the API.
pub async fn tenant_key(client: &reqwest::Client, base: &str, admin_key: &str) -> String {
    let t: Value = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(admin_key)
        .json(&json!({"name": format!("Drill {}", Uuid::new_v4().simple())}))
        .send()
        .await
        .expect("create tenant")
        .json()
        .await
        .expect("tenant JSON");
    let id = t["id"].as_str().expect("tenant id").to_string();
    let k: Value = client
        .post(format!("{base}/v1/tenants/{id}/api-keys"))
        .bearer_auth(admin_key)
        .json(&json!({"name": "drill", "permissions": ["send", "emails:read"]}))
        .send()
        .await
        .expect("create key")
        .json()
        .await
        .expect("key JSON");
    k["key"].as_str().expect("key").to_string()
}

/// The phase of a drill a response belongs to (set by the drill, read by
/// the load when it classifies a response).
pub const BEFORE: u8 = 0;
pub const OUTAGE: u8 = 1;
pub const AFTER: u8 = 2;
/// After the recovery has settled: nothing but 202 is expected.
pub const STEADY: u8 = 3;
const PHASES: usize = 4;

#[derive(Default)]
struct PhaseStats {
    /// HTTP status → count.
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer (refused, reset, timed out).
    no_answer: u64,
    client_timeouts: u64,
    max_latency: Duration,
    /// The first 202 of the phase, from the phase's start.
    first_accept: Option<Duration>,
}

/// What the load saw: every acknowledged id, and the answers by phase.
pub struct Stats {
    acked: Mutex<Vec<Uuid>>,
    phases: Mutex<[PhaseStats; PHASES]>,
    phase: AtomicU8,
    phase_started: Mutex<Instant>,
    /// Answers that break the contract (5xx other than 503, a 503 or 4xx
    /// that is not problem JSON, a 2xx without ids): kept verbatim.
    pub violations: Mutex<Vec<String>>,
    requests: AtomicU64,
}

impl Stats {
    fn new() -> Arc<Stats> {
        Arc::new(Stats {
            acked: Mutex::default(),
            phases: Mutex::default(),
            phase: AtomicU8::new(BEFORE),
            phase_started: Mutex::new(Instant::now()),
            violations: Mutex::default(),
            requests: AtomicU64::new(0),
        })
    }

    pub fn set_phase(&self, phase: u8) {
        *self.phase_started.lock().unwrap() = Instant::now();
        self.phase.store(phase, Ordering::SeqCst);
    }

    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::SeqCst)
    }

    pub fn acked(&self) -> Vec<Uuid> {
        self.acked.lock().unwrap().clone()
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn count(&self, phase: u8, status: u16) -> u64 {
        self.phases.lock().unwrap()[phase as usize]
            .statuses
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    pub fn statuses(&self, phase: u8) -> BTreeMap<u16, u64> {
        self.phases.lock().unwrap()[phase as usize].statuses.clone()
    }

    pub fn no_answer(&self, phase: u8) -> u64 {
        self.phases.lock().unwrap()[phase as usize].no_answer
    }

    pub fn client_timeouts(&self, phase: u8) -> u64 {
        self.phases.lock().unwrap()[phase as usize].client_timeouts
    }

    pub fn max_latency(&self, phase: u8) -> Duration {
        self.phases.lock().unwrap()[phase as usize].max_latency
    }

    pub fn first_accept(&self, phase: u8) -> Option<Duration> {
        self.phases.lock().unwrap()[phase as usize].first_accept
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    fn record(&self, status: Option<u16>, timed_out: bool, latency: Duration) {
        let phase = self.phase.load(Ordering::SeqCst) as usize;
        let since = self.phase_started.lock().unwrap().elapsed();
        let mut p = self.phases.lock().unwrap();
        let s = &mut p[phase];
        match status {
            Some(code) => {
                *s.statuses.entry(code).or_default() += 1;
                if code == 202 && s.first_accept.is_none() {
                    s.first_accept = Some(since);
                }
            }
            None => s.no_answer += 1,
        }
        if timed_out {
            s.client_timeouts += 1;
        }
        s.max_latency = s.max_latency.max(latency);
    }

    fn violation(&self, what: String) {
        let mut v = self.violations.lock().unwrap();
        if v.len() < 50 {
            v.push(what);
        }
    }
}

/// How the load is shaped.
#[derive(Clone)]
pub struct LoadShape {
    pub clients: usize,
    /// Pause of each client between two requests.
    pub pause: Duration,
    /// Client-side timeout of one request (a hang shows as a timeout).
    pub timeout: Duration,
    /// Every `batch_every`-th request of a client is a batch of `batch_size`.
    pub batch_every: u64,
    pub batch_size: usize,
    /// Every `idempotent_every`-th request carries an Idempotency-Key.
    pub idempotent_every: u64,
    /// Hard stop, whatever happens.
    pub max_duration: Duration,
}

impl Default for LoadShape {
    fn default() -> Self {
        LoadShape {
            clients: 6,
            pause: Duration::from_millis(20),
            timeout: Duration::from_secs(10),
            batch_every: 5,
            batch_size: 5,
            idempotent_every: 3,
            max_duration: Duration::from_secs(600),
        }
    }
}

/// A running load: `clients` tasks sending mail until [`Load::stop`].
pub struct Load {
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(base: &str, key: &str, shape: LoadShape) -> Load {
        let stats = Stats::new();
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(shape.timeout)
            .pool_max_idle_per_host(shape.clients)
            .build()
            .expect("http client");
        let tasks = (0..shape.clients)
            .map(|c| {
                let (stats, stop, client, shape) =
                    (stats.clone(), stop.clone(), client.clone(), shape.clone());
                let (base, key) = (base.to_string(), key.to_string());
                tokio::spawn(async move {
                    client_loop(c, &client, &base, &key, &shape, &stats, &stop).await
                })
            })
            .collect();
        Load { stats, stop, tasks }
    }

    /// Stops the clients and waits for their last requests.
    pub async fn stop(self) -> Arc<Stats> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        self.stats
    }
}

fn body(client: usize, n: u64, i: usize) -> Value {
    json!({
        "from": "drill@sender.test",
        "to": format!("rcpt{client}@example.org"),
        "subject": format!("drill c{client} n{n} i{i}"),
        "text": "failure drill message",
    })
}

async fn client_loop(
    c: usize,
    client: &reqwest::Client,
    base: &str,
    key: &str,
    shape: &LoadShape,
    stats: &Stats,
    stop: &AtomicBool,
) {
    let started = Instant::now();
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < shape.max_duration {
        n += 1;
        let batch = shape.batch_every > 0 && n % shape.batch_every == 0;
        let (path, payload) = if batch {
            let emails: Vec<Value> = (0..shape.batch_size).map(|i| body(c, n, i)).collect();
            ("/v1/emails/batch", json!({"emails": emails}))
        } else {
            ("/v1/emails", body(c, n, 0))
        };
        let mut req = client
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&payload);
        if shape.idempotent_every > 0 && n % shape.idempotent_every == 0 {
            req = req.header("Idempotency-Key", Uuid::new_v4().to_string());
        }
        let t0 = Instant::now();
        stats.requests.fetch_add(1, Ordering::SeqCst);
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let ctype = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let text = resp.text().await.unwrap_or_default();
                stats.record(Some(status), false, t0.elapsed());
                classify(stats, status, &ctype, &text, batch);
            }
            Err(e) => {
                stats.record(None, e.is_timeout(), t0.elapsed());
                // The server is down (killed) or the answer was cut: wait a
                // little instead of spinning on refused connections.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(shape.pause).await;
    }
}

/// Records the ids of a 202 and every answer that breaks the contract.
fn classify(stats: &Stats, status: u16, ctype: &str, text: &str, batch: bool) {
    let json: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    if status == 202 {
        let ids: Vec<Uuid> = if batch {
            json["data"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e["id"].as_str().and_then(|s| s.parse().ok()))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            json["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .into_iter()
                .collect()
        };
        if ids.is_empty() {
            stats.violation(format!("202 without ids: {text}"));
        }
        stats.acked.lock().unwrap().extend(ids);
        return;
    }
    let problem = ctype.starts_with("application/problem+json") && json["code"].is_string();
    let allowed = status == 503 && json["code"] == "unavailable";
    if !allowed || !problem {
        stats.violation(format!("{status} {ctype}: {text}"));
    }
}

/// The email id of a message received by the sink: Postline's Message-ID
/// is `<{id as 32 hex digits}@{domain}>`.
pub fn email_id_of(data: &[u8]) -> Option<Uuid> {
    let text = String::from_utf8_lossy(data);
    let line = text
        .lines()
        .take_while(|l| !l.is_empty())
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))?;
    let value = line.split_once(':')?.1.trim();
    let inner = value.strip_prefix('<')?;
    let local = inner.split('@').next()?;
    Uuid::parse_str(local).ok()
}

/// Received messages per email id.
pub fn received(sink: &SmtpSink) -> HashMap<Uuid, usize> {
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    for m in sink.messages() {
        if let Some(id) = email_id_of(&m.data) {
            *seen.entry(id).or_default() += 1;
        }
    }
    seen
}

/// The reconciliation of acknowledged ids against the sink.
pub struct Reconciled {
    pub acked: usize,
    pub lost: Vec<Uuid>,
    /// Acknowledged ids received more than once, and the extra copies.
    pub duplicated_ids: usize,
    pub extra_copies: usize,
    /// Received but never acknowledged (the answer was cut by a kill or an
    /// outage after the COMMIT): allowed, reported.
    pub unacked_delivered: usize,
    pub waited: Duration,
}

/// Waits (≤ `timeout`) until every acknowledged id has reached the sink,
/// then counts losses and duplicates.
pub async fn reconcile(sink: &SmtpSink, acked: &[Uuid], timeout: Duration) -> Reconciled {
    let started = Instant::now();
    let wanted: HashSet<Uuid> = acked.iter().copied().collect();
    let seen = loop {
        let seen = received(sink);
        let missing = wanted.iter().filter(|id| !seen.contains_key(id)).count();
        if missing == 0 || started.elapsed() >= timeout {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lost: Vec<Uuid> = wanted
        .iter()
        .filter(|id| !seen.contains_key(id))
        .copied()
        .collect();
    let dups: Vec<usize> = seen.values().filter(|n| **n > 1).copied().collect();
    Reconciled {
        acked: wanted.len(),
        lost,
        duplicated_ids: dups.len(),
        extra_copies: dups.iter().map(|n| n - 1).sum(),
        unacked_delivered: seen.keys().filter(|id| !wanted.contains(id)).count(),
        waited: started.elapsed(),
    }
}

/// Statuses of the given messages in the database (`status → count`).
pub fn statuses_in_db(db_url: &str, ids: &[Uuid]) -> BTreeMap<String, i64> {
    use diesel::prelude::*;
    use postline::db::schema::emails::dsl as e;
    let mut conn = diesel::PgConnection::establish(db_url).expect("connect to the drill database");
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(5000) {
        let rows: Vec<(String, i64)> = e::emails
            .filter(e::id.eq_any(chunk))
            .group_by(e::status)
            .select((e::status, diesel::dsl::count_star()))
            .load(&mut conn)
            .expect("status counts");
        for (s, n) in rows {
            *out.entry(s).or_default() += n;
        }
    }
    out
}

/// [`statuses_in_db`] once every id is `delivered`, or at `timeout`. Mail a
/// killed worker handed to the relay before its COMMIT reaches the relay
/// first and is recorded only when its lease expires and it is sent again.
pub async fn delivered_in_db(
    db_url: &str,
    ids: &[Uuid],
    timeout: Duration,
) -> BTreeMap<String, i64> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = statuses_in_db(db_url, ids);
        let delivered = now.get("delivered").copied().unwrap_or(0);
        if delivered == ids.len() as i64 || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rows in the whole database by status.
pub fn all_statuses(db_url: &str) -> BTreeMap<String, i64> {
    use diesel::prelude::*;
    use postline::db::schema::emails::dsl as e;
    let mut conn = diesel::PgConnection::establish(db_url).expect("connect to the drill database");
    e::emails
        .group_by(e::status)
        .select((e::status, diesel::dsl::count_star()))
        .load::<(String, i64)>(&mut conn)
        .expect("status counts")
        .into_iter()
        .collect()
}

/// Number of events of one type (e.g. `email.deferred`).
pub fn events_of(db_url: &str, kind: &str) -> i64 {
    use diesel::prelude::*;
    use postline::db::schema::email_events::dsl as ev;
    let mut conn = diesel::PgConnection::establish(db_url).expect("connect to the drill database");
    ev::email_events
        .filter(ev::kind.eq(kind))
        .count()
        .get_result(&mut conn)
        .expect("event count")
}
