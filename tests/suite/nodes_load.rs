//! Issue 27 with real `postline serve` processes delivering to the SMTP
//! sink: one of three nodes killed under load loses nothing and its shares
//! return within the node timeout; a connection string naming several
//! Postgres hosts (`target_session_attrs=read-write`) serves the pool, the
//! CLI and the LISTEN connection.

use crate::common;

use std::time::{Duration, Instant};

use crate::drills::{self, Load, LoadShape, Server};
use common::smtp_sink::SmtpSink;
use common::Api;
use diesel::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

const UP: Duration = Duration::from_secs(60);

#[derive(QueryableByName)]
struct Holder {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    holder: Uuid,
}

fn holders(db: &str) -> Vec<Uuid> {
    let mut conn = PgConnection::establish(db).unwrap();
    diesel::sql_query("SELECT DISTINCT holder FROM budget_leases")
        .load::<Holder>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|r| r.holder)
        .collect()
}

async fn nodes_with(api: &Api, admin: &str, status: &str) -> Vec<Uuid> {
    let r = api.get("/v1/admin/nodes", admin).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["status"] == status)
        .map(|n| Uuid::parse_str(n["id"].as_str().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_serve_nodes_killed_under_load_loses_nothing() {
    let sink = SmtpSink::start().await;
    let db = common::fresh_database();
    let extra = [
        ("POSTLINE__CLUSTER__NODE_TIMEOUT_SECS", "3"),
        // Longer than the test: only the registry returns the dead node's shares.
        ("POSTLINE__CLUSTER__LEASE_SECS", "120"),
    ];
    let mut servers: Vec<Server> = (0..3)
        .map(|_| Server::new(&db, sink.port(), &extra))
        .collect();
    let admin = servers[0].admin_key();
    let client = reqwest::Client::new();
    for s in &mut servers {
        s.start();
    }
    for s in &mut servers {
        s.wait_up(&client, UP).await;
    }
    let api = Api::remote(&servers[1].base, &admin);
    // Limits high enough not to refuse: their shares are what is leased.
    let t: Value = api
        .create_tenant(json!({"name": "Load", "rate_limit":
            {"requests_per_minute": 1_000_000, "emails_per_second": 100_000}}))
        .await;
    let key = api
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let shape = LoadShape {
        clients: 3,
        ..LoadShape::default()
    };
    let mut loads: Vec<Load> = servers
        .iter()
        .map(|s| Load::start(&s.base, &key, shape.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up = nodes_with(&api, &admin, "up").await;
    assert_eq!(up.len(), 3);
    servers[0].kill9();
    let killed = Instant::now();
    let dead_load = loads.remove(0);
    // The survivors' shares cover every lease within the node timeout.
    let reclaimed = loop {
        let up = nodes_with(&api, &admin, "up").await;
        let stale: Vec<Uuid> = holders(&db)
            .into_iter()
            .filter(|h| !up.contains(h))
            .collect();
        if up.len() == 2 && stale.is_empty() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(3 + 3),
            "up {up:?}, leases still held by {stale:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut acked = dead_load.stop().await.acked();
    for l in loads {
        let stats = l.stop().await;
        assert!(stats.violations().is_empty(), "{:?}", stats.violations());
        acked.extend(stats.acked());
    }
    let r = drills::reconcile(&sink, &acked, Duration::from_secs(90)).await;
    eprintln!(
        "kill -9 of 1 of 3 serve nodes: {} acknowledged, {} lost, {} duplicated ({} extra copies), leases back after {reclaimed:?}",
        r.acked,
        r.lost.len(),
        r.duplicated_ids,
        r.extra_copies
    );
    assert!(r.acked > 50, "{} acknowledged", r.acked);
    assert!(r.lost.is_empty(), "lost: {:?}", r.lost);
    for s in &mut servers {
        s.terminate(Duration::from_secs(20));
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_string_with_several_hosts_reaches_the_read_write_one() {
    let sink = SmtpSink::start().await;
    let db = common::fresh_database();
    // A first host nobody listens on, then the real one (libpq tries them in
    // order and keeps the first that is read-write).
    let dead = drills::free_port();
    let (head, tail) = db.split_once("@127.0.0.1:").expect("a loopback url");
    let sep = if tail.contains('?') { '&' } else { '?' };
    let url =
        format!("{head}@127.0.0.1:{dead},127.0.0.1:{tail}{sep}target_session_attrs=read-write");
    let mut server = Server::new(&url, sink.port(), &[]);
    let admin = server.admin_key();
    let client = reqwest::Client::new();
    server.start();
    server.wait_up(&client, UP).await;
    let key = drills::tenant_key(&client, &server.base, &admin).await;
    for i in 0..5 {
        let r = client
            .post(format!("{}/v1/emails", server.base))
            .bearer_auth(&key)
            .json(
                &json!({"from": "a@a.example", "to": format!("r{i}@example.com"),
                "subject": "s", "text": "t"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    sink.wait_for(5, Duration::from_secs(30)).await;
    // The worker's LISTEN connection is up on the same server.
    let mut conn = PgConnection::establish(&db).unwrap();
    let listening: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .get_result(&mut conn)
    .unwrap();
    assert!(listening.n >= 1, "no LISTEN connection");
    let r = Api::remote(&server.base, &admin)
        .get("/v1/admin/nodes", &admin)
        .await;
    assert_eq!(
        r.json["data"][0]["roles"],
        json!(["api", "worker"]),
        "{}",
        r.text
    );
    server.terminate(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_serve_nodes_under_load_answers_no_5xx_and_loses_nothing() {
    let sink = SmtpSink::start().await;
    let db = common::fresh_database();
    let extra = [
        ("POSTLINE__CLUSTER__NODE_TIMEOUT_SECS", "3"),
        ("POSTLINE__CLUSTER__LEASE_SECS", "120"),
    ];
    let mut servers: Vec<Server> = (0..3)
        .map(|_| Server::new(&db, sink.port(), &extra))
        .collect();
    let admin = servers[0].admin_key();
    let client = reqwest::Client::new();
    for s in &mut servers {
        s.start();
    }
    for s in &mut servers {
        s.wait_up(&client, UP).await;
    }
    let t: Value = Api::remote(&servers[0].base, &admin)
        .create_tenant(json!({"name": "Rolling", "rate_limit":
            {"requests_per_minute": 1_000_000, "emails_per_second": 100_000}}))
        .await;
    let key = Api::remote(&servers[0].base, &admin)
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let shape = LoadShape {
        clients: 2,
        ..LoadShape::default()
    };
    // Clients of every node send throughout; a stopped node's clients find
    // its port closed (no answer) until it is back.
    let loads: Vec<Load> = servers
        .iter()
        .map(|s| Load::start(&s.base, &key, shape.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut leases_back = Vec::new();
    for i in 0..servers.len() {
        let other = Api::remote(&servers[(i + 1) % 3].base, &admin);
        let stopped = Instant::now();
        servers[i].terminate(Duration::from_secs(30));
        // Its leases are gone (a graceful stop gives them back).
        loop {
            let up = nodes_with(&other, &admin, "up").await;
            let stale: Vec<Uuid> = holders(&db)
                .into_iter()
                .filter(|h| !up.contains(h))
                .collect();
            if stale.is_empty() {
                leases_back.push(stopped.elapsed());
                break;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(30 + 3 + 3),
                "leases still held by stopped nodes {stale:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        servers[i].start();
        servers[i].wait_up(&client, UP).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let up = nodes_with(&Api::remote(&servers[0].base, &admin), &admin, "up").await;
    assert_eq!(up.len(), 3, "three nodes up after the restarts");
    let mut acked = Vec::new();
    let mut server_errors = 0;
    let mut no_answer = 0;
    for l in loads {
        let stats = l.stop().await;
        for phase in 0..=drills::BEFORE + 3 {
            server_errors += stats
                .statuses(phase)
                .iter()
                .filter(|(s, _)| **s >= 500)
                .map(|(_, n)| *n)
                .sum::<u64>();
            no_answer += stats.no_answer(phase);
        }
        assert!(stats.violations().is_empty(), "{:?}", stats.violations());
        acked.extend(stats.acked());
    }
    let r = drills::reconcile(&sink, &acked, Duration::from_secs(90)).await;
    eprintln!(
        "rolling restart of 3 serve nodes: {} acknowledged, {} lost, {} duplicated ({} extra copies), {server_errors} answers 5xx, {no_answer} requests unanswered (node down), leases back after {leases_back:?}",
        r.acked,
        r.lost.len(),
        r.duplicated_ids,
        r.extra_copies
    );
    assert_eq!(server_errors, 0, "5xx answered during the rolling restart");
    assert!(r.acked > 50, "{} acknowledged", r.acked);
    assert!(r.lost.is_empty(), "lost: {:?}", r.lost);
    for s in &mut servers {
        s.terminate(Duration::from_secs(20));
    }
}
