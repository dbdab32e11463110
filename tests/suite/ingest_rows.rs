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

#[derive(QueryableByName, Debug, PartialEq)]
struct Stored {
    #[diesel(sql_type = Text)]
    subject: String,
    #[diesel(sql_type = diesel::sql_types::Array<Text>)]
    to_addrs: Vec<String>,
    #[diesel(sql_type = diesel::sql_types::Array<Text>)]
    cc_addrs: Vec<String>,
    #[diesel(sql_type = diesel::sql_types::Array<Text>)]
    bcc_addrs: Vec<String>,
    #[diesel(sql_type = diesel::sql_types::Array<Text>)]
    reply_to: Vec<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    html_body: Option<String>,
    #[diesel(sql_type = Text)]
    stream: String,
    #[diesel(sql_type = Text)]
    tags: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    scheduled: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    broadcast: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    waits: bool,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    size_bytes: i32,
}

/// The messages of one commit go in as one statement of one text, every
/// column an array and the address lists sliced out of one flat list
/// (`emails::insert`): each message keeps exactly its own lists, empty
/// ones included, and its queue row its own schedule, stream and size.
#[tokio::test]
async fn one_statement_keeps_each_message_its_own_columns() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant(json!({"name": "Columns"})).await;
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let later =
        (Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let base = |subject: &str| json!({"from": "a@acme.example", "subject": subject, "text": "t"});
    let mut batch = Vec::new();
    for (i, extra) in [
        json!({"to": ["b1@example.com", "b2@example.com"], "bcc": "c1@example.com",
               "reply_to": ["r1@acme.example", "r2@acme.example"], "tags": {"n": "0"}}),
        json!({"to": "d1@example.com"}),
        json!({"to": "e1@example.com", "cc": ["f1@example.com", "g1@example.com"],
               "scheduled_at": later, "stream": "broadcast", "html": "<p>h</p>"}),
        json!({"to": ["h1@example.com"], "bcc": ["i1@example.com", "j1@example.com", "k1@example.com"]}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut m = base(&format!("m{i}"));
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        batch.push(m);
    }
    let r = app
        .post("/v1/emails/batch", &key, json!({ "emails": batch }))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);

    let mut conn = app.sql_conn();
    let rows: Vec<Stored> = diesel::sql_query(
        "SELECT e.subject, e.to_addrs, e.cc_addrs, e.bcc_addrs, e.reply_to, e.html_body, e.stream, \
           e.tags::text AS tags, e.scheduled_at IS NOT NULL AS scheduled, q.broadcast, \
           q.next_attempt_at > now() + interval '30 minutes' AS waits, q.size_bytes \
         FROM emails e JOIN email_queue q ON q.tenant_id = e.tenant_id AND q.email_id = e.id \
         WHERE e.tenant_id = $1 ORDER BY e.subject",
    )
    .bind::<SqlUuid, _>(t["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap())
    .load(&mut conn)
    .unwrap();
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(subjects, ["m0", "m1", "m2", "m3"]);
    let lists: Vec<[Vec<String>; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.to_addrs.clone(),
                r.cc_addrs.clone(),
                r.bcc_addrs.clone(),
                r.reply_to.clone(),
            ]
        })
        .collect();
    assert_eq!(
        lists,
        vec![
            [
                v(&["b1@example.com", "b2@example.com"]),
                v(&[]),
                v(&["c1@example.com"]),
                v(&["r1@acme.example", "r2@acme.example"])
            ],
            [v(&["d1@example.com"]), v(&[]), v(&[]), v(&[])],
            [
                v(&["e1@example.com"]),
                v(&["f1@example.com", "g1@example.com"]),
                v(&[]),
                v(&[])
            ],
            [
                v(&["h1@example.com"]),
                v(&[]),
                v(&["i1@example.com", "j1@example.com", "k1@example.com"]),
                v(&[])
            ],
        ]
    );
    assert_eq!(rows[0].tags, r#"{"n": "0"}"#);
    assert_eq!(rows[1].tags, "{}");
    let flags: Vec<(bool, bool, bool, &str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r.scheduled,
                r.waits,
                r.broadcast,
                r.stream.as_str(),
                r.html_body.is_some(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (false, false, false, "transactional", false),
            (false, false, false, "transactional", false),
            (true, true, true, "broadcast", true),
            (false, false, false, "transactional", false),
        ]
    );
    assert!(rows.iter().all(|r| r.size_bytes > 0));
    // Recipients rows follow the lists (the statement after the insert).
    let n: i64 =
        diesel::sql_query("SELECT count(*) AS n FROM email_recipients WHERE tenant_id = $1")
            .bind::<SqlUuid, _>(t["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap())
            .get_result::<Count>(&mut conn)
            .unwrap()
            .n;
    assert_eq!(n, 11);
}
