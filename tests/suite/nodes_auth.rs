//! Issue 27: the failed-authentication throttle (`auth.failed_per_ip_per_minute`)
//! and the console's sign-in throttle (`console.login_failures_per_minute`)
//! hold across three `postline api` processes on one database: an attacker
//! who spreads failures over the nodes is throttled at the limit, not at
//! three times it (`cluster::failures`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common;
use crate::console::{client, csrf_of, set_cookie, PASSWORD};
use crate::drills::Server;

const UP: Duration = Duration::from_secs(60);
const NODES: usize = 3;

async fn api_nodes(db: &str, extra: &[(&str, &str)]) -> Vec<Server> {
    let mut servers: Vec<Server> = (0..NODES)
        .map(|_| {
            let mut s = Server::new(db, 1, extra);
            s.role = "api";
            s
        })
        .collect();
    let client = reqwest::Client::new();
    for s in &mut servers {
        s.start();
    }
    for s in &mut servers {
        s.wait_up(&client, UP).await;
    }
    servers
}

/// Waits until the rest of the test fits in the current minute (the
/// budgets' window).
pub(crate) async fn early_in_a_minute() {
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second > 35 {
        tokio::time::sleep(Duration::from_secs(61 - second)).await;
    }
}

fn made_up_token(i: usize) -> String {
    format!("pl_live_{:0>16}_{:0>32}", format!("n{i}"), format!("s{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_spread_over_three_nodes_are_throttled_at_the_limit() {
    const LIMIT: usize = 10;
    let db = common::fresh_database();
    let servers = api_nodes(
        &db,
        &[
            ("POSTLINE__AUTH__FAILED_PER_IP_PER_MINUTE", "10"),
            ("POSTLINE__AUTH__TRUST_X_FORWARDED_FOR", "true"),
        ],
    )
    .await;
    early_in_a_minute().await;
    let http = reqwest::Client::new();
    let (mut unauthorized, mut limited) = (0, 0);
    // Each node alone would allow LIMIT: 3 × LIMIT failures in all.
    for i in 0..(4 * LIMIT) {
        let r = http
            .get(format!("{}/v1/webhooks", servers[i % NODES].base))
            .header("x-forwarded-for", "203.0.113.9")
            .bearer_auth(made_up_token(i))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            401 => unauthorized += 1,
            429 => {
                let retry: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=61).contains(&retry), "{retry}");
                limited += 1
            }
            other => panic!("{other}"),
        }
    }
    eprintln!(
        "failed auth, limit {LIMIT}/min over {NODES} nodes: {unauthorized} looked up (401), {limited} refused (429)"
    );
    // The limit, plus at most one failure per node that had not yet learned
    // that the cluster's minute was spent.
    assert!(
        (LIMIT..=LIMIT + NODES).contains(&unauthorized),
        "{unauthorized} failures looked up: not the cluster-wide limit of {LIMIT}"
    );
    // Every node now refuses the address before any lookup…
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in &servers {
        let r = http
            .get(format!("{}/v1/webhooks", s.base))
            .header("x-forwarded-for", "203.0.113.9")
            .bearer_auth(made_up_token(1000))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "{}", s.base);
    }
    // …and only that address.
    let r = http
        .get(format!("{}/v1/webhooks", servers[0].base))
        .header("x-forwarded-for", "203.0.113.10")
        .bearer_auth(made_up_token(1001))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// One sign-in attempt at `base` from `addr`: its status.
async fn sign_in(base: &str, addr: &str, email: &str, password: &str) -> u16 {
    let c = client();
    let form = c
        .get(format!("{base}/console/login"))
        .header("x-forwarded-for", addr)
        .send()
        .await
        .unwrap();
    let (login_cookie, _) = set_cookie(&form, "postline_console_login").unwrap();
    let csrf = csrf_of(&form.text().await.unwrap());
    let r = c
        .post(format!("{base}/console/login"))
        .header("x-forwarded-for", addr)
        .header("cookie", login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_lock_out_holds_across_three_nodes() {
    const LIMIT: usize = 4;
    let db = common::fresh_database();
    let servers = api_nodes(
        &db,
        &[
            ("POSTLINE__CONSOLE__LOGIN_FAILURES_PER_MINUTE", "4"),
            ("POSTLINE__AUTH__TRUST_X_FORWARDED_FOR", "true"),
        ],
    )
    .await;
    let out = servers[0].cli(&[
        "user",
        "create",
        "--admin",
        "--email",
        "ann@example.com",
        "--password",
        PASSWORD,
    ]);
    assert!(out.status.success(), "{out:?}");
    early_in_a_minute().await;
    // A guesser spreads wrong passwords for ann over the nodes, from a new
    // address each time (so only the e-mail address's throttle counts).
    let mut statuses = Vec::new();
    for i in 0..(3 * LIMIT) {
        let addr = format!("10.0.1.{i}");
        let base = &servers[i % NODES].base;
        statuses.push(sign_in(base, &addr, "ann@example.com", "guess!guess!").await);
    }
    let failed = statuses.iter().filter(|s| **s == 401).count();
    eprintln!("sign-in failures, limit {LIMIT}/min over {NODES} nodes: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        (LIMIT..=LIMIT + NODES).contains(&failed),
        "{failed} wrong passwords tried: not the cluster-wide limit of {LIMIT}"
    );
    // Locked out on every node, for a browser new to ann (even with the
    // right password); another user is not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, s) in servers.iter().enumerate() {
        let addr = format!("10.0.2.{i}");
        assert_eq!(
            sign_in(&s.base, &addr, "ann@example.com", PASSWORD).await,
            429,
            "{}",
            s.base
        );
    }
    assert_eq!(
        sign_in(
            &servers[1].base,
            "10.0.3.1",
            "bob@example.com",
            "guess!guess!"
        )
        .await,
        401
    );
}
