//! Drill 2 (DESIGN §10, issue 7): the relay goes down under load, then comes
//! back on the same port. Mail accepted meanwhile is deferred (connection
//! refused), retried with backoff, and all delivered after the recovery;
//! none bounced or failed.
//!
//! Short version in the suite (relay down 5 s); `POSTLINE_DRILL_LONG=1`: 60 s.
//! Retries are configured small (200 ms doubling to 1 s, production: 1 min to
//! 1 h) so the drill measures the recovery, not the backoff.

use crate::common;
use crate::drills;

use std::time::{Duration, Instant};

use common::smtp_sink::SmtpSink;
use drills::{LoadShape, Server, AFTER, BEFORE, OUTAGE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_then_back_delivers_all_deferred_mail() {
    let long = drills::long();
    let outage = Duration::from_secs(if long { 60 } else { 5 });

    let mut sink = SmtpSink::start().await;
    let db = common::fresh_database();
    let mut server = Server::new(&db, sink.port(), &[]);
    let admin = server.admin_key();
    let http = reqwest::Client::new();
    server.start();
    server.wait_up(&http, Duration::from_secs(30)).await;
    let key = drills::tenant_key(&http, &server.base, &admin).await;

    let shape = LoadShape {
        clients: 4,
        pause: Duration::from_millis(40),
        ..LoadShape::default()
    };
    let load = drills::Load::start(&server.base, &key, shape);
    tokio::time::sleep(Duration::from_secs(1)).await;

    sink.stop().await;
    load.stats.set_phase(OUTAGE);
    let before_outage = sink.messages().len();
    let acked_before = load.stats.acked_count();
    let down_at = Instant::now();
    tokio::time::sleep(outage).await;
    let pending = load.stats.acked();
    let deferred_during = drills::events_of(&db, "email.deferred");
    let queue_during = drills::all_statuses(&db);

    sink.restart().await;
    let was_down = down_at.elapsed();
    load.stats.set_phase(AFTER);
    // Recovery: until everything acknowledged before the relay came back has
    // reached it (the load goes on meanwhile).
    let recovered = drills::reconcile(&sink, &pending, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = load.stop().await;
    let acked = stats.acked();
    let r = drills::reconcile(&sink, &acked, Duration::from_secs(60)).await;
    // The relay's 250 comes before the outcome's commit: give the last
    // recordings a bounded moment, and say how long they took.
    let settle = Instant::now();
    let mut in_db = drills::all_statuses(&db);
    while in_db.keys().any(|s| s != "delivered") && settle.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        in_db = drills::all_statuses(&db);
    }
    let settled = settle.elapsed();
    let deferred = drills::events_of(&db, "email.deferred");
    server.terminate(Duration::from_secs(10));

    report!(
        "relay drill ({}): relay down {:.1} s; {} messages reached the relay before the outage; acknowledged during it {} (queue at its end: {:?}); {} deferral events during the outage, {} in all",
        if long { "long" } else { "short" },
        was_down.as_secs_f64(),
        before_outage,
        pending.len() - acked_before,
        queue_during,
        deferred_during,
        deferred
    );
    report!(
        "relay drill: acknowledged {}, lost {}, duplicated ids {}, all delivered {:.1} s after the relay came back; answers before/during/after {:?} / {:?} / {:?}; statuses in db {:?} ({:.1} s after the last arrival)",
        r.acked,
        r.lost.len(),
        r.duplicated_ids,
        recovered.waited.as_secs_f64(),
        stats.statuses(BEFORE),
        stats.statuses(OUTAGE),
        stats.statuses(AFTER),
        in_db,
        settled.as_secs_f64()
    );
    let violations = stats.violations();
    assert!(
        violations.is_empty(),
        "answers that break the contract: {violations:#?}"
    );
    assert!(
        deferred_during > 0,
        "nothing was deferred while the relay was down"
    );
    assert!(
        recovered.lost.is_empty() && r.lost.is_empty(),
        "{} acknowledged message(s) never delivered after the relay came back; db {in_db:?}",
        r.lost.len()
    );
    assert_eq!(
        in_db.keys().collect::<Vec<_>>(),
        vec!["delivered"],
        "every message delivered, none bounced or failed: {in_db:?}"
    );
}
