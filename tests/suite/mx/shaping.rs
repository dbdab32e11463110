//! Per-site shaping: connection caps, 421 slow-down, a site that is down.

use super::*;

#[tokio::test]
async fn a_site_limited_to_two_connections_never_sees_a_third() {
    let mut w = World::new().await;
    let slow = SinkConfig {
        data_delay: Duration::from_millis(30),
        ..SinkConfig::default()
    };
    let sink = w.mx_host("mx.capped-site.test", 3, slow).await;
    // Two domains with the same MX host: one site, one limit.
    w.dns.add_mx("capped-a.test", 10, "mx.capped-site.test");
    w.dns.add_mx("capped-b.test", 10, "mx.capped-site.test");
    let mut s = w.settings();
    s.delivery.mx.sites = vec![rule("capped", "capped-site.test", 2, 3, 100_000)];
    s.delivery.mx.max_wait_ms = 30_000;
    let t = Arc::new(MxTransport::new(&s, options()));

    let sends = (0..24).map(|i| {
        let t = t.clone();
        let to = format!("u{i}@capped-{}.test", if i % 2 == 0 { "a" } else { "b" });
        tokio::spawn(async move { t.send(&message(&[to.as_str()])).await })
    });
    for out in futures_util::future::join_all(sends).await {
        let out = out.unwrap();
        assert!(out.is_delivered(), "{out:?}");
    }
    assert_eq!(w.sinks[sink].count(), 24);
    assert_eq!(
        w.sinks[sink].peak_connections(),
        2,
        "two at once, never a third"
    );
    // 3 messages per connection: at least 8 sessions were opened in turn.
    assert!(
        w.sinks[sink].connections() >= 8,
        "{}",
        w.sinks[sink].connections()
    );
}

fn rate_metric(site: &str) -> Option<f64> {
    let text = postline::metrics::render(&[]);
    let prefix = format!("postline_mx_site_rate_per_minute{{pool=\"default\",site=\"{site}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_site_answering_421_is_slowed_and_others_are_not() {
    let mut w = World::new().await;
    let busy = w
        .mx_host("mx.busy-site.test", 3, SinkConfig::default())
        .await;
    let calm = w
        .mx_host("mx.calm-site.test", 4, SinkConfig::default())
        .await;
    w.dns.add_mx("busy.test", 10, "mx.busy-site.test");
    w.dns.add_mx("calm.test", 10, "mx.calm-site.test");
    let mut s = w.settings();
    s.delivery.mx.sites = vec![
        rule("busy421", "busy-site.test", 1, 100, 120),
        rule("calm421", "calm-site.test", 1, 100, 120),
    ];
    s.delivery.mx.max_wait_ms = 200;
    s.delivery.mx.slowdown_secs = 600;
    let t = MxTransport::new(&s, options());
    w.sinks[busy].script("a@busy.test", vec![421]);

    let out = t.send(&message(&["a@busy.test", "b@calm.test"])).await;
    assert_eq!(
        fates(&out),
        vec![
            ("a@busy.test".into(), Fate::Deferred),
            ("b@calm.test".into(), Fate::Delivered)
        ]
    );
    assert_eq!(rate_metric("busy421"), Some(60.0), "halved from 120/min");
    assert_eq!(
        rate_metric("calm421"),
        Some(120.0),
        "the other site keeps its rate"
    );

    // 60/min: the next busy.test message has no slot within max_wait and goes
    // back to the queue unattempted; calm.test (120/min, 1 s apart) still
    // sends once its own interval has passed.
    let out = t.send(&message(&["c@busy.test"])).await;
    assert!(matches!(out, Outcome::Throttled { .. }), "{out:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let out = t.send(&message(&["d@calm.test"])).await;
    assert!(out.is_delivered(), "{out:?}");
    assert_eq!(w.sinks[calm].count(), 2);
    assert_eq!(w.sinks[busy].count(), 0);
}

#[tokio::test]
async fn a_domain_whose_mx_is_down_defers_at_once_while_others_deliver() {
    let mut w = World::new().await;
    let up = w.mx_host("mx.up.test", 3, SinkConfig::default()).await;
    w.dns.add_mx("up.test", 10, "mx.up.test");
    w.dns.add_ip("mx.down.test", ip(251));
    w.dns.add_mx("down.test", 10, "mx.down.test");
    let mut s = w.settings();
    s.delivery.mx.down_secs = 60;
    let t = MxTransport::new(&s, options());

    let out = t.send(&message(&["a@up.test", "b@down.test"])).await;
    assert_eq!(
        fates(&out),
        vec![
            ("a@up.test".into(), Fate::Delivered),
            ("b@down.test".into(), Fate::Deferred)
        ]
    );
    // The site is known down: its mail defers without a connection attempt
    // (no worker slot held for a connect timeout), the other site still flows.
    let started = Instant::now();
    let out = t.send(&message(&["c@down.test"])).await;
    assert!(matches!(out, Outcome::Deferred { .. }), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(t.send(&message(&["d@up.test"])).await.is_delivered());
    assert_eq!(w.sinks[up].count(), 2);
}
