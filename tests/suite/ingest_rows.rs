//! What ingest stores per message (issue 24): `email.queued` is not a row of
//! its own, yet the message's events, as clients read them, start with it.
//! Real HTTP and Postgres.

use crate::common;

use chrono::{DateTime, SecondsFormat, Utc};
use common::TestApp;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use serde_json::{json, Value};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn stored(conn: &mut PgConnection, id: &str, kind: &str) -> i64 {
    let id: uuid::Uuid = id.parse().unwrap();
    diesel::sql_query("SELECT count(*) AS n FROM email_events WHERE email_id = $1 AND type = $2")
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(kind)
        .get_result::<Count>(conn)
        .unwrap()
        .n
}

fn events(detail: &Value) -> Vec<(String, String)> {
    detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["at"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn send(app: &TestApp, key: &str, extra: Value) -> String {
    let mut body =
        json!({"from": "a@acme.example", "to": "b@example.com", "subject": "s", "text": "t"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let r = app.post("/v1/emails", key, body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn email_queued_is_shown_from_the_row_not_stored() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant(json!({"name": "Rows"})).await;
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let mut conn = app.sql_conn();

    // A message accepted for sending: no event row, one `email.queued` shown
    // at the message's created_at.
    let id = send(&app, &key, json!({})).await;
    assert_eq!(
        stored(&mut conn, &id, "email.queued"),
        0,
        "not a row of its own"
    );
    let r = app.get(&format!("/v1/emails/{id}"), &key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ev = events(&r.json);
    assert_eq!(ev.len(), 1, "{}", r.text);
    assert_eq!(ev[0].0, "email.queued");
    let at: DateTime<Utc> = ev[0].1.parse().unwrap();
    let created: DateTime<Utc> = r.json["created_at"].as_str().unwrap().parse().unwrap();
    assert!(
        (at - created).num_milliseconds().abs() < 1,
        "queued at {at}, created {created}"
    );

    // A scheduled message keeps its stored `email.scheduled` and shows no
    // `email.queued` before it.
    let later =
        (Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let s = send(&app, &key, json!({"scheduled_at": later})).await;
    assert_eq!(stored(&mut conn, &s, "email.scheduled"), 1);
    let r = app.get(&format!("/v1/emails/{s}"), &key).await;
    let kinds: Vec<String> = events(&r.json).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, ["email.scheduled"], "{}", r.text);

    // A message from before the change has its `email.queued` stored: shown
    // once, not twice.
    let old = send(&app, &key, json!({})).await;
    diesel::sql_query(
        "INSERT INTO email_events (tenant_id, email_id, type, detail, at) \
         SELECT tenant_id, id, 'email.queued', '{}', created_at FROM emails WHERE id = $1",
    )
    .bind::<SqlUuid, _>(old.parse::<uuid::Uuid>().unwrap())
    .execute(&mut conn)
    .unwrap();
    let r = app.get(&format!("/v1/emails/{old}"), &key).await;
    let kinds: Vec<String> = events(&r.json).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, ["email.queued"], "{}", r.text);
}
