//! What recording a delivery outcome writes (issue 24): the message's row
//! and its recipient's are updated in place, heap-only (HOT) updates that
//! add no entry to any index of `emails` or `email_recipients` (no index
//! names a column an outcome changes; the tables keep room on their pages
//! for the new versions). Real HTTP, SMTP and Postgres; the counts are
//! Postgres's own (`pg_stat_user_tables`).

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde_json::json;

use crate::common::smtp_sink::SmtpSink;
use crate::common::TestApp;
use crate::queue::{mail, tenant_with_key};

#[derive(QueryableByName)]
struct Updates {
    #[diesel(sql_type = BigInt)]
    updated: i64,
    #[diesel(sql_type = BigInt)]
    hot: i64,
}

fn updates(conn: &mut PgConnection, table: &str) -> Updates {
    diesel::sql_query(
        "SELECT n_tup_upd AS updated, n_tup_hot_upd AS hot FROM pg_stat_user_tables \
         WHERE relname = $1",
    )
    .bind::<diesel::sql_types::Text, _>(table)
    .get_result(conn)
    .unwrap()
}

#[tokio::test]
async fn a_delivered_messages_row_is_updated_without_new_index_entries() {
    const N: usize = 40;
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    for i in 0..N {
        let r = app
            .post("/v1/emails", &key, mail("a@a.example", &format!("m{i}")))
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    assert!(sink.wait_count(N, Duration::from_secs(30)).await);
    // Backends report their counts within a few seconds of going idle.
    let mut conn = app.sql_conn();
    for table in ["emails", "email_recipients"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        let u = loop {
            let u = updates(&mut conn, table);
            if u.updated >= N as i64 || Instant::now() > deadline {
                break u;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            u.updated >= N as i64,
            "{} updates of {table} seen",
            u.updated
        );
        assert!(
            u.hot * 10 >= u.updated * 9,
            "{} of {} updates of {table} were HOT: outcomes wrote index entries",
            u.hot,
            u.updated
        );
    }
}
