//! Drill 1 (DESIGN §10, issue 7): `kill -9` of the server at random moments
//! under load, repeatedly. Every message acknowledged with a 202 must reach
//! the relay at least once; duplicates (a kill between the relay's 250 and
//! our COMMIT) are allowed, counted and reported.
//!
//! Short version in the suite (5 kills); `POSTLINE_DRILL_LONG=1` for 30.

use crate::common;
use crate::drills;

use std::time::{Duration, Instant};

use common::smtp_sink::SmtpSink;
use drills::{LoadShape, Server};
use rand::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_message() {
    let long = drills::long();
    let kills = if long { 30 } else { 5 };
    // Each kill lands this long after the server came up, uniformly.
    let (min_run, max_run) = (300u64, if long { 3000 } else { 1500 });

    let sink = SmtpSink::start().await;
    let db = common::fresh_database();
    let mut server = Server::new(&db, sink.port(), &[]);
    let admin = server.admin_key();
    let http = reqwest::Client::new();
    server.start();
    server.wait_up(&http, Duration::from_secs(30)).await;
    let key = drills::tenant_key(&http, &server.base, &admin).await;

    let started = Instant::now();
    let load = drills::Load::start(&server.base, &key, LoadShape::default());
    let mut restarts = Vec::new();
    for i in 0..kills {
        let run = rand::thread_rng().gen_range(min_run..=max_run);
        tokio::time::sleep(Duration::from_millis(run)).await;
        let acked_before = load.stats.acked_count();
        server.kill9();
        // Sometimes straight back, sometimes after a moment of nothing.
        let down = rand::thread_rng().gen_range(0..=300u64);
        tokio::time::sleep(Duration::from_millis(down)).await;
        server.start();
        let up = server.wait_up(&http, Duration::from_secs(30)).await;
        restarts.push(up);
        report!(
            "kill {}/{kills}: after {run} ms of load ({acked_before} acknowledged so far), down {down} ms, up again in {} ms",
            i + 1,
            up.as_millis()
        );
    }
    // A last stretch of load on the surviving server, then reconcile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = load.stop().await;
    let load_time = started.elapsed();
    let acked = stats.acked();
    // A lease is 5 s and expired leases are reclaimed every second: the mail
    // a killed worker held is sent again, and recorded, within ~6 s.
    let r = drills::reconcile(&sink, &acked, Duration::from_secs(90)).await;
    let in_db = drills::delivered_in_db(&db, &acked, Duration::from_secs(30)).await;
    server.terminate(Duration::from_secs(10));

    let mean_up =
        restarts.iter().map(Duration::as_secs_f64).sum::<f64>() / restarts.len().max(1) as f64;
    report!(
        "kill -9 drill ({}): {kills} kills in {:.1} s of load; {} requests, answers {:?}, {} without an answer",
        if long { "long" } else { "short" },
        load_time.as_secs_f64(),
        stats.requests(),
        stats.statuses(drills::BEFORE),
        stats.no_answer(drills::BEFORE),
    );
    report!(
        "kill -9 drill: acknowledged {}, lost {}, duplicated ids {} ({} extra copies), delivered but never acknowledged {}, all delivered {:.1} s after the load stopped; restart to /healthz mean {:.0} ms; statuses in db {:?}",
        r.acked,
        r.lost.len(),
        r.duplicated_ids,
        r.extra_copies,
        r.unacked_delivered,
        r.waited.as_secs_f64(),
        mean_up * 1000.0,
        in_db
    );
    let violations = stats.violations();
    assert!(
        violations.is_empty(),
        "answers that break the contract: {violations:#?}"
    );
    assert!(r.acked > 0, "the load never got a 202");
    assert!(
        r.lost.is_empty(),
        "{} acknowledged message(s) never reached the relay, e.g. {:?}; db statuses {in_db:?}",
        r.lost.len(),
        &r.lost[..r.lost.len().min(10)]
    );
    assert_eq!(
        in_db.get("delivered").copied().unwrap_or(0),
        r.acked as i64,
        "every acknowledged message is delivered in the database: {in_db:?}"
    );
}
