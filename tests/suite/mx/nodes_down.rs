//! Issue 27: a site one `postline serve` node found down (every MX address
//! refused the connection) is down for the other nodes too
//! (`delivery::mx::downs`, through the `mx_site_downs` table): they defer
//! its mail without dialling it until the marking ends, where before each
//! node found it out for itself, one connection attempt per node.

use super::end_to_end::{recipient_status, wait_email};
use super::*;

use diesel::prelude::*;

use crate::drills::Server;
use common::Api;

async fn send(api: &Api, key: &str, to: &str) -> String {
    let body = json!({"from": "app@sender.test", "to": to, "subject": "s", "text": "t"});
    let r = api.post("/v1/emails", key, body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

fn sites_down(db: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(db).unwrap();
    diesel::sql_query("SELECT count(*) AS n FROM mx_site_downs WHERE down_until > now()")
        .get_result::<N>(&mut conn)
        .unwrap()
        .n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_one_node_found_down_is_down_for_every_node() {
    let mut w = World::new().await;
    let up = w.mx_host("mx.up.test", 2, SinkConfig::default()).await;
    w.dns.add_mx("up.test", 10, "mx.up.test");
    // Nothing listens at 127.0.0.61 yet: the site is down.
    w.dns.add_ip("mx.down.test", ip(61));
    w.dns.add_mx("down.test", 10, "mx.down.test");
    let db = common::fresh_database();
    let (port, ns) = (w.port.to_string(), w.dns.nameserver());
    let extra = [
        ("POSTLINE__DELIVERY__MODE", "mx"),
        ("POSTLINE__DNS__NAMESERVERS", ns.as_str()),
        ("POSTLINE__DELIVERY__MX__PORT", port.as_str()),
        ("POSTLINE__DELIVERY__MX__EHLO_NAME", "mta.postline.test"),
        ("POSTLINE__DELIVERY__MX__ALLOW_PRIVATE_DESTINATIONS", "true"),
        // Down for longer than the test.
        ("POSTLINE__DELIVERY__MX__DOWN_SECS", "600"),
        ("POSTLINE__CLUSTER__LEASE_SECS", "3"),
        ("POSTLINE__CLUSTER__NODE_TIMEOUT_SECS", "3"),
    ];
    let mut servers: Vec<Server> = (0..3).map(|_| Server::new(&db, 1, &extra)).collect();
    let admin = servers[0].admin_key();
    let client = reqwest::Client::new();
    // Node A alone finds the site down.
    servers[0].start();
    servers[0].wait_up(&client, Duration::from_secs(60)).await;
    let api = Api::remote(&servers[0].base, &admin);
    let t: Value = api.create_tenant(json!({"name": "Down"})).await;
    let key = api
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let first = send(&api, &key, "first@down.test").await;
    let email = wait_email(&api, &key, &first, |e| e["status"] == "deferred").await;
    assert_eq!(recipient_status(&email, "first@down.test"), "deferred");
    let started = Instant::now();
    while sites_down(&db) == 0 {
        assert!(started.elapsed() < WAIT, "node A's marking not shared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    servers[0].terminate(Duration::from_secs(20));
    // Now the site would answer; nodes B and C, which never dialled it,
    // start after A is gone and learn the marking from the database only.
    w.sinks
        .push(SmtpSink::start_at(ip(61), w.port, SinkConfig::default()).await);
    let down = w.sinks.len() - 1;
    for s in &mut servers[1..] {
        s.start();
    }
    for s in &mut servers[1..] {
        s.wait_up(&client, Duration::from_secs(60)).await;
    }
    // Their first poll (once a second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let nodes: Vec<Api> = servers[1..]
        .iter()
        .map(|s| Api::remote(&s.base, &admin))
        .collect();
    let mut ids = Vec::new();
    for i in 0..6 {
        let to = format!("r{i}@down.test");
        ids.push((send(&nodes[i % 2], &key, &to).await, to));
    }
    let control = [
        send(&nodes[0], &key, "a@up.test").await,
        send(&nodes[1], &key, "b@up.test").await,
    ];
    for id in &control {
        let e = wait_email(&nodes[0], &key, id, |e| e["status"] == "delivered").await;
        assert_eq!(e["status"], "delivered", "{e}");
    }
    for (id, to) in &ids {
        let e = wait_email(&nodes[1], &key, id, |e| {
            e["status"] == "deferred" && e["attempts"].as_i64().unwrap_or(0) >= 1
        })
        .await;
        assert_eq!(recipient_status(&e, to), "deferred", "{e}");
        let response = e["recipients"][0]["smtp_response"].to_string();
        assert!(
            response.contains("unreachable (will retry)"),
            "deferred as down, without dialling: {e}"
        );
    }
    assert_eq!(w.sinks[up].count(), 2, "the nodes deliver elsewhere");
    assert_eq!(
        w.sinks[down].count(),
        0,
        "a node dialled the site another node had marked down"
    );
    eprintln!(
        "site marked down by node A: {} messages via nodes B and C deferred without a connection",
        ids.len()
    );
    for s in &mut servers[1..] {
        s.terminate(Duration::from_secs(20));
    }
}
