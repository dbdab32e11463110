//! Through the API, the queue and the worker.

use super::*;

pub(super) async fn wait_email(
    app: &common::Api,
    key: &str,
    id: &str,
    what: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = app.get(&format!("/v1/emails/{id}"), key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if what(&r.json) {
            return r.json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "email {id} never got there: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) fn recipient_status(email: &Value, addr: &str) -> String {
    email["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["email"] == addr)
        .unwrap_or_else(|| panic!("no recipient {addr} in {email}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// End to end: one message to five domains. Three arrive at their own MX
/// sinks (each sink sees only its domain's recipient), the null-MX one
/// bounces, the unreachable one defers and is retried on the mx schedule
/// without resending to the others.
#[tokio::test]
async fn three_domains_arrive_at_their_own_sinks_end_to_end() {
    let mut w = World::new().await;
    let mut sinks = Vec::new();
    for (i, d) in ["one", "two", "three"].iter().enumerate() {
        let host = format!("mx.{d}.test");
        sinks.push(w.mx_host(&host, 2 + i as u8, SinkConfig::default()).await);
        w.dns.add_mx(&format!("{d}.test"), 10, &host);
    }
    w.dns.add_null_mx("null.test");
    w.dns.add_ip("mx.gone.test", ip(252));
    w.dns.add_mx("gone.test", 10, "mx.gone.test");
    let mut app = TestApp::spawn_with(|s| w.apply(s)).await;
    app.start_worker();
    let t = app.create_tenant(json!({"name": "Acme"})).await;
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let to = [
        "a@one.test",
        "b@two.test",
        "c@three.test",
        "d@null.test",
        "e@gone.test",
    ];
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "app@acme.example", "to": to, "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    let email = wait_email(&app, &key, &id, |e| {
        e["recipients"]
            .as_array()
            .is_some_and(|rs| rs.iter().all(|r| r["status"] != "queued"))
            && e["attempts"].as_i64().unwrap_or(0) >= 2
    })
    .await;
    for (i, addr) in to[..3].iter().enumerate() {
        assert_eq!(recipient_status(&email, addr), "delivered", "{email}");
        let got = w.sinks[sinks[i]].messages();
        assert_eq!(got.len(), 1, "delivered once, not again on the retry");
        assert_eq!(got[0].rcpt_to, vec![addr.to_string()]);
    }
    assert_eq!(recipient_status(&email, "d@null.test"), "bounced");
    assert_eq!(recipient_status(&email, "e@gone.test"), "deferred");
    assert_eq!(email["status"], "deferred");
}

async fn post(app: &TestApp, key: &str, to: &str) -> String {
    let body = json!({"from": "app@acme.example", "to": to, "subject": "s", "text": "t"});
    let r = app.post("/v1/emails", key, body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

/// Tenant A's burst fills a one-connection site's queue; tenant B's three
/// messages, sent after it, take turns with A's instead of waiting behind
/// all of them.
#[tokio::test]
async fn tenant_fairness_holds_inside_a_site() {
    let mut w = World::new().await;
    let slow = SinkConfig {
        data_delay: Duration::from_millis(100),
        ..SinkConfig::default()
    };
    let sink = w.mx_host("mx.fair-site.test", 3, slow).await;
    w.dns.add_mx("fair.test", 10, "mx.fair-site.test");
    let mut app = TestApp::spawn_with(|s| {
        w.apply(s);
        s.delivery.mx.sites = vec![rule("fair", "fair-site.test", 1, 1000, 100_000)];
        s.delivery.mx.max_wait_ms = 60_000;
        s.delivery.lease_secs = 120;
    })
    .await;
    let a = app.create_tenant(json!({"name": "A"})).await;
    let key_a = app
        .tenant_key(a["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let b = app.create_tenant(json!({"name": "B"})).await;
    let key_b = app
        .tenant_key(b["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    for i in 0..30 {
        post(&app, &key_a, &format!("a{i}@fair.test")).await;
    }
    // A's 30 are claimed and waiting for the site's one connection...
    app.start_worker();
    assert!(w.sinks[sink].wait_count(1, WAIT).await);
    // ...when B's arrive.
    for i in 0..3 {
        post(&app, &key_b, &format!("b{i}@fair.test")).await;
    }
    let delivered_before_b = w.sinks[sink].count();
    let got = w.sinks[sink].wait_for(33, Duration::from_secs(60)).await;
    let order: Vec<char> = got
        .iter()
        .map(|m| m.rcpt_to[0].chars().next().unwrap())
        .collect();
    let last_b = order.iter().rposition(|c| *c == 'b').unwrap();
    let a_ahead = order[delivered_before_b.min(last_b)..last_b]
        .iter()
        .filter(|c| **c == 'a')
        .count();
    // Round-robin: about one of A's per B's (plus the one on the wire);
    // first come first served would put every waiting A (15+) ahead.
    assert!(
        delivered_before_b <= 15,
        "B was sent too late to tell: {delivered_before_b} of A's already delivered"
    );
    assert!(
        a_ahead <= 6,
        "{a_ahead} of A's went ahead of B's last ({delivered_before_b} delivered before B was sent): {order:?}"
    );
}

#[tokio::test]
async fn a_tenant_relay_override_still_wins_in_mx_mode() {
    let mut w = World::new().await;
    let mx = w.mx_host("mx.dest.test", 3, SinkConfig::default()).await;
    w.dns.add_mx("dest.test", 10, "mx.dest.test");
    let relay = SmtpSink::start().await;
    let mut app = TestApp::spawn_with(|s| w.apply(s)).await;
    app.start_worker();
    let own = app
        .create_tenant(json!({"name": "Own", "smtp": {"host": "127.0.0.1", "port": relay.port(), "tls": "none"}}))
        .await;
    let key_own = app
        .tenant_key(own["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let direct = app.create_tenant(json!({"name": "Direct"})).await;
    let key_direct = app
        .tenant_key(direct["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    post(&app, &key_own, "x@dest.test").await;
    post(&app, &key_direct, "y@dest.test").await;
    assert_eq!(
        relay.wait_for(1, WAIT).await[0].rcpt_to,
        vec!["x@dest.test".to_string()]
    );
    assert_eq!(
        w.sinks[mx].wait_for(1, WAIT).await[0].rcpt_to,
        vec!["y@dest.test".to_string()]
    );
}
