//! The real application for the load benchmarks: `Application::build` on
//! port 0 against a bench database, an admin key, tenants with send keys,
//! and the request bodies the load client posts.

use std::net::SocketAddr;
use std::path::Path;

use base64::Engine;
use postline::config::{DeliveryMode, Secret, Settings, TlsMode};
use postline::startup::Application;
use postline::state::AppState;
use postline::worker::WorkerHandle;
use serde_json::json;

/// Production defaults (config/default.toml) with: the bench database, port
/// 0, a random master key, no request limits (the defaults have none), and
/// delivery through the default relay at `smtp_port` when given. No log
/// subscriber is installed, so request logging costs nothing (as with
/// `log.level = "warn"`).
pub fn settings(db_url: &str, smtp_port: Option<u16>) -> Settings {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    // The test layer only adds a master key (replaced below), log level
    // warn and allow_private_targets; validation needs a key up front.
    // `POSTLINE__SECTION__KEY` variables apply, so a setting can be tried
    // out (e.g. POSTLINE__INGEST__WRITERS=1 deploy/dev bench load).
    let mut s = Settings::load_layers(&dir, Some("test"), true).expect("default settings");
    s.database.url = Secret::new(db_url);
    s.server.bind = "127.0.0.1:0".into();
    s.templates.sandbox_program = env!("CARGO_BIN_EXE_postline").into();
    let key: [u8; 32] = rand::random();
    s.security.master_key = Secret::new(base64::engine::general_purpose::STANDARD.encode(key));
    if let Some(port) = smtp_port {
        s.delivery.mode = DeliveryMode::Smtp;
        s.delivery.smtp.host = "127.0.0.1".into();
        s.delivery.smtp.port = port;
        s.delivery.smtp.tls = TlsMode::None;
    }
    s
}

pub struct BenchApp {
    pub state: AppState,
    pub addr: SocketAddr,
    pub admin_key: String,
    pub worker: Option<WorkerHandle>,
}

/// One tenant the load is spread over.
pub struct BenchTenant {
    pub id: String,
    pub domain: String,
    pub key: String,
}

impl BenchApp {
    /// Builds and starts the app on the current (multi-thread) runtime.
    pub async fn start(settings: Settings) -> BenchApp {
        let app = Application::build(settings).expect("app builds");
        let addr: SocketAddr = format!("127.0.0.1:{}", app.port()).parse().unwrap();
        let state = app.state().clone();
        tokio::spawn(app.run_until_stopped());
        let key = postline::keys::service::bootstrap_admin_key(&state.pool, "bench".into(), vec![])
            .await
            .expect("admin key");
        BenchApp {
            state,
            addr,
            admin_key: key.key.expect("key shown on create").expose().to_string(),
            worker: None,
        }
    }

    /// Starts the delivery worker, as `postline serve` does.
    pub fn start_worker(&mut self) {
        self.worker = Some(postline::worker::spawn_with(
            self.state.settings.clone(),
            self.state.pool.clone(),
            self.state.vault.clone(),
            postline::worker::Options {
                wake: Some(self.state.ingest.committed()),
                ..Default::default()
            },
        ));
    }

    pub async fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop(std::time::Duration::from_secs(30)).await;
        }
    }

    /// Benches have no DNS to publish records in: the tenant's domain is
    /// marked verified in the database (the sending rule then holds as in
    /// production). With `POSTLINE_BENCH_DKIM=1` its DKIM key (made by the
    /// first read) is made active too, so every message is signed.
    async fn verify_domain(&self, client: &reqwest::Client, tenant: &str, domain: &str) {
        let dkim = std::env::var("POSTLINE_BENCH_DKIM").is_ok_and(|v| v == "1");
        if dkim {
            let r = client
                .get(format!(
                    "http://{}/v1/tenants/{tenant}/domains/{domain}",
                    self.addr
                ))
                .bearer_auth(&self.admin_key)
                .send()
                .await
                .expect("read domain");
            assert!(r.status().is_success(), "domain read: {}", r.status());
        }
        let tenant = uuid::Uuid::parse_str(tenant).expect("tenant uuid");
        postline::db::run(&self.state.pool, move |conn| {
            use diesel::RunQueryDsl;
            diesel::sql_query("UPDATE domains SET status = 'verified', verified_at = now() WHERE tenant_id = $1")
                .bind::<diesel::sql_types::Uuid, _>(tenant)
                .execute(conn)?;
            if dkim {
                diesel::sql_query("UPDATE domain_dkim_keys SET status = 'active', activated_at = now() WHERE tenant_id = $1")
                    .bind::<diesel::sql_types::Uuid, _>(tenant)
                    .execute(conn)?;
            }
            Ok(())
        })
        .await
        .expect("domain marked verified");
        self.state.domains.rule.invalidate();
    }

    /// `n` tenants (domain `tNN-<run>.example`), each with a `send` key,
    /// through the admin API.
    pub async fn tenants(&self, n: usize) -> Vec<BenchTenant> {
        self.tenants_with(n, json!({})).await
    }

    /// As [`tenants`](Self::tenants), with `extra` merged into each create
    /// body (e.g. `{"rate_limit": {"emails_per_second": 20}}`).
    pub async fn tenants_with(&self, n: usize, extra: serde_json::Value) -> Vec<BenchTenant> {
        let client = reqwest::Client::new();
        let base = format!("http://{}", self.addr);
        let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let domain = format!("t{i}-{run}.example");
            let mut body = json!({"name": format!("bench tenant {i}"), "domain": domain});
            if let (Some(b), Some(x)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(x.clone());
            }
            let t: serde_json::Value = client
                .post(format!("{base}/v1/tenants"))
                .bearer_auth(&self.admin_key)
                .json(&body)
                .send()
                .await
                .expect("create tenant")
                .json()
                .await
                .expect("tenant json");
            let id = t["id"].as_str().expect("tenant id").to_string();
            let k: serde_json::Value = client
                .post(format!("{base}/v1/tenants/{id}/api-keys"))
                .bearer_auth(&self.admin_key)
                .json(&json!({"name": "bench", "permissions": ["send"]}))
                .send()
                .await
                .expect("create key")
                .json()
                .await
                .expect("key json");
            let key = k["key"].as_str().expect("key").to_string();
            self.verify_domain(&client, &id, &domain).await;
            out.push(BenchTenant { id, domain, key });
        }
        out
    }
}

const FILLER: &str = "Thank you for your order. We are getting it ready and will let you \
know as soon as it ships. You can follow every step from your account page. ";

/// One message of about `size` bytes of JSON (`text` padded to fit).
pub fn message(tenant: &BenchTenant, n: usize, size: usize) -> serde_json::Value {
    let mut m = json!({
        "from": format!("Shop <orders@{}>", tenant.domain),
        "to": format!("customer{n}@example.com"),
        "subject": format!("Your order #{n} is confirmed"),
        "text": "",
        "tags": {"kind": "order", "bench": "load"},
    });
    let overhead = m.to_string().len();
    let want = size.saturating_sub(overhead);
    m["text"] = FILLER.repeat(want / FILLER.len() + 1)[..want].into();
    m
}

/// Single-send requests, `per_tenant` per tenant, each about `size` bytes of JSON.
pub fn single_requests(tenants: &[BenchTenant], per_tenant: usize, size: usize) -> Vec<Vec<u8>> {
    spread_requests(tenants, per_tenant, size, 0)
}

/// As [`single_requests`], with the recipients spread round-robin over
/// `domains` domains `d00.bench.test`, `d01.bench.test`, … (0 = all at
/// example.com), as the direct-delivery side by side publishes them.
pub fn spread_requests(
    tenants: &[BenchTenant],
    per_tenant: usize,
    size: usize,
    domains: usize,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for n in 0..per_tenant {
        for t in tenants {
            let mut m = message(t, n, size);
            if domains > 0 {
                let i = out.len();
                m["to"] = format!("customer{i}@d{:02}.bench.test", i % domains).into();
            }
            out.push(super::http::post(
                "/v1/emails",
                &t.key,
                m.to_string().as_bytes(),
            ));
        }
    }
    out
}

/// Batch requests of `batch` messages each (one tenant per request).
pub fn batch_requests(
    tenants: &[BenchTenant],
    per_tenant: usize,
    batch: usize,
    size: usize,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for n in 0..per_tenant {
        for t in tenants {
            let emails: Vec<_> = (0..batch)
                .map(|i| message(t, n * batch + i, size))
                .collect();
            let body = json!({ "emails": emails }).to_string();
            out.push(super::http::post(
                "/v1/emails/batch",
                &t.key,
                body.as_bytes(),
            ));
        }
    }
    out
}
