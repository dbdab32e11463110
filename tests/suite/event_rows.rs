//! `email_events` has no foreign key to `emails` (issue 24): its writers
//! keep it whole. A writer that does not hold the message row in its own
//! transaction (tracking) locks the messages first and writes only the
//! events of those still there; retention, which takes its rows `FOR UPDATE
//! SKIP LOCKED`, passes over a locked message and deletes a message's events
//! with it. Real HTTP and Postgres, two connections.

use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde_json::json;
use uuid::Uuid;

use crate::common::TestApp;
use crate::queue::{send, tenant_with_key};
use postline::config::RetentionSettings;
use postline::emails::model::{lock_present, NewEvent};
use postline::retention::purge_batch;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

fn events_of(conn: &mut PgConnection, id: Uuid) -> i64 {
    count(
        conn,
        &format!("SELECT count(*) AS n FROM email_events WHERE email_id = '{id}'"),
    )
}

fn orphan_events(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM email_events ev WHERE NOT EXISTS \
           (SELECT 1 FROM emails e WHERE e.tenant_id = ev.tenant_id AND e.id = ev.email_id)",
    )
}

/// Finished a year ago: past any `metadata_days` below.
fn age(conn: &mut PgConnection, id: Uuid) {
    diesel::sql_query(format!(
        "UPDATE emails SET status = 'delivered', created_at = now() - interval '365 days' \
         WHERE id = '{id}'"
    ))
    .execute(conn)
    .unwrap();
}

fn retention() -> RetentionSettings {
    RetentionSettings {
        content_days: 30,
        metadata_days: 90,
        batch_rows: 100,
        max_batches: 1,
    }
}

fn clicked(tenant: Uuid, email: Uuid) -> NewEvent {
    NewEvent {
        tenant_id: tenant,
        email_id: email,
        kind: "email.clicked".into(),
        detail: json!({"recipient": "x@example.com"}),
        at: Utc::now(),
    }
}

async fn message(app: &TestApp, key: &str) -> Uuid {
    Uuid::parse_str(&send(app, key, "a@a.example", "kept whole").await).unwrap()
}

#[tokio::test]
async fn a_tracking_batch_writes_no_event_for_a_message_retention_deleted_meanwhile() {
    let app = TestApp::spawn().await;
    let (tenant, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let tenant = Uuid::parse_str(&tenant).unwrap();
    let (kept, gone) = (message(&app, &key).await, message(&app, &key).await);
    let mut conn = app.sql_conn();
    age(&mut conn, gone);
    assert_eq!(purge_batch(&mut conn, &retention()).unwrap().messages, 1);

    // The hits were matched before the purge; the batch is written after.
    postline::tracking::model::write(
        &mut conn,
        &[clicked(tenant, kept), clicked(tenant, gone)],
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(events_of(&mut conn, kept), 1);
    assert_eq!(events_of(&mut conn, gone), 0);
    assert_eq!(orphan_events(&mut conn), 0);
}

#[tokio::test]
async fn retention_passes_over_a_locked_message_and_deletes_its_events_with_it_later() {
    let app = TestApp::spawn().await;
    let (tenant, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let tenant = Uuid::parse_str(&tenant).unwrap();
    let id = message(&app, &key).await;
    let mut purger = app.sql_conn();
    age(&mut purger, id);

    let mut writer = app.sql_conn();
    writer
        .transaction::<_, diesel::result::Error, _>(|w| {
            let present = lock_present(w, &[(tenant, id), (tenant, Uuid::new_v4())]).unwrap();
            assert_eq!(present.into_iter().collect::<Vec<_>>(), vec![(tenant, id)]);
            // While the writer holds it, retention takes nothing.
            assert_eq!(purge_batch(&mut purger, &retention()).unwrap().messages, 0);
            diesel::insert_into(postline::db::schema::email_events::table)
                .values(&[clicked(tenant, id)][..])
                .execute(w)?;
            Ok(())
        })
        .unwrap();
    assert_eq!(events_of(&mut purger, id), 1);

    assert_eq!(purge_batch(&mut purger, &retention()).unwrap().messages, 1);
    assert_eq!(
        events_of(&mut purger, id),
        0,
        "the events go with the message"
    );
    assert_eq!(orphan_events(&mut purger), 0);
}
