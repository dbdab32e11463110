//! Test harness: a fresh database per test, cloned from a template migrated
//! once per test binary, on the throwaway cluster that `deploy/dev test`
//! starts (`POSTLINE_TEST_DATABASE_URL` names its maintenance database); the
//! real application on port 0; a plain HTTP client.
#![allow(dead_code)]

pub mod dns_server;
pub mod smtp_sink;
pub mod test_ca;
pub mod webhook_receiver;

use std::path::Path;
use std::sync::OnceLock;

use diesel::prelude::*;
use diesel::PgConnection;
use postline::config::{Secret, Settings};
use postline::db::PgPool;
use postline::startup::Application;
use postline::state::AppState;
use serde_json::Value;

static TEMPLATE: OnceLock<String> = OnceLock::new();

fn admin_url() -> String {
    std::env::var("POSTLINE_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("POSTLINE_TEST_DATABASE_URL is not set: run the suite with `deploy/dev test`")
    })
}

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database url has a path");
    format!("{base}/{db}")
}

/// Creates (once per binary) a migrated template database.
fn template() -> &'static str {
    TEMPLATE.get_or_init(|| {
        let name = format!("tpl_{}", std::process::id());
        let admin = admin_url();
        let mut conn = PgConnection::establish(&admin).expect("connect to the test cluster");
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut conn)
            .unwrap();
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .unwrap();
        let mut tpl = PgConnection::establish(&with_db(&admin, &name)).unwrap();
        postline::db::migrate(&mut tpl).expect("migrations apply");
        drop(tpl);
        name
    })
}

/// A fresh, migrated database; returns its URL.
pub fn fresh_database() -> String {
    let tpl = template();
    let admin = admin_url();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::establish(&admin).unwrap();
    diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {tpl}"))
        .execute(&mut conn)
        .unwrap();
    with_db(&admin, &name)
}

pub fn test_settings(db_url: &str) -> Settings {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut s = Settings::load_layers(&dir, Some("test"), false).expect("test settings");
    s.database.url = Secret::new(db_url);
    s.database.pool_size = 8;
    s.server.bind = "127.0.0.1:0".into();
    s.server.workers = 2;
    // Templates render in child processes of the real binary.
    s.templates.sandbox_program = env!("CARGO_BIN_EXE_postline").into();
    s
}

/// Delivery through the default relay on 127.0.0.1:`port`, retrying fast.
pub fn smtp_settings(s: &mut Settings, port: u16) {
    s.delivery.mode = postline::config::DeliveryMode::Smtp;
    s.delivery.smtp.host = "127.0.0.1".into();
    s.delivery.smtp.port = port;
    s.delivery.smtp.tls = postline::config::TlsMode::None;
    s.delivery.retry_initial_ms = 200;
    s.delivery.retry_max_ms = 1000;
    s.delivery.connect_timeout_secs = 2;
    s.delivery.command_timeout_secs = 5;
    s.worker.poll_interval_ms = 100;
}

/// An in-process app: the HTTP helpers of [`Api`] (by `Deref`) plus its
/// state, database and optional worker.
pub struct TestApp {
    pub api: Api,
    pub worker: Option<postline::worker::WorkerHandle>,
    /// The domain recheck task, started with the worker (as `serve` does).
    pub recheck: Option<tokio::task::JoinHandle<()>>,
    pub port: u16,
    pub db_url: String,
    pub state: AppState,
    /// Made by `spawn_with`: the database is dropped with this app (tests run
    /// one binary of ~75 databases, ~8 MB each; CI disks can be small).
    /// Other nodes on the same database (`spawn_on`) leave it be.
    owns_db: bool,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(r) = self.recheck.take() {
            r.abort();
        }
        if self.owns_db && !std::thread::panicking() {
            drop_database(&self.db_url);
        }
    }
}

/// Drops a test database, closing what still uses it (the app's pool).
/// Best effort: a leftover database only costs disk.
pub fn drop_database(db_url: &str) {
    let Some((_, name)) = db_url.rsplit_once('/') else {
        return;
    };
    if let Ok(mut conn) = PgConnection::establish(&admin_url()) {
        let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn);
    }
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The HTTP side of a running Postline, in this process or not.
pub struct Api {
    pub address: String,
    pub client: reqwest::Client,
    pub admin_key: String,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

impl TestApp {
    /// The API alone (no delivery worker) on a fresh database.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let db_url = fresh_database();
        let mut settings = test_settings(&db_url);
        tweak(&mut settings);
        let mut app = Self::spawn_on(settings).await;
        app.owns_db = true;
        app
    }

    /// API and delivery worker (like `postline serve`), relaying to `smtp_port`.
    pub async fn spawn_serving(smtp_port: u16, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let mut app = Self::spawn_with(|s| {
            smtp_settings(s, smtp_port);
            tweak(s);
        })
        .await;
        app.start_worker();
        app
    }

    /// Starts a delivery worker with this app's settings.
    pub fn start_worker(&mut self) {
        let s = self.state.settings.clone();
        // Woken by this app's commits, as in `postline serve`.
        self.worker = Some(postline::worker::spawn_with(
            s,
            self.state.pool.clone(),
            self.state.vault.clone(),
            postline::worker::Options {
                wake: Some(self.state.ingest.committed()),
                ..Default::default()
            },
        ));
        self.recheck = Some(postline::domains::service::spawn_recheck(
            self.state.domains.clone(),
        ));
    }

    /// Another instance of the app on the same database (multi-node tests).
    pub async fn spawn_on(settings: Settings) -> TestApp {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(&settings.log.level))
            .with_test_writer()
            .try_init();
        let db_url = settings.database.url.expose().to_string();
        let app = Application::build(settings).expect("app builds");
        let port = app.port();
        let state = app.state().clone();
        tokio::spawn(app.run_until_stopped());
        let key =
            postline::keys::service::bootstrap_admin_key(&state.pool, "test admin".into(), vec![])
                .await
                .expect("admin key");
        TestApp {
            api: Api::remote(
                &format!("http://127.0.0.1:{port}"),
                key.key.expect("key shown on create").expose(),
            ),
            worker: None,
            recheck: None,
            port,
            db_url,
            state,
            owns_db: false,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    pub async fn read(resp: reqwest::Response) -> Resp {
        Api::read(resp).await
    }

    /// Runs raw SQL against this test's database (assertions on stored data).
    pub fn sql_conn(&self) -> PgConnection {
        PgConnection::establish(&self.db_url).unwrap()
    }
}

impl Api {
    /// A server at `address` (e.g. the real binary) with this admin key.
    pub fn remote(address: &str, admin_key: &str) -> Api {
        Api {
            address: address.to_string(),
            client: reqwest::Client::new(),
            admin_key: admin_key.to_string(),
        }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{}", self.address, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::read(req.send().await.expect("request sent")).await
    }

    pub async fn read(resp: reqwest::Response) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.request("GET", path, Some(key), None).await
    }
    pub async fn post(&self, path: &str, key: &str, body: Value) -> Resp {
        self.request("POST", path, Some(key), Some(body)).await
    }
    pub async fn put(&self, path: &str, key: &str, body: Value) -> Resp {
        self.request("PUT", path, Some(key), Some(body)).await
    }
    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Resp {
        self.request("PATCH", path, Some(key), Some(body)).await
    }
    pub async fn delete(&self, path: &str, key: &str) -> Resp {
        self.request("DELETE", path, Some(key), None).await
    }

    /// Creates a tenant; returns its JSON.
    pub async fn create_tenant(&self, body: Value) -> Value {
        let r = self.post("/v1/tenants", &self.admin_key, body).await;
        assert_eq!(r.status, 201, "create tenant: {}", r.text);
        r.json
    }

    /// Creates a tenant key with the given permissions; returns the full key.
    pub async fn tenant_key(&self, tenant_id: &str, permissions: &[&str]) -> String {
        let r = self
            .post(
                &format!("/v1/tenants/{tenant_id}/api-keys"),
                &self.admin_key,
                serde_json::json!({"name": "test", "permissions": permissions}),
            )
            .await;
        assert_eq!(r.status, 201, "create key: {}", r.text);
        r.json["key"].as_str().unwrap().to_string()
    }
}

/// The decoded leaf parts of a MIME message: `(content type, body)`. Enough
/// of MIME for assertions: multipart boundaries, base64, quoted-printable.
pub fn mime_parts(raw: &str) -> Vec<(String, String)> {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let header = |name: &str| -> Option<String> {
        // Unfold continuation lines, then find the header.
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let ctype = header("content-type").unwrap_or_else(|| "text/plain".into());
    if ctype.to_ascii_lowercase().starts_with("multipart/") {
        let boundary = ctype
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
            .map(|b| b.trim_matches('"').to_string())
            .unwrap_or_default();
        let delimiter = format!("--{boundary}");
        return body
            .split(&delimiter)
            .skip(1)
            .filter(|p| !p.starts_with("--"))
            .flat_map(|p| mime_parts(p.trim_start_matches("\r\n")))
            .collect();
    }
    let encoding = header("content-transfer-encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "base64" => {
            use base64::Engine;
            let compact: String = body.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        "quoted-printable" => {
            let joined = body.replace("=\r\n", "");
            let bytes = joined.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'=' && i + 2 < bytes.len() {
                    if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                }
                out.push(bytes[i]);
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        _ => body.to_string(),
    };
    let mime = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    vec![(mime, decoded)]
}

/// Claims like a worker would (fair claim, no byte limit) with `lease_secs`,
/// and does nothing more: a worker that died or hangs.
pub fn claim_as_worker(
    conn: &mut PgConnection,
    slots: usize,
    lease_secs: f64,
) -> postline::queue::claim::Claim {
    let none = std::collections::HashMap::new();
    let want = postline::queue::claim::Want {
        slots,
        bytes: i64::MAX,
        idle: true,
        tenant_cap: slots,
        tenant_bytes: i64::MAX,
        inflight: &none,
        skip: &[],
        lease_secs,
    };
    let mut cursor = uuid::Uuid::nil();
    postline::queue::claim::claim(conn, &want, &mut cursor).expect("claim")
}
