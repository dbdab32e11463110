//! Hostile tenants (issue 11, part A): what one tenant's worst behaviour
//! costs the server and the other tenants, each against a same-run baseline.
//!
//! 1. Peak RSS of the API process (and of its render processes) under 16
//!    concurrent renders of the memory bomb, against 16 concurrent
//!    renders of an ordinary template.
//! 2. Auth p99 of tenant B's 20 keys (cache hits) while tenant A's keys are
//!    revoked one every 20 ms, against B alone.
//! 3. The outbox INSERT inside the ingest transaction: a batch of
//!    `email.queued` events of a tenant at the endpoint cap (20) against one
//!    with no endpoints.
//! 4. Webhook latency (202 → POST received) of a well-behaved tenant while
//!    another tenant's 20 endpoints hang until the POST times out, against
//!    the same tenant alone.
//!
//! Run: `deploy/dev bench hostile` (about a minute and a half).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::app::BenchApp;
use common::{print_figure, BenchEnv, Samples, Unit};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOMB: &str = "{% set a = 'x' * 100000000 %}{% set b = a ~ a ~ a ~ a %}{{ b|length }}";

fn main() {
    let Some(env) = BenchEnv::from_env("hostile") else {
        return;
    };
    common::runtime().block_on(run(&env));
}

async fn run(env: &BenchEnv) {
    env.print_header();
    let db = env.fresh_database();
    let mut s = common::app::settings(&db.url, None);
    s.webhooks.timeout_secs = 5;
    s.webhooks.lease_secs = 30;
    s.webhooks.poll_interval_ms = 100;
    s.delivery.capture_dir = std::env::temp_dir().join(format!("hostile-{}", db.name));
    let mut app = BenchApp::start(s).await;
    let api = Api::new(&app);
    renders(env, &api).await;
    revocations(env, &app, &api).await;
    outbox(env, &api, &db.url).await;
    app.start_worker();
    webhooks(env, &api).await;
    app.stop_worker().await;
}

/// The outbox INSERT as the ingest transaction runs it, for a batch of
/// `email.queued` events of a tenant with 20 endpoints (the cap) and of one
/// with none; rolled back, so every round sees the same tables.
async fn outbox(env: &BenchEnv, api: &Api, url: &str) {
    use diesel::{Connection, PgConnection};
    use postline::emails::model::NewEvent;
    let batch = env.iters(500, 20);
    let mail = json!({"from": "a@x.example", "to": "b@example.com", "subject": "s", "text": "t"});
    let mut ids = Vec::new();
    for (name, hooks) in [("outbox-20", 20), ("outbox-0", 0)] {
        let t = api.tenant(name).await;
        let (_, key) = api.key(&t, &["send", "webhooks:write"]).await;
        for i in 0..hooks {
            // Never reached: the worker is not running in this phase, and
            // these deliveries are deleted below.
            let url = format!("http://127.0.0.1:9/h{i}");
            let (st, b) = api
                .post("/v1/webhooks", &key, json!({"url": url, "events": ["*"]}))
                .await;
            assert_eq!(st, 201, "{b}");
        }
        let emails = json!({"emails": vec![mail.clone(); 100]});
        let mut email_ids = Vec::new();
        for _ in 0..batch.div_ceil(100) {
            let (st, r) = api.post("/v1/emails/batch", &key, emails.clone()).await;
            assert_eq!(st, 202, "{r}");
            for d in r["data"].as_array().unwrap() {
                email_ids.push(uuid::Uuid::parse_str(d["id"].as_str().unwrap()).unwrap());
            }
        }
        email_ids.truncate(batch);
        ids.push((name, uuid::Uuid::parse_str(&t).unwrap(), email_ids));
    }
    let rounds = env.iters(20, 2);
    let mut conn = PgConnection::establish(url).expect("connect");
    for (name, tenant, emails) in ids {
        let events: Vec<NewEvent> = emails
            .iter()
            .map(|e| NewEvent {
                tenant_id: tenant,
                email_id: *e,
                kind: "email.queued".into(),
                detail: json!({}),
                at: chrono::Utc::now(),
            })
            .collect();
        let mut s = Samples::with_capacity(rounds);
        let mut rows = 0;
        for _ in 0..rounds {
            let _ = conn.transaction::<(), diesel::result::Error, _>(|c| {
                let t = Instant::now();
                rows = postline::webhooks::outbox::enqueue(c, &events)?;
                s.push(t.elapsed());
                Err(diesel::result::Error::RollbackTransaction)
            });
        }
        s.summary()
            .print(&format!("outbox {batch} events, {name}"), Unit::Millis);
        print_figure(
            &format!("  rows per event, {name}"),
            format!("{:.1}", rows as f64 / batch as f64),
        );
        print_figure(
            &format!("  per event, {name}"),
            format!(
                "{:.1} us",
                s.summary().p50.as_secs_f64() * 1e6 / batch as f64
            ),
        );
        use diesel::RunQueryDsl;
        diesel::sql_query(format!("DELETE FROM webhooks WHERE tenant_id = '{tenant}'"))
            .execute(&mut conn)
            .expect("drop the unreachable endpoints");
    }
}

/// A thin client of the bench app's HTTP API.
struct Api {
    base: String,
    admin: String,
    client: reqwest::Client,
}

impl Api {
    fn new(app: &BenchApp) -> Api {
        Api {
            base: format!("http://{}", app.addr),
            admin: app.admin_key.clone(),
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Value,
    ) -> (u16, Value) {
        let r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, key, body).await
    }

    async fn tenant(&self, name: &str) -> String {
        let (st, t) = self
            .post("/v1/tenants", &self.admin, json!({"name": name}))
            .await;
        assert_eq!(st, 201, "{t}");
        t["id"].as_str().unwrap().to_string()
    }

    /// A key of `tenant`; returns (api key id, token).
    async fn key(&self, tenant: &str, perms: &[&str]) -> (String, String) {
        let (st, k) = self
            .post(
                &format!("/v1/tenants/{tenant}/api-keys"),
                &self.admin,
                json!({"name": "bench", "permissions": perms}),
            )
            .await;
        assert_eq!(st, 201, "{k}");
        (
            k["id"].as_str().unwrap().into(),
            k["key"].as_str().unwrap().into(),
        )
    }
}

/// A `kB` field of a /proc status file.
fn status_kb(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The largest VmHWM (kB) among this process's living children (the render
/// processes). A child killed by its limit is gone before it can be read, so
/// [`renders`] samples this every few milliseconds while the bombs run.
/// (getrusage's RUSAGE_CHILDREN is no use here: it counts a child's RSS
/// between fork and exec, which is this whole process.)
fn children_peak_kb() -> u64 {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().to_string();
            let status = format!("/proc/{pid}/status");
            let text = std::fs::read_to_string(&status).ok()?;
            let ppid = text
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .to_string();
            // Only after exec: between fork and exec a child still shows
            // this whole process's memory.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let sandbox = String::from_utf8_lossy(&cmdline).contains("template-sandbox");
            (ppid == me && sandbox).then(|| status_kb(&status, "VmHWM"))
        })
        .max()
        .unwrap_or(0)
}

/// Samples [`children_peak_kb`] until `stop` is set; returns the maximum.
fn sample_children(stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(children_peak_kb());
            std::thread::sleep(Duration::from_millis(2));
        }
        peak
    })
}

async fn renders(env: &BenchEnv, api: &Api) {
    let tenant = api.tenant("renderer").await;
    let (_, key) = api
        .key(&tenant, &["templates:read", "templates:write"])
        .await;
    let normal = format!(
        "<h1>Hello {{{{ name }}}}</h1>{}<p>{{% for i in items %}}{{{{ i }}}}, {{% endfor %}}</p>",
        "<p>Thank you for your order; it ships soon.</p>".repeat(100)
    );
    for (name, html) in [("normal", normal.as_str()), ("bomb", BOMB)] {
        let (st, t) = api
            .post(
                "/v1/templates",
                &key,
                json!({"name": name, "subject": "s", "html": html}),
            )
            .await;
        assert_eq!(st, 201, "{t}");
    }
    let rounds = env.iters(5, 1);
    let vars = json!({"variables": {"name": "Ann", "items": (0..50).collect::<Vec<_>>()}});
    let phase = |name: &'static str, want: u16| {
        let vars = vars.clone();
        let key = key.clone();
        async move {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = sample_children(stop.clone());
            let mut samples = Samples::with_capacity(16 * rounds);
            for _ in 0..rounds {
                let calls = (0..16).map(|_| {
                    let (vars, key) = (vars.clone(), key.clone());
                    async move {
                        let t = Instant::now();
                        let (st, body) = api
                            .post(&format!("/v1/templates/{name}/render"), &key, vars)
                            .await;
                        assert_eq!(st, want, "{name}: {body}");
                        t.elapsed()
                    }
                });
                for d in futures_util::future::join_all(calls).await {
                    samples.push(d);
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let children = sampler.join().unwrap_or(0);
            (samples, status_kb("/proc/self/status", "VmHWM"), children)
        }
    };
    let (ok, base_hwm, base_child) = phase("normal", 200).await;
    let (bomb, bomb_hwm, bomb_child) = phase("bomb", 422).await;
    ok.summary()
        .print("render ordinary x16 (baseline)", Unit::Millis);
    bomb.summary().print("render bomb x16 (422)", Unit::Millis);
    print_figure(
        "api peak RSS, ordinary x16",
        format!("{:.1} MB", base_hwm as f64 / 1024.0),
    );
    print_figure(
        "api peak RSS, bomb x16",
        format!("{:.1} MB", bomb_hwm as f64 / 1024.0),
    );
    print_figure(
        "api peak RSS ratio (bomb/baseline)",
        format!("{:.3}", bomb_hwm as f64 / base_hwm.max(1) as f64),
    );
    print_figure(
        "render process peak, ordinary",
        format!("{:.1} MB (sampled)", base_child as f64 / 1024.0),
    );
    print_figure(
        "render process peak, bomb",
        format!(
            "{:.1} MB (sampled; limit: 64 MiB over its start)",
            bomb_child as f64 / 1024.0
        ),
    );
}

async fn revocations(env: &BenchEnv, app: &BenchApp, api: &Api) {
    let victims = env.iters(150, 10);
    let a = api.tenant("revoked").await;
    let b = api.tenant("bystander").await;
    let mut a_keys = Vec::with_capacity(2 * victims);
    for _ in 0..2 * victims {
        a_keys.push(api.key(&a, &["send"]).await.0);
    }
    let mut b_keys = Vec::new();
    for _ in 0..20 {
        b_keys.push(api.key(&b, &["send"]).await.1);
    }
    let auth = app.state.auth.clone();
    for k in &b_keys {
        auth.authenticate(k).await.expect("b key");
    }
    // B authenticates round robin for `period` while `during` runs.
    let measure = |period: Duration| {
        let (auth, b_keys) = (auth.clone(), b_keys.clone());
        tokio::spawn(async move {
            let mut s = Samples::with_capacity(100_000);
            let end = Instant::now() + period;
            let mut i = 0;
            while Instant::now() < end {
                let t = Instant::now();
                auth.authenticate(&b_keys[i % b_keys.len()])
                    .await
                    .expect("b key");
                s.push(t.elapsed());
                i += 1;
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            s
        })
    };
    let period = Duration::from_millis(20) * u32::try_from(victims).unwrap_or(150);
    let argon2_before = auth.argon2_verifications();
    let base = measure(period).await.expect("baseline");
    let loaded = measure(period);
    let tenant_ref = Some(postline::tenants::model::TenantRef::parse(&a));
    let (now_keys, old_keys) = a_keys.split_at(victims);
    for id in now_keys {
        postline::keys::service::revoke(
            &app.state,
            &postline::audit::Actor::cli(),
            tenant_ref.clone(),
            id,
        )
        .await
        .expect("revoke");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let loaded = loaded.await.expect("loaded");
    let argon2_now = auth.argon2_verifications() - argon2_before;
    // The behaviour before issue 11, for reference: every revocation
    // cleared the whole cache, proven secrets included.
    let before_fix = measure(period);
    for id in old_keys {
        postline::keys::service::revoke(
            &app.state,
            &postline::audit::Actor::cli(),
            tenant_ref.clone(),
            id,
        )
        .await
        .expect("revoke");
        auth.invalidate_all();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_fix = before_fix.await.expect("before fix");
    base.summary()
        .print("auth B alone (baseline)", Unit::Micros);
    loaded
        .summary()
        .print("auth B, A revoked every 20 ms", Unit::Micros);
    before_fix
        .summary()
        .print("  same, clearing all (old code)", Unit::Micros);
    print_figure("revocations of A", victims);
    print_figure("argon2 runs for B meanwhile", argon2_now);
    print_figure(
        "argon2 runs for B, old code",
        auth.argon2_verifications() - argon2_before - argon2_now,
    );
    print_figure(
        "auth B p99 ratio (loaded/baseline)",
        format!(
            "{:.2}",
            loaded.summary().p99.as_secs_f64() / base.summary().p99.as_secs_f64().max(1e-9)
        ),
    );
}

/// A webhook receiver: `/slow…` never answers in time; anything else gets
/// 200 and its arrival is recorded by the message's id.
async fn receiver() -> (u16, Arc<Mutex<HashMap<String, Instant>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = shared.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let body_at = loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..body_at]).to_ascii_lowercase();
                if head.starts_with("post /slow") {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < body_at + len {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body: Value = serde_json::from_slice(&buf[body_at..]).unwrap_or(Value::Null);
                if let Some(id) = body["data"]["email_id"].as_str() {
                    seen.lock().unwrap().insert(id.to_string(), Instant::now());
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (port, seen)
}

async fn webhooks(env: &BenchEnv, api: &Api) {
    let (port, seen) = receiver().await;
    let perms = ["send", "webhooks:write"];
    let good = api.tenant("well-behaved").await;
    let (_, good_key) = api.key(&good, &perms).await;
    let slow = api.tenant("hanging").await;
    let (_, slow_key) = api.key(&slow, &perms).await;
    let hook = |path: String| json!({"url": format!("http://127.0.0.1:{port}{path}"), "events": ["email.queued"]});
    let (st, b) = api
        .post("/v1/webhooks", &good_key, hook("/good".into()))
        .await;
    assert_eq!(st, 201, "{b}");
    let mail = json!({"from": "a@x.example", "to": "b@example.com", "subject": "s", "text": "t"});
    let per_phase = env.iters(40, 5);
    // Sends `n` of the good tenant's mails at 10/s; latency 202 → POST.
    let good_phase = |n: usize| {
        let (mail, key, seen) = (mail.clone(), good_key.clone(), seen.clone());
        async move {
            let mut sent = Vec::with_capacity(n);
            for _ in 0..n {
                let (st, r) = api.post("/v1/emails", &key, mail.clone()).await;
                assert_eq!(st, 202, "{r}");
                sent.push((r["id"].as_str().unwrap().to_string(), Instant::now()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut s = Samples::with_capacity(n);
            for (id, at) in sent {
                loop {
                    if let Some(got) = seen.lock().unwrap().get(&id) {
                        s.push(got.saturating_duration_since(at));
                        break;
                    }
                    assert!(Instant::now() < deadline, "webhook for {id} never arrived");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            s
        }
    };
    let base = good_phase(per_phase).await;
    for i in 0..20 {
        let (st, b) = api
            .post("/v1/webhooks", &slow_key, hook(format!("/slow/{i}")))
            .await;
        assert_eq!(st, 201, "{b}");
    }
    for _ in 0..env.iters(20, 2) {
        let (st, r) = api.post("/v1/emails", &slow_key, mail.clone()).await;
        assert_eq!(st, 202, "{r}");
    }
    let loaded = good_phase(per_phase).await;
    base.summary()
        .print("webhook good tenant alone", Unit::Millis);
    loaded
        .summary()
        .print("webhook good, other hangs x20", Unit::Millis);
    print_figure("hanging deliveries queued", 20 * env.iters(20, 2));
    print_figure(
        "webhook p99 ratio (loaded/baseline)",
        format!(
            "{:.2}",
            loaded.summary().p99.as_secs_f64() / base.summary().p99.as_secs_f64().max(1e-9)
        ),
    );
}
