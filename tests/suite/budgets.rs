//! Leased budgets (`postline::cluster::budget`) against a real Postgres:
//! several holders (as several nodes would be) on one budget, with `used`
//! supplied by the test.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel::PgConnection;
use postline::cluster::{BudgetKey, Budgets, GrantRequest, Granted};
use uuid::Uuid;

fn request(key: &BudgetKey, limit: i64, need: i64) -> GrantRequest {
    GrantRequest {
        key: key.clone(),
        limit,
        need,
        chunk: 100,
        ends_at: Utc::now() + chrono::Duration::days(2),
    }
}

/// One grant with `used` = `spent`.
fn grant(
    b: &Budgets,
    conn: &mut PgConnection,
    key: &BudgetKey,
    limit: i64,
    need: i64,
    spent: i64,
) -> Granted {
    let mut used = |_: &mut PgConnection, keys: &[BudgetKey]| {
        Ok(keys
            .iter()
            .map(|k| (k.clone(), spent))
            .collect::<HashMap<_, _>>())
    };
    b.grant(conn, vec![request(key, limit, need)], &mut used)
        .expect("grant")
        .pop()
        .expect("one answer")
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    holder: Uuid,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    granted: i64,
}

fn leases(conn: &mut PgConnection, key: &BudgetKey) -> Vec<(Uuid, i64)> {
    diesel::sql_query(
        "SELECT holder, granted FROM budget_leases WHERE tenant_id = $1 AND budget = $2 ORDER BY holder",
    )
    .bind::<diesel::sql_types::Uuid, _>(key.tenant_id)
    .bind::<diesel::sql_types::Text, _>(&key.name)
    .load::<Row>(conn)
    .unwrap()
    .into_iter()
    .map(|r| (r.holder, r.granted))
    .collect()
}

fn closed_at(conn: &mut PgConnection, key: &BudgetKey) -> Option<i64> {
    #[derive(QueryableByName)]
    struct C {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
        closed_at_limit: Option<i64>,
    }
    diesel::sql_query("SELECT closed_at_limit FROM budgets WHERE tenant_id = $1 AND budget = $2")
        .bind::<diesel::sql_types::Uuid, _>(key.tenant_id)
        .bind::<diesel::sql_types::Text, _>(&key.name)
        .get_result::<C>(conn)
        .unwrap()
        .closed_at_limit
}

fn key() -> BudgetKey {
    BudgetKey {
        tenant_id: Uuid::new_v4(),
        name: "test:1".into(),
    }
}

#[test]
fn shares_are_granted_until_less_than_a_chunk_is_free_then_every_lease_is_revoked() {
    let db = common::fresh_database();
    let mut conn = PgConnection::establish(&db).unwrap();
    let (a, b) = (Budgets::new(30), Budgets::new(30));
    let k = key();
    let Granted::Held(ra) = grant(&a, &mut conn, &k, 400, 1, 0) else {
        panic!("a gets a share");
    };
    let Granted::Held(rb) = grant(&b, &mut conn, &k, 400, 1, 0) else {
        panic!("b gets a share");
    };
    assert_eq!(leases(&mut conn, &k).len(), 2);
    // Spending checks the lease: live.
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        assert!(a.hold(c, &[&ra])?.contains(&k));
        Ok(())
    })
    .unwrap();
    ra.spend();
    drop(rb);
    // 400 - 100 - 100 free: b's lease grows by what it needs (more than
    // its 100 left), at most half of what is free.
    let Granted::Held(rb2) = grant(&b, &mut conn, &k, 400, 101, 0) else {
        panic!("b's lease grows");
    };
    let total: i64 = leases(&mut conn, &k).iter().map(|(_, g)| g).sum();
    assert_eq!(total, 301);
    // 400 - 1 spent - 201 (b) - 99 (a's rest): less than a chunk is free,
    // so the budget closes and every lease goes.
    assert!(matches!(
        grant(&a, &mut conn, &k, 400, 100, 1),
        Granted::Locked
    ));
    assert!(leases(&mut conn, &k).is_empty());
    assert_eq!(closed_at(&mut conn, &k), Some(400));
    // b's reservation is no longer backed by a lease.
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        assert!(!b.hold(c, &[&rb2])?.contains(&k));
        Ok(())
    })
    .unwrap();
    rb2.lose();
    assert!(matches!(
        b.reserve(&k, 400, 1),
        postline::cluster::Reserve::Grant
    ));
    // b learns the budget is closed; a knows already.
    assert!(matches!(
        grant(&b, &mut conn, &k, 400, 1, 1),
        Granted::Locked
    ));
    assert!(matches!(
        a.reserve(&k, 400, 1),
        postline::cluster::Reserve::Closed
    ));
    // A raised limit reopens it.
    assert!(matches!(
        grant(&a, &mut conn, &k, 1000, 1, 1),
        Granted::Held(_)
    ));
    assert_eq!(closed_at(&mut conn, &k), None);
}

#[test]
fn a_dead_holders_lease_returns_once_it_lapses() {
    let db = common::fresh_database();
    let mut conn = PgConnection::establish(&db).unwrap();
    let (dead, alive, late) = (Budgets::new(2), Budgets::new(2), Budgets::new(2));
    let k = key();
    assert!(matches!(
        grant(&dead, &mut conn, &k, 250, 100, 0),
        Granted::Held(_)
    ));
    let Granted::Held(r) = grant(&alive, &mut conn, &k, 250, 100, 0) else {
        panic!("a second share");
    };
    drop(r);
    // 50 free: not a chunk. `alive` renews, `dead` does not.
    std::thread::sleep(Duration::from_millis(1300));
    alive.renew(&mut conn).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    // `dead` never renewed: its lease lapsed, `alive`'s did not.
    assert!(
        matches!(grant(&late, &mut conn, &k, 250, 100, 0), Granted::Held(_)),
        "the lapsed share returned"
    );
    let holders: Vec<Uuid> = leases(&mut conn, &k).into_iter().map(|(h, _)| h).collect();
    assert!(!holders.contains(&dead.holder()), "{holders:?}");
    assert!(holders.contains(&alive.holder()));
    assert!(holders.contains(&late.holder()));
    assert_eq!(closed_at(&mut conn, &k), None);
}

#[test]
fn an_idle_lease_is_released_at_renewal_and_a_lapsed_one_is_not_renewed() {
    let db = common::fresh_database();
    let mut conn = PgConnection::establish(&db).unwrap();
    let b = Budgets::new(1);
    let k = key();
    let Granted::Held(r) = grant(&b, &mut conn, &k, 1000, 1, 0) else {
        panic!("a share");
    };
    r.spend();
    // Used within the last lease period: renewed.
    b.renew(&mut conn).unwrap();
    assert_eq!(leases(&mut conn, &k).len(), 1);
    // Not used for a whole lease period: released.
    std::thread::sleep(Duration::from_millis(1100));
    b.renew(&mut conn).unwrap();
    assert!(leases(&mut conn, &k).is_empty());
    // A lease that lapsed is not renewed: the holder asks again.
    let Granted::Held(r) = grant(&b, &mut conn, &k, 1000, 1, 1) else {
        panic!("a share");
    };
    std::thread::sleep(Duration::from_millis(1200));
    b.renew(&mut conn).unwrap();
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        assert!(
            !b.hold(c, &[&r])?.contains(&k),
            "a lapsed lease is not live"
        );
        Ok(())
    })
    .unwrap();
    drop(r);
    assert!(matches!(
        b.reserve(&k, 1000, 1),
        postline::cluster::Reserve::Grant
    ));
}
