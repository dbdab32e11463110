//! Issue 27: webhook delivery concurrency (`webhooks.max_in_flight_per_endpoint`,
//! `max_in_flight_per_tenant`) holds across three `postline serve` processes
//! on one database (slot budgets, `webhooks::shared`): a slow receiver never
//! sees more of one tenant's POSTs at once than the tenant's cap, though
//! each node alone would send up to the cap.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common;
use crate::common::smtp_sink::SmtpSink;
use crate::common::webhook_receiver::Receiver;
use crate::common::Api;
use crate::drills::Server;

const PER_TENANT: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_webhook_concurrency_holds_across_three_serve_nodes() {
    let sink = SmtpSink::start().await;
    let rx = Receiver::start().await;
    rx.delay("/", Duration::from_millis(300));
    let db = common::fresh_database();
    let extra = [
        ("POSTLINE__WEBHOOKS__MAX_IN_FLIGHT_PER_ENDPOINT", "2"),
        ("POSTLINE__WEBHOOKS__MAX_IN_FLIGHT_PER_TENANT", "3"),
        ("POSTLINE__CLUSTER__LEASE_SECS", "3"),
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
        s.wait_up(&client, Duration::from_secs(60)).await;
    }
    let api = Api::remote(&servers[0].base, &admin);
    let t: Value = api
        .create_tenant(json!({"name": "Hooks", "rate_limit":
            {"requests_per_minute": 1_000_000, "emails_per_second": 100_000}}))
        .await;
    let key = api
        .tenant_key(
            t["id"].as_str().unwrap(),
            &["send", "emails:read", "webhooks:read", "webhooks:write"],
        )
        .await;
    for path in ["/a", "/b"] {
        let r = api
            .post(
                "/v1/webhooks",
                &key,
                json!({"url": rx.url(path), "events": ["email.queued", "email.delivered"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // 20 messages over the three nodes: 2 events each, to 2 endpoints.
    let n = 20;
    for i in 0..n {
        let r = client
            .post(format!("{}/v1/emails", servers[i % 3].base))
            .bearer_auth(&key)
            .json(
                &json!({"from": "app@sender.test", "to": format!("r{i}@example.org"),
                "subject": "s", "text": "t"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let want = n * 2 * 2;
    let got = rx
        .wait_until(Duration::from_secs(120), |h| {
            h.iter().filter(|h| h.answered == 200).count() >= want
        })
        .await;
    let peak = rx.peak();
    eprintln!(
        "webhooks over 3 serve nodes: {} POSTs, peak {peak} at once (tenant cap {PER_TENANT})",
        got.len()
    );
    assert!(got.len() >= want, "{} of {want} delivered", got.len());
    assert!(
        peak <= PER_TENANT,
        "{peak} POSTs of one tenant at once, cap {PER_TENANT}"
    );
    assert!(peak >= 2, "the cap was never approached ({peak})");
    for s in &mut servers {
        s.terminate(Duration::from_secs(20));
    }
}
