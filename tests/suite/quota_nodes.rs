//! The daily quota across three real `postline api` processes on one
//! database (issue 24): leased shares spent in memory, exact at the
//! boundary, and a killed node's unspent share back for the others.

use crate::common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::drills::Server;
use common::Api;
use diesel::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

const UP: Duration = Duration::from_secs(60);

/// Three `api` nodes on `db` with `lease`-second leases and `chunk`-message
/// grants.
async fn nodes(db: &str, chunk: &str, lease: &str) -> (Vec<Server>, String) {
    let mut servers: Vec<Server> = (0..3)
        .map(|_| {
            let mut s = Server::new(
                db,
                1,
                &[
                    ("POSTLINE__CLUSTER__LEASE_SECS", lease),
                    ("POSTLINE__LIMITS__QUOTA_CHUNK", chunk),
                ],
            );
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

async fn tenant(api: &Api, name: &str, per_day: i64) -> (String, String) {
    let t = api
        .create_tenant(json!({"name": name, "rate_limit": {"emails_per_day": per_day}}))
        .await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = api.tenant_key(&id, &["send", "emails:read"]).await;
    (id, key)
}

fn mail(i: usize) -> Value {
    json!({"from": "a@a.example", "to": format!("r{i}@example.com"), "subject": "s", "text": "t"})
}

/// Sends one request (a batch when `batch > 1`); the messages accepted, or
/// 0 after a 429 `daily_quota_exceeded` (anything else fails the test).
async fn send(client: &reqwest::Client, base: &str, key: &str, batch: usize, i: usize) -> i64 {
    let (path, body) = if batch > 1 {
        let emails: Vec<Value> = (0..batch).map(|b| mail(i * 100 + b)).collect();
        ("/v1/emails/batch", json!({"emails": emails}))
    } else {
        ("/v1/emails", mail(i))
    };
    let r = client
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    match status {
        202 => batch as i64,
        429 => {
            assert_eq!(v["code"], "daily_quota_exceeded", "{v}");
            0
        }
        other => panic!("{other}: {v}"),
    }
}

fn emails_of(db: &str, tenant: &str) -> i64 {
    use postline::db::schema::emails::dsl as e;
    let mut conn = PgConnection::establish(db).unwrap();
    e::emails
        .filter(e::tenant_id.eq(Uuid::parse_str(tenant).unwrap()))
        .count()
        .get_result(&mut conn)
        .unwrap()
}

/// `postline_budget_decisions_total{decision}` summed over the nodes.
async fn decisions(client: &reqwest::Client, servers: &[Server], decision: &str) -> i64 {
    let mut n = 0;
    for s in servers {
        let text = client
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let prefix = format!("postline_budget_decisions_total{{decision=\"{decision}\"}} ");
        n += text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_api_nodes_accept_exactly_the_daily_quota() {
    let db = common::fresh_database();
    let (servers, admin) = nodes(&db, "50", "2").await;
    let api = Api::remote(&servers[0].base, &admin);
    // 500: leased in shares of 50 until the boundary; 30: below one share,
    // decided exactly from the first message.
    let (big_id, big) = tenant(&api, "Big", 500).await;
    let (small_id, small) = tenant(&api, "Small", 30).await;
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let client = reqwest::Client::new();
    let accepted_big = Arc::new(AtomicI64::new(0));
    let accepted_small = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for c in 0..16usize {
        let (client, bases, key, acc) = (
            client.clone(),
            bases.clone(),
            big.clone(),
            accepted_big.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // Batches of 5 and single sends, then singles to the end.
            for j in 0..40usize {
                let batch = if j < 30 && j % 4 == 0 { 5 } else { 1 };
                let base = &bases[(c + j) % bases.len()];
                let n = send(&client, base, &key, batch, c * 1000 + j).await;
                acc.fetch_add(n, Ordering::SeqCst);
            }
        }));
    }
    for c in 0..6usize {
        let (client, bases, key, acc) = (
            client.clone(),
            bases.clone(),
            small.clone(),
            accepted_small.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for j in 0..15usize {
                let base = &bases[(c + j) % bases.len()];
                let n = send(&client, base, &key, 1, c * 1000 + j).await;
                acc.fetch_add(n, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    assert_eq!(
        accepted_big.load(Ordering::SeqCst),
        500,
        "never more, never less"
    );
    assert_eq!(accepted_small.load(Ordering::SeqCst), 30);
    assert_eq!(emails_of(&db, &big_id), 500);
    assert_eq!(emails_of(&db, &small_id), 30);
    let usage = api
        .get(&format!("/v1/tenants/{big_id}/usage"), &admin)
        .await;
    assert_eq!(usage.json["emails_sent"], 500, "{}", usage.text);
    // Shares were leased (on more than one node) and the budgets closed at
    // their boundary.
    let granted = decisions(&client, &servers, "granted").await;
    assert!(granted >= 2, "{granted} grants");
    assert!(decisions(&client, &servers, "closed").await >= 2);
}

#[derive(QueryableByName)]
struct LeaseRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    holder: Uuid,
}

/// Every lease holder of a tenant's budgets (a row per lease).
pub(crate) fn holders(db: &str, tenant: &str) -> Vec<Uuid> {
    let mut conn = PgConnection::establish(db).unwrap();
    diesel::sql_query("SELECT holder FROM budget_leases WHERE tenant_id = $1")
        .bind::<diesel::sql_types::Uuid, _>(Uuid::parse_str(tenant).unwrap())
        .load::<LeaseRow>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|r| r.holder)
        .collect()
}

fn closed(db: &str, tenant: &str) -> bool {
    #[derive(QueryableByName)]
    struct C {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        closed: bool,
    }
    let mut conn = PgConnection::establish(db).unwrap();
    diesel::sql_query(
        "SELECT coalesce(bool_or(closed_at_limit IS NOT NULL), false) AS closed FROM budgets WHERE tenant_id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(Uuid::parse_str(tenant).unwrap())
    .get_result::<C>(&mut conn)
    .unwrap()
    .closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_unspent_share_returns_to_the_others() {
    let db = common::fresh_database();
    let (mut servers, admin) = nodes(&db, "100", "2").await;
    let api = Api::remote(&servers[1].base, &admin);
    let (id, key) = tenant(&api, "Q", 1000).await;
    let client = reqwest::Client::new();
    let a = servers[0].base.clone();
    for i in 0..30 {
        assert_eq!(send(&client, &a, &key, 1, i).await, 1);
    }
    let held = holders(&db, &id);
    assert_eq!(held.len(), 1, "node A leased a share");
    let dead = held[0];
    servers[0].kill9();
    // Its 70 unspent are held until the lease lapses (2 s), then the next
    // grant on another node takes them back without closing the budget.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(send(&client, &servers[1].base, &key, 1, 100).await, 1);
    let now = holders(&db, &id);
    assert!(!now.contains(&dead), "the lapsed lease is gone: {now:?}");
    assert!(!closed(&db, &id));
    // The others can spend the whole rest of the quota: 1000 - 31.
    let accepted = Arc::new(AtomicI64::new(1));
    let mut tasks = Vec::new();
    for c in 0..8usize {
        let base = servers[1 + c % 2].base.clone();
        let (client, key, acc) = (client.clone(), key.clone(), accepted.clone());
        tasks.push(tokio::spawn(async move {
            let mut batch = 10;
            for j in 0..500usize {
                let n = send(&client, &base, &key, batch, c * 1000 + j).await;
                acc.fetch_add(n, Ordering::SeqCst);
                if n == 0 && batch == 1 {
                    // A single refused: the quota is used up.
                    break;
                }
                if n == 0 {
                    batch = 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 970);
    assert_eq!(emails_of(&db, &id), 1000);
}

/// Sends singles from `clients` tasks over `bases` until each sees a 429;
/// returns the messages accepted.
async fn until_refused(
    client: &reqwest::Client,
    bases: &[String],
    key: &str,
    clients: usize,
) -> i64 {
    let accepted = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let base = bases[c % bases.len()].clone();
        let (client, key, acc) = (client.clone(), key.to_string(), accepted.clone());
        tasks.push(tokio::spawn(async move {
            for j in 0..1000usize {
                let n = send(&client, &base, &key, 1, c * 10_000 + j).await;
                if n == 0 {
                    break;
                }
                acc.fetch_add(n, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    accepted.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_share_is_not_spent() {
    let db = common::fresh_database();
    // Leases far longer than the test: only the commit's check of its lease
    // can tell node B that its share was revoked.
    let (servers, admin) = nodes(&db, "100", "60").await;
    let api = Api::remote(&servers[0].base, &admin);
    let (id, key) = tenant(&api, "Q", 300).await;
    let client = reqwest::Client::new();
    let b = servers[1].base.clone();
    for i in 0..10 {
        assert_eq!(send(&client, &b, &key, 1, i).await, 1);
    }
    // B holds 90 unspent. A and C use the rest: the budget closes on the
    // way, revoking B's share, and they get exactly what is left.
    let others = [servers[0].base.clone(), servers[2].base.clone()];
    assert_eq!(until_refused(&client, &others, &key, 6).await, 290);
    assert!(closed(&db, &id));
    // B still has its share in memory; its commits find it revoked.
    for i in 0..5 {
        assert_eq!(send(&client, &b, &key, 1, 100 + i).await, 0);
    }
    assert_eq!(emails_of(&db, &id), 300);
}
