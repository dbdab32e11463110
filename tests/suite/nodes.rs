//! Many nodes, one set of limits (issue 27), with real `postline api`
//! processes on one database: the node registry (`GET /v1/admin/nodes`), a
//! killed node's leases reclaimed within `cluster.node_timeout_secs`, and a
//! tenant's `requests_per_minute` held cluster-wide.

use crate::common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::drills::Server;
use common::Api;
use serde_json::{json, Value};
use uuid::Uuid;

const UP: Duration = Duration::from_secs(60);

/// Three `api` nodes on `db`; `extra` settings for each.
pub(crate) async fn api_nodes(db: &str, extra: &[(&str, &str)]) -> (Vec<Server>, String) {
    let mut servers: Vec<Server> = (0..3)
        .map(|_| {
            let mut s = Server::new(db, 1, extra);
            s.role = "api";
            s
        })
        .collect();
    let admin = servers[0].admin_key();
    let client = reqwest::Client::new();
    for s in &mut servers {
        s.start();
    }
    for s in &mut servers {
        s.wait_up(&client, UP).await;
    }
    (servers, admin)
}

async fn node_list(api: &Api, admin: &str) -> Vec<Value> {
    let r = api.get("/v1/admin/nodes", admin).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["data"].as_array().expect("data").clone()
}

fn with_status<'a>(nodes: &'a [Value], status: &str) -> Vec<&'a Value> {
    nodes.iter().filter(|n| n["status"] == status).collect()
}

/// The distinct holders of a tenant's leases (a holder may lease several
/// of its budgets).
fn holders(db: &str, tenant: &str) -> Vec<Uuid> {
    let mut held = crate::quota_nodes::holders(db, tenant);
    held.sort();
    held.dedup();
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_and_a_killed_nodes_leases_return_within_the_timeout() {
    let db = common::fresh_database();
    // Leases far longer than the test: only the registry can give a dead
    // node's share back in time.
    let (mut servers, admin) = api_nodes(
        &db,
        &[
            ("POSTLINE__CLUSTER__NODE_TIMEOUT_SECS", "3"),
            ("POSTLINE__CLUSTER__LEASE_SECS", "120"),
        ],
    )
    .await;
    let api = Api::remote(&servers[1].base, &admin);
    let up = Instant::now();
    let nodes = loop {
        let nodes = node_list(&api, &admin).await;
        if with_status(&nodes, "up").len() == 3 || up.elapsed() > Duration::from_secs(10) {
            break nodes;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(with_status(&nodes, "up").len(), 3, "{nodes:?}");
    for n in &nodes {
        assert_eq!(n["roles"], json!(["api"]), "{n}");
        assert_eq!(n["version"], env!("CARGO_PKG_VERSION"));
        assert!(!n["hostname"].as_str().unwrap().is_empty());
        assert!(n["heartbeat_at"].as_str().is_some() && n["started_at"].as_str().is_some());
    }
    let t = api
        .create_tenant(json!({"name": "N", "rate_limit": {"requests_per_minute": 6000}}))
        .await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = api.tenant_key(&id, &["send", "emails:read"]).await;
    // Node A leases a share of the tenant's request rate (every request of
    // the tenant's key counts, this refused one too: a tenant key may not
    // list nodes).
    let a = Api::remote(&servers[0].base, &admin);
    assert_eq!(a.get("/v1/admin/nodes", &key).await.status, 403);
    for _ in 0..5 {
        assert_eq!(a.get("/v1/emails", &key).await.status, 200);
    }
    let mut held = holders(&db, &id);
    held.dedup();
    assert_eq!(
        held.len(),
        1,
        "node A holds the leases (one per minute used)"
    );
    let dead = held[0];
    assert!(
        nodes.iter().any(|n| n["id"] == dead.to_string()),
        "node id = holder"
    );
    servers[0].kill9();
    let killed = Instant::now();
    while holders(&db, &id).contains(&dead) {
        assert!(
            killed.elapsed() < Duration::from_secs(3 + 2),
            "the dead node's lease is still held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reclaimed = killed.elapsed();
    let nodes = node_list(&api, &admin).await;
    let gone = with_status(&nodes, "gone");
    assert_eq!(gone.len(), 1, "{nodes:?}");
    assert_eq!(gone[0]["id"], dead.to_string());
    assert_eq!(with_status(&nodes, "up").len(), 2);
    // A clean stop is `gone` at once.
    servers[2].terminate(Duration::from_secs(20));
    let nodes = node_list(&api, &admin).await;
    assert_eq!(with_status(&nodes, "gone").len(), 2, "{nodes:?}");
    eprintln!("lease of a killed node reclaimed after {reclaimed:?} (timeout 3 s)");
}

/// Seconds into the current minute.
pub(crate) fn second_of_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_requests_per_minute_holds_across_three_nodes() {
    let db = common::fresh_database();
    let (servers, admin) = api_nodes(&db, &[]).await;
    let api = Api::remote(&servers[0].base, &admin);
    let t = api
        .create_tenant(json!({"name": "R", "rate_limit": {"requests_per_minute": 120}}))
        .await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = api.tenant_key(&id, &["send", "emails:read"]).await;
    // All of the load inside one minute (the budget's window).
    if second_of_minute() > 40 {
        tokio::time::sleep(Duration::from_secs(61 - second_of_minute())).await;
    }
    let started = second_of_minute();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let client = reqwest::Client::new();
    let (accepted, refused) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    let mut tasks = Vec::new();
    for c in 0..12usize {
        let (client, bases, key) = (client.clone(), bases.clone(), key.clone());
        let (acc, refd) = (accepted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            // 30 each: 360 requests spread evenly over the three nodes.
            for j in 0..30usize {
                let r = client
                    .get(format!("{}/v1/emails?limit=1", bases[(c + j) % 3]))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .expect("request");
                match r.status().as_u16() {
                    200 => acc.fetch_add(1, Ordering::SeqCst),
                    429 => {
                        let retry: u64 = r.headers()["retry-after"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert!((1..=60).contains(&retry), "{retry}");
                        refd.fetch_add(1, Ordering::SeqCst)
                    }
                    other => panic!("{other}: {}", r.text().await.unwrap_or_default()),
                };
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let ended = second_of_minute();
    assert!(
        ended >= started,
        "the load crossed a minute: {started}..{ended}"
    );
    let (accepted, refused) = (
        accepted.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
    );
    assert_eq!(accepted + refused, 360);
    eprintln!("rpm 120 over 3 nodes: {accepted} accepted, {refused} refused in one minute");
    assert!(
        (108..=120).contains(&accepted),
        "{accepted} accepted: not within 10 % of 120"
    );
    // The shares were leased by more than one node.
    let mut granting = 0;
    for s in &servers {
        let text = client
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let granted = text
            .lines()
            .find_map(|l| l.strip_prefix("postline_budget_decisions_total{decision=\"granted\"} "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
        granting += i64::from(granted > 0);
    }
    assert!(granting >= 2, "{granting} nodes were granted shares");
    let _ = id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_emails_per_second_holds_across_three_serve_nodes() {
    let sink = common::smtp_sink::SmtpSink::start().await;
    let db = common::fresh_database();
    let mut servers: Vec<Server> = (0..3).map(|_| Server::new(&db, sink.port(), &[])).collect();
    let admin = servers[0].admin_key();
    let client = reqwest::Client::new();
    for s in &mut servers {
        s.start();
    }
    for s in &mut servers {
        s.wait_up(&client, UP).await;
    }
    let api = Api::remote(&servers[0].base, &admin);
    let t = api
        .create_tenant(json!({"name": "P", "rate_limit": {"emails_per_second": 10}}))
        .await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = api.tenant_key(&id, &["send"]).await;
    // 90 messages, each node gets a third (and delivers what it claims).
    const N: usize = 90;
    for i in 0..N {
        let r = client
            .post(format!("{}/v1/emails", servers[i % 3].base))
            .bearer_auth(&key)
            .json(
                &json!({"from": "a@a.example", "to": format!("r{i}@example.com"),
                "subject": "s", "text": "t"}),
            )
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 202);
    }
    let got = sink.wait_for(N, Duration::from_secs(90)).await;
    let mut at: Vec<Instant> = got.iter().map(|m| m.received_at).collect();
    at.sort();
    let span = at[N - 1].duration_since(at[0]).as_secs_f64();
    // The first second's budget may go at once; the other 80 are paced.
    let rate = (N - 10) as f64 / span;
    eprintln!("emails_per_second 10 over 3 nodes: {N} delivered in {span:.1} s ({rate:.1}/s after the first second)");
    assert!(rate <= 11.0, "{rate:.1}/s: over 10 % above the limit");
    assert!(rate >= 6.0, "{rate:.1}/s: far below the limit");
    for s in &mut servers {
        s.terminate(Duration::from_secs(20));
    }
}

#[tokio::test]
async fn the_consoles_queue_page_lists_the_nodes() {
    use crate::console::{get, sign_in, user};
    let app = common::TestApp::spawn().await;
    let me = app.state.registry.id();
    // The first heartbeat runs when the app starts.
    let started = Instant::now();
    loop {
        let r = app.get("/v1/admin/nodes", &app.admin_key).await;
        if r.text.contains(&me.to_string()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{}", r.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    user(
        &app,
        "ops@example.com",
        postline::console::users::Role::Admin,
        None,
    )
    .await;
    let (cookie, _) = sign_in(&app, "ops@example.com", &[]).await;
    let (status, page, _) = get(&app, &cookie, "/console/queue").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"nodes\""), "{page}");
    assert!(page.contains(&me.to_string()), "{page}");
    assert!(page.contains(">up</span>"), "{page}");
}
