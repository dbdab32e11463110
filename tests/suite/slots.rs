//! Cluster-wide concurrency budgets (`cluster::slots`, issue 27) against
//! Postgres, with two holders on one budget as two nodes would be: never
//! more than the limit held across them; a dropped slot is reused from the
//! node's lease without Postgres; unheld slots go back after a renewal
//! period; a holder's lost lease is not counted once deleted.

use crate::common;

use std::time::Duration;

use postline::cluster::slots::Slots;
use uuid::Uuid;

fn holders(db: &str) -> (Slots, Slots) {
    let settings = common::test_settings(db);
    let pool = postline::db::build_pool(&settings.database);
    (
        Slots::new(Uuid::new_v4(), 30, pool.clone()),
        Slots::new(Uuid::new_v4(), 30, pool),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_hold_more_than_the_limit_and_idle_slots_go_back() {
    let db = common::fresh_database();
    let (a, b) = holders(&db);
    let (name, limit) = ("mx_conn:test-site", 3);
    let a1 = a.take(name, limit).await.expect("a first slot");
    let a2 = a.take(name, limit).await.expect("a second slot");
    let b1 = b.take(name, limit).await.expect("b's slot: one left");
    assert!(a.take(name, limit).await.is_none(), "a fourth slot for a");
    assert!(b.take(name, limit).await.is_none(), "a fourth slot for b");
    // A slot a drops stays in a's lease: a takes it again, b cannot.
    drop(a2);
    tokio::time::sleep(postline::cluster::slots::REFUSAL).await;
    assert!(
        b.take(name, limit).await.is_none(),
        "a's dropped slot went to b"
    );
    let a2 = a.take(name, limit).await.expect("a reuses its own slot");
    drop(a2);
    // Unheld for a renewal period, it goes back to Postgres.
    a.renew(Duration::from_millis(50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    a.renew(Duration::from_millis(50)).await.unwrap();
    tokio::time::sleep(postline::cluster::slots::REFUSAL).await;
    let b2 = b
        .take(name, limit)
        .await
        .expect("b gets the slot a gave back");
    assert_eq!((a.held(name), b.held(name)), (1, 2));
    assert!(a.take(name, limit).await.is_none(), "over the limit");
    // Every slot dropped and given back: the other node can hold them all.
    drop((a1, b1, b2));
    a.renew(Duration::ZERO).await.unwrap();
    b.renew(Duration::ZERO).await.unwrap();
    tokio::time::sleep(postline::cluster::slots::REFUSAL).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(a.take(name, limit).await.expect("a takes the whole limit"));
    }
    assert_eq!(a.held(name), 3);
    assert!(b.take(name, limit).await.is_none());
}

/// The shaping cost per message, same run: the node's own GCRA alone (per
/// node) vs that plus the shared limits (a rate admission from the node's
/// window share and a connection slot taken and dropped from its lease).
/// Shared limits must not cost a query per message: 3,000 messages take a
/// handful of grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_site_limits_cost_no_query_per_message() {
    use postline::cluster::node::{Node, Registry};
    use postline::cluster::rate::Rates;
    use postline::cluster::Budgets;
    use std::time::Instant;

    let db = common::fresh_database();
    let settings = common::test_settings(&db);
    let pool = postline::db::build_pool(&settings.database);
    let budgets = Budgets::new(30);
    let registry = Registry::new(Node::this(budgets.holder(), &["worker"]), 15);
    let rates = Rates::new(budgets.clone(), registry, pool.clone());
    let slots = Slots::new(budgets.holder(), 30, pool.clone());
    let mut mx = settings.delivery.mx.clone();
    mx.default_messages_per_minute = 4_000_000_000;
    let sites = postline::delivery::mx::shaping::Sites::new(&mx);
    let site = sites.site_for("default", &["mx.bench.test".to_string()]);
    let n = 3_000u32;
    let t = Instant::now();
    for _ in 0..n {
        site.reserve().expect("GCRA slot");
    }
    let local = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        site.reserve().expect("GCRA slot");
        let a = rates
            .admit(Uuid::nil(), "mx_rate:bench", 6_000_000, 60)
            .await;
        assert!(a.admitted);
        let s = slots.take("mx_conn:bench", 10).await.expect("slot");
        drop(s);
    }
    let shared = t.elapsed() / n;
    let mut conn = diesel::PgConnection::establish(&db).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Granted {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel::prelude::*;
    let leases: Granted =
        diesel::sql_query("SELECT count(*) AS n FROM budget_leases WHERE tenant_id = $1")
            .bind::<diesel::sql_types::Uuid, _>(Uuid::nil())
            .get_result(&mut conn)
            .unwrap();
    eprintln!(
        "shaping per message: per node {local:?}, with shared limits {shared:?} ({n} messages, {} leases)",
        leases.n
    );
    assert_eq!(leases.n, 2, "one lease per budget, not one per message");
    assert_eq!(slots.held("mx_conn:bench"), 0);
}

/// A tenant's slot budget (its SMTP sessions) is its own: another tenant's
/// sessions do not count, and two nodes share the tenant's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_slot_budgets_are_per_tenant_across_nodes() {
    let db = common::fresh_database();
    let (a, b) = holders(&db);
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let s1 = a.take_for(t1, "smtp_sessions", 1).await.expect("t1 on a");
    assert!(
        b.take_for(t1, "smtp_sessions", 1).await.is_none(),
        "t1 twice"
    );
    let s2 = b.take_for(t2, "smtp_sessions", 1).await.expect("t2 on b");
    drop((s1, s2));
}
