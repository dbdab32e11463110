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
