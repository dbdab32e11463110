//! Issue 27: the last per-node limits held across three `postline`
//! processes on one database: OAuth token requests per client
//! (`oauth.token_requests_per_minute`, `api` nodes) and inbound messages per
//! tenant (`inbound.messages_per_tenant_per_minute`, `serve` nodes with their
//! own SMTP listeners), each a window budget per subject and minute
//! (`cluster::rate`). Spread round robin over the nodes, a client gets the
//! limit, not three times it. (A site's down marking: `mx::nodes_down`.)

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::dns_server::DnsServer;
use crate::common::webhook_receiver::Receiver;
use crate::common::{self, Api};
use crate::drills::{free_port, Server};
use crate::nodes::{api_nodes, second_of_minute};
use crate::nodes_auth::early_in_a_minute;
use serde_json::json;

const UP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_clients_token_requests_hold_across_three_nodes() {
    const LIMIT: i64 = 60;
    let db = common::fresh_database();
    let (servers, admin) =
        api_nodes(&db, &[("POSTLINE__OAUTH__TOKEN_REQUESTS_PER_MINUTE", "60")]).await;
    let api = Api::remote(&servers[0].base, &admin);
    let r = api
        .post(
            "/v1/oauth-clients",
            &admin,
            json!({"name": "spread", "permissions": ["tenants:read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["client_id"].as_str().unwrap().to_string();
    let secret = r.json["client_secret"].as_str().unwrap().to_string();
    early_in_a_minute().await;
    let started = second_of_minute();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let client = reqwest::Client::new();
    let (issued, slowed) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    let mut tasks = Vec::new();
    // 3 × LIMIT requests, round robin: each node alone would issue LIMIT.
    for c in 0..9usize {
        let (client, bases, id, secret) =
            (client.clone(), bases.clone(), id.clone(), secret.clone());
        let (issued, slowed) = (issued.clone(), slowed.clone());
        tasks.push(tokio::spawn(async move {
            for j in 0..20usize {
                let r = client
                    .post(format!("{}/oauth/token", bases[(c + j) % 3]))
                    .basic_auth(&id, Some(&secret))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("grant_type=client_credentials")
                    .send()
                    .await
                    .expect("token request");
                let status = r.status().as_u16();
                let retry = r.headers().get("retry-after").cloned();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                match status {
                    200 => issued.fetch_add(1, Ordering::SeqCst),
                    429 => {
                        assert_eq!(body["error"], "slow_down", "{body}");
                        let retry: u64 = retry.unwrap().to_str().unwrap().parse().unwrap();
                        assert!((1..=60).contains(&retry), "{retry}");
                        slowed.fetch_add(1, Ordering::SeqCst)
                    }
                    other => panic!("{other}: {body}"),
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
    let (issued, slowed) = (issued.load(Ordering::SeqCst), slowed.load(Ordering::SeqCst));
    eprintln!("token requests limited to {LIMIT}/min over 3 nodes: {issued} issued, {slowed} slowed down of 180");
    assert_eq!(issued + slowed, 3 * LIMIT);
    assert!(
        (LIMIT * 9 / 10..=LIMIT).contains(&issued),
        "{issued} tokens issued: not within 10 % of {LIMIT}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_inbound_messages_per_minute_hold_across_three_nodes() {
    const LIMIT: i64 = 30;
    let dns = DnsServer::start().await;
    let rx = Receiver::start().await;
    let db = common::fresh_database();
    let ns = dns.nameserver();
    let listeners: Vec<std::net::SocketAddr> = (0..3)
        .map(|_| std::net::SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect();
    let mut servers: Vec<Server> = listeners
        .iter()
        .map(|addr| {
            let bind = addr.to_string();
            Server::new(
                &db,
                1,
                &[
                    ("POSTLINE__DNS__NAMESERVERS", ns.as_str()),
                    ("POSTLINE__BOUNCES__DOMAIN", "bounces.postline.test"),
                    ("POSTLINE__INBOUND__MX_HOST", "mx.postline.test"),
                    ("POSTLINE__INBOUND__BIND", bind.as_str()),
                    ("POSTLINE__INBOUND__MESSAGES_PER_TENANT_PER_MINUTE", "30"),
                ],
            )
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
    let api = Api::remote(&servers[0].base, &admin);
    let (key, _) = crate::inbound::tenant(&api, &dns, &rx, "acme.test").await;
    let r = api
        .post(
            "/v1/inbound/routes",
            &key,
            json!({"match": "*@acme.test", "action": "hold"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    early_in_a_minute().await;
    let started = second_of_minute();
    let (accepted, refused) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    let mut tasks = Vec::new();
    // 3 × LIMIT messages, round robin: each node alone would take LIMIT.
    for c in 0..6usize {
        let (accepted, refused, listeners) = (accepted.clone(), refused.clone(), listeners.clone());
        tasks.push(tokio::spawn(async move {
            for j in 0..15usize {
                let to = format!("m{c}-{j}@acme.test");
                let msg = crate::inbound::message("a@sender.test", &to, "s", "t", "", &[]);
                let out =
                    crate::inbound::smtplib(listeners[(c + j) % 3], "a@sender.test", &[&to], &msg)
                        .await;
                let code = if out["data"].is_null() {
                    out["rcpt"][0][0].as_i64()
                } else {
                    out["data"][0].as_i64()
                };
                match code {
                    Some(250) => accepted.fetch_add(1, Ordering::SeqCst),
                    Some(451) => {
                        assert!(out.to_string().contains("4.7.1"), "{out}");
                        refused.fetch_add(1, Ordering::SeqCst)
                    }
                    _ => panic!("unexpected reply: {out}"),
                };
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    // Every node has seen the minute spent: RCPT is refused in memory now,
    // before any DATA.
    for (i, addr) in listeners.iter().enumerate() {
        let to = format!("after{i}@acme.test");
        let msg = crate::inbound::message("a@sender.test", &to, "s", "t", "", &[]);
        let out = crate::inbound::smtplib(*addr, "a@sender.test", &[&to], &msg).await;
        assert_eq!(out["rcpt"][0][0], 451, "node {i}: {out}");
        assert!(out["data"].is_null(), "node {i}: {out}");
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
    let stored = stored(&db);
    eprintln!(
        "inbound limited to {LIMIT}/min over 3 nodes: {accepted} accepted, {refused} refused (451 4.7.1) of 90; {stored} stored"
    );
    assert_eq!(accepted + refused, 3 * LIMIT);
    assert_eq!(stored, accepted, "every accepted message is stored");
    assert!(
        (LIMIT * 9 / 10..=LIMIT).contains(&accepted),
        "{accepted} accepted: not within 10 % of {LIMIT}"
    );
    for s in &mut servers {
        s.terminate(Duration::from_secs(20));
    }
}

fn stored(db: &str) -> i64 {
    use diesel::prelude::*;
    let mut conn = PgConnection::establish(db).unwrap();
    postline::db::schema::inbound_messages::table
        .count()
        .get_result(&mut conn)
        .unwrap()
}
