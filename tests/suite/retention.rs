//! Finding 9: content retention. Finished mail loses its bodies, headers and
//! attachments after `retention.content_days` (or the tenant's
//! `retention_content_days`), keeps status and events until
//! `retention.metadata_days`, and then goes; every statement is bounded.

use crate::common;

use common::TestApp;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};
use postline::config::RetentionSettings;
use postline::retention::{purge, purge_batch, PurgeCounts};
use serde_json::json;

async fn send(app: &TestApp, key: &str) -> String {
    let r = app
        .post(
            "/v1/emails",
            key,
            json!({"from": "a@acme.test", "to": "ann@example.com", "subject": "Kept subject",
                   "text": "secret body", "html": "<p>secret body</p>",
                   "headers": {"X-Campaign": "spring"},
                   "attachments": [{"filename": "r.txt", "content": "aGVsbG8=", "content_type": "text/plain"}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

/// Ages a message and gives it a status, as the worker and time would.
fn age(conn: &mut PgConnection, id: &str, days: i32, status: &str) {
    diesel::sql_query(format!(
        "UPDATE emails SET status = '{status}', created_at = now() - make_interval(days => {days}) \
         WHERE id = '{id}'"
    ))
    .execute(conn)
    .unwrap();
}

#[derive(QueryableByName, Debug)]
struct Content {
    #[diesel(sql_type = Nullable<Text>)]
    text_body: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    html_body: Option<String>,
    #[diesel(sql_type = Text)]
    headers: String,
    #[diesel(sql_type = Text)]
    attachments: String,
    #[diesel(sql_type = Bool)]
    purged: bool,
}

fn content(conn: &mut PgConnection, id: &str) -> Content {
    diesel::sql_query(format!(
        "SELECT text_body, html_body, headers::text AS headers, attachments::text AS attachments, \
         content_purged_at IS NOT NULL AS purged FROM emails WHERE id = '{id}'"
    ))
    .get_result(conn)
    .unwrap()
}

fn settings(batch_rows: usize, max_batches: usize) -> RetentionSettings {
    RetentionSettings {
        content_days: 30,
        metadata_days: 400,
        batch_rows,
        max_batches,
    }
}

#[tokio::test]
async fn purge_removes_content_keeps_status_and_events_and_honours_the_tenant_override() {
    let app = TestApp::spawn().await;
    let a = app.create_tenant(json!({"name": "A"})).await;
    let b = app
        .create_tenant(json!({"name": "B", "retention_content_days": 5}))
        .await;
    assert_eq!(b["retention_content_days"], 5);
    assert!(a["retention_content_days"].is_null());
    let perms = ["send", "emails:read"];
    let key_a = app.tenant_key(a["id"].as_str().unwrap(), &perms).await;
    let key_b = app.tenant_key(b["id"].as_str().unwrap(), &perms).await;
    let mut conn = app.sql_conn();

    let a_old = send(&app, &key_a).await;
    let a_young = send(&app, &key_a).await;
    let a_queued = send(&app, &key_a).await;
    let a_ancient = send(&app, &key_a).await;
    let b_old = send(&app, &key_b).await;
    let b_young = send(&app, &key_b).await;
    age(&mut conn, &a_old, 31, "delivered");
    age(&mut conn, &a_young, 29, "bounced");
    age(&mut conn, &a_queued, 31, "queued");
    age(&mut conn, &a_ancient, 401, "failed");
    age(&mut conn, &b_old, 6, "delivered");
    age(&mut conn, &b_young, 4, "delivered");

    // Every message has its recipient row and its queue row (the ages above
    // do not remove the queue rows the worker would have).
    for id in [&a_ancient, &a_queued] {
        assert_eq!(dependants(&mut conn, id), (1, 1), "{id}");
    }

    let counts = purge_batch(&mut conn, &settings(1000, 1)).unwrap();
    assert_eq!(
        counts,
        PurgeCounts {
            content: 3, // a_old, b_old, and a_ancient (deleted in the same call)
            messages: 1
        }
    );
    // No foreign key cascades them (issue 24): the purge deletes a deleted
    // message's recipients and queue row itself, and nobody else's.
    assert_eq!(
        dependants(&mut conn, &a_ancient),
        (0, 0),
        "nothing left behind"
    );
    for id in [&a_old, &a_young, &a_queued, &b_old, &b_young] {
        assert_eq!(dependants(&mut conn, id), (1, 1), "{id} keeps its rows");
    }
    let orphans: i64 = diesel::sql_query(
        "SELECT (SELECT count(*) FROM email_recipients r WHERE NOT EXISTS \
                   (SELECT 1 FROM emails e WHERE e.tenant_id = r.tenant_id AND e.id = r.email_id)) \
              + (SELECT count(*) FROM email_queue q WHERE NOT EXISTS \
                   (SELECT 1 FROM emails e WHERE e.tenant_id = q.tenant_id AND e.id = q.email_id)) AS n",
    )
    .get_result::<Count>(&mut conn)
    .unwrap()
    .n;
    assert_eq!(orphans, 0);

    for (key, id) in [(&key_a, &a_old), (&key_b, &b_old)] {
        let c = content(&mut conn, id);
        assert!(c.purged, "{id}");
        assert_eq!((c.text_body, c.html_body), (None, None));
        assert_eq!((c.headers.as_str(), c.attachments.as_str()), ("{}", "[]"));
        let r = app.get(&format!("/v1/emails/{id}"), key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.json["content_purged_at"].is_string(), "{}", r.text);
        assert_eq!(r.json["status"], "delivered", "status kept");
        assert_eq!(r.json["subject"], "Kept subject", "metadata kept");
        assert!(
            !r.json["events"].as_array().unwrap().is_empty(),
            "events kept: {}",
            r.text
        );
    }
    for id in [&a_young, &a_queued, &b_young] {
        let c = content(&mut conn, id);
        assert!(!c.purged, "{id} keeps its content");
        assert_eq!(c.text_body.as_deref(), Some("secret body"));
        assert!(c.attachments.contains("r.txt"));
    }
    let r = app.get(&format!("/v1/emails/{a_young}"), &key_a).await;
    assert!(r.json["content_purged_at"].is_null(), "{}", r.text);
    let r = app.get(&format!("/v1/emails/{a_ancient}"), &key_a).await;
    assert_eq!(r.status, 404, "past metadata_days the message is gone");
    let events: i64 = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM email_events WHERE email_id = '{a_ancient}'"
    ))
    .get_result::<Count>(&mut conn)
    .unwrap()
    .n;
    assert_eq!(events, 0, "with its events");

    // An admin changes the override; a purge run applies it.
    let r = app
        .patch(
            &format!("/v1/tenants/{}", b["id"].as_str().unwrap()),
            &app.admin_key,
            json!({"retention_content_days": 3}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(purge(&mut conn, &settings(1000, 10)).unwrap().content, 1);
    assert!(content(&mut conn, &b_young).purged);
    assert_eq!(
        purge(&mut conn, &settings(1000, 10)).unwrap(),
        PurgeCounts::default()
    );
}

/// A message's `email_recipients` and `email_queue` rows.
fn dependants(conn: &mut PgConnection, id: &str) -> (i64, i64) {
    let mut n = |table: &str| {
        diesel::sql_query(format!(
            "SELECT count(*) AS n FROM {table} WHERE email_id = '{id}'"
        ))
        .get_result::<Count>(conn)
        .unwrap()
        .n
    };
    (n("email_recipients"), n("email_queue"))
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[tokio::test]
async fn purges_are_bounded_per_statement_and_per_run() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant(json!({"name": "A"})).await;
    let key = app.tenant_key(t["id"].as_str().unwrap(), &["send"]).await;
    let mut conn = app.sql_conn();
    for _ in 0..7 {
        let id = send(&app, &key).await;
        age(&mut conn, &id, 40, "delivered");
    }
    assert_eq!(purge_batch(&mut conn, &settings(3, 1)).unwrap().content, 3);
    assert_eq!(
        purge(&mut conn, &settings(2, 1)).unwrap().content,
        2,
        "max_batches caps a run"
    );
    assert_eq!(
        purge(&mut conn, &settings(2, 10)).unwrap().content,
        2,
        "the rest"
    );
    assert_eq!(purge(&mut conn, &settings(2, 10)).unwrap().content, 0);
}

#[tokio::test]
async fn the_override_is_validated_and_admin_only() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant(json!({"name": "A"})).await;
    let path = format!("/v1/tenants/{}", t["id"].as_str().unwrap());
    for bad in [json!(0), json!(3651), json!(-1), json!("30")] {
        let r = app
            .patch(
                &path,
                &app.admin_key,
                json!({"retention_content_days": bad}),
            )
            .await;
        assert!(r.status == 422 || r.status == 400, "{bad}: {}", r.text);
    }
    let r = app
        .patch(
            &path,
            &app.admin_key,
            json!({"retention_content_days": 3650}),
        )
        .await;
    assert_eq!(r.json["retention_content_days"], 3650, "{}", r.text);
    let r = app
        .patch(
            &path,
            &app.admin_key,
            json!({"retention_content_days": null}),
        )
        .await;
    assert!(r.json["retention_content_days"].is_null(), "{}", r.text);
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let r = app
        .patch(&path, &key, json!({"retention_content_days": 1}))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
}
