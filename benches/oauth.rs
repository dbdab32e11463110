//! OAuth benchmark (issue 15): the steady-state bearer token check next to
//! the cached API-key check, in one run on one runtime (`authenticate` on a
//! cache hit, as the `Principal` extractor calls it), the first check of a
//! new token (signature + claims, client row cached), and `POST /oauth/token`
//! throughput over HTTP next to `/healthz` through the same load client.
//!
//! Run: `deploy/dev bench oauth`.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::app::{settings, BenchApp};
use common::http::{drive, get, Load};
use common::{check, print_figure, BenchEnv, Mode, Samples, Unit};
use serde_json::json;

/// Cache-hit calls per round; each round starts with a fresh token (or a
/// fresh key cache fill), so no round runs into the 5 s TTL.
const ROUND: usize = 50_000;

fn main() {
    let Some(env) = BenchEnv::from_env("oauth") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(&env));
}

async fn run(env: &BenchEnv) {
    env.print_header();
    let db = env.fresh_database();
    let mut s = settings(&db.url, None);
    s.oauth.token_requests_per_minute = 0; // throughput, not the limiter
    let app = BenchApp::start(s).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.addr);
    let created: serde_json::Value = http
        .post(format!("{base}/v1/oauth-clients"))
        .bearer_auth(&app.admin_key)
        .json(&json!({"name": "bench", "permissions": ["tenants:read"]}))
        .send()
        .await
        .expect("create client")
        .json()
        .await
        .expect("client json");
    let cid = created["client_id"]
        .as_str()
        .expect("client_id")
        .to_string();
    let secret = created["client_secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let new_token = || {
        let (http, url, cid, secret) = (
            http.clone(),
            format!("{base}/oauth/token"),
            cid.clone(),
            secret.clone(),
        );
        async move {
            let r: serde_json::Value = http
                .post(url)
                .basic_auth(cid, Some(secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("grant_type=client_credentials")
                .send()
                .await
                .expect("token request")
                .json()
                .await
                .expect("token json");
            Arc::<str>::from(r["access_token"].as_str().expect("access_token"))
        }
    };
    let sample_token = new_token().await;
    print_figure(
        "setup",
        format!(
            "db {}, token {} bytes, ttl {}s",
            db.name,
            sample_token.len(),
            app.state.settings.auth.cache_ttl_secs
        ),
    );

    // (a) Cache hits, key and token rounds interleaved; one warm-up round each.
    let rounds = env.iters(6, 1);
    let per_round = env.iters(ROUND, 1_000);
    let (auth, oauth) = (app.state.auth.clone(), app.state.oauth.clone());
    let key: Arc<str> = app.admin_key.as_str().into();
    let (mut keys, mut tokens, mut firsts) =
        (Samples::default(), Samples::default(), Samples::default());
    for round in 0..=rounds {
        auth.invalidate_all();
        auth.authenticate(&key).await.expect("key fill");
        let k = on_task(per_round, key.clone(), {
            let auth = auth.clone();
            move |t| {
                let auth = auth.clone();
                async move { auth.authenticate(&t).await.is_ok() }
            }
        })
        .await;
        let tok = new_token().await;
        let started = Instant::now();
        oauth
            .authenticate(&tok)
            .await
            .expect("first check of a new token");
        let first = started.elapsed();
        let o = on_task(per_round, tok, {
            let oauth = oauth.clone();
            move |t| {
                let oauth = oauth.clone();
                async move { oauth.authenticate(&t).await.is_ok() }
            }
        })
        .await;
        if round > 0 {
            keys.extend(k);
            tokens.extend(o);
            firsts.push(first);
        }
    }
    let (k, o) = (keys.summary(), tokens.summary());
    k.print("api key check, cache hit", Unit::Micros);
    o.print("oauth token check, cache hit", Unit::Micros);
    firsts
        .summary()
        .print("oauth token, first check", Unit::Micros);
    print_figure(
        "ratio token / key (cache hits)",
        format!(
            "{:.2}x (means), {:.2}x (p50s)",
            o.mean.as_secs_f64() / k.mean.as_secs_f64(),
            o.p50.as_secs_f64() / k.p50.as_secs_f64()
        ),
    );

    // (b) POST /oauth/token over HTTP next to /healthz (same client, same run).
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{cid}:{secret}"));
    let body = "grant_type=client_credentials";
    let token_req = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let total = env.param("OAUTH_REQUESTS", 20_000, 50);
    let load = |req: Vec<u8>| Load {
        addr: app.addr,
        requests: Arc::new(vec![req]),
        total,
        concurrency: 8,
        rate: None,
        expect: 200,
        keep_bodies: false,
    };
    let health = tokio::task::block_in_place(|| drive(&load(get("/healthz"))));
    check(env, "healthz", &health);
    let issued = tokio::task::block_in_place(|| drive(&load(token_req)));
    check(env, "oauth token", &issued);
    print_figure(
        "GET /healthz (baseline)",
        format!(
            "{:.0} req/s, p50 {:.3} ms",
            health.rate(),
            ms(health.latencies.summary().p50)
        ),
    );
    print_figure(
        "POST /oauth/token",
        format!(
            "{:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
            issued.rate(),
            ms(issued.latencies.summary().p50),
            ms(issued.latencies.summary().p99)
        ),
    );
    print_figure(
        "ratio token endpoint / healthz",
        format!("{:.2}x", issued.rate() / health.rate()),
    );
    let verdict = if env.mode == Mode::Smoke {
        "not judged (smoke run, unoptimised build)".to_string()
    } else if o.mean <= k.mean.mul_f64(1.10) {
        format!(
            "met: token {:.3} us vs key {:.3} us (means)",
            us(o.mean),
            us(k.mean)
        )
    } else {
        format!(
            "NOT met: token {:.3} us vs key {:.3} us (means)",
            us(o.mean),
            us(k.mean)
        )
    };
    print_figure("target: token check <= key check", verdict);
}

/// Times `n` calls of `f(token)` on one task.
async fn on_task<F, Fut>(n: usize, token: Arc<str>, f: F) -> Samples
where
    F: Fn(Arc<str>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        let mut s = Samples::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let ok = f(black_box(token.clone())).await;
            s.push(t.elapsed());
            assert!(ok, "cache hit");
        }
        s
    })
    .await
    .expect("hit task")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
