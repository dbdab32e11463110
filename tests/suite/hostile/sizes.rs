//! Finding 2: rendered bodies, whole messages and attachments are bounded,
//! checked on what will really be stored and sent.

use base64::Engine;
use diesel::prelude::*;
use serde_json::{json, Value};

use super::{code, tenant};
use crate::common::TestApp;

const RW: &[&str] = &["send", "templates:read", "templates:write"];

fn stored(app: &TestApp, tenant_id: &str) -> i64 {
    let id = uuid::Uuid::parse_str(tenant_id).unwrap();
    diesel::sql_query("SELECT count(*) AS n FROM emails WHERE tenant_id = $1")
        .bind::<diesel::sql_types::Uuid, _>(id)
        .get_result::<Count>(&mut app.sql_conn())
        .unwrap()
        .n
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn templated(n: usize) -> Value {
    let one =
        json!({"from": "a@big.test", "to": "b@example.com", "template": "big", "variables": {}});
    json!({ "emails": vec![one; n] })
}

#[tokio::test]
async fn a_batch_of_oversize_rendered_bodies_is_refused_and_nothing_is_stored() {
    let _heavy = super::HEAVY.lock().await;
    let app = TestApp::spawn_with(|s| s.limits.max_message_bytes = 64 * 1024).await;
    let (id, key) = tenant(&app, "Big", RW).await;
    // 100 KB rendered from a 20-byte template: over the 64 KiB message limit.
    let r = app
        .post(
            "/v1/templates",
            &key,
            json!({"name": "big", "subject": "s", "html": "{{ 'x' * 100000 }}"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app.post("/v1/emails/batch", &key, templated(100)).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(code(&r.json), "message_too_large", "{}", r.text);
    assert_eq!(r.json["errors"][0]["field"], "emails[0].html", "{}", r.text);
    assert!(r.text.contains("65536"), "names the limit: {}", r.text);
    assert_eq!(stored(&app, &id), 0);
}

#[tokio::test]
async fn a_request_cannot_render_more_than_it_could_carry() {
    let _heavy = super::HEAVY.lock().await;
    let app = TestApp::spawn().await;
    let (id, key) = tenant(&app, "Amplifier", RW).await;
    // 1.5 MB per message is allowed alone; 100 of them would be 150 MB in
    // memory and in the database from a 10 KB request.
    let r = app
        .post(
            "/v1/templates",
            &key,
            json!({"name": "big", "subject": "s", "html": "{{ 'x' * 1500000 }}"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app.post("/v1/emails/batch", &key, templated(100)).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(code(&r.json), "message_too_large", "{}", r.text);
    // 6 × 1.5 MB fit in 10 MiB; the 7th does not.
    assert_eq!(
        r.json["errors"][0]["field"], "emails[6].template",
        "{}",
        r.text
    );
    assert_eq!(stored(&app, &id), 0);
    // One such message alone is fine.
    let r = app.post("/v1/emails/batch", &key, templated(1)).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(stored(&app, &id), 1);
}

#[tokio::test]
async fn the_message_limit_counts_the_mime_encoding() {
    let app = TestApp::spawn_with(|s| {
        s.limits.max_message_bytes = 1024 * 1024;
        s.limits.max_attachments_total_bytes = 512 * 1024;
        s.limits.max_attachment_bytes = 512 * 1024;
    })
    .await;
    let (id, key) = tenant(&app, "Unicode", &["send"]).await;
    // 800 KiB of two-byte characters: under the 1 MiB limit as text, over
    // it once base64/quoted-printable encoded.
    let html = "é".repeat(400 * 1024);
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "a@u.test", "to": "b@example.com", "subject": "s", "html": html}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", &r.text[..r.text.len().min(500)]);
    assert_eq!(code(&r.json), "message_too_large");
    assert_eq!(r.json["errors"][0]["field"], "html");
    // As many ASCII bytes, in short lines, are 7bit and fit.
    let html = format!("{}\n", "a".repeat(99)).repeat(8 * 1024);
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "a@u.test", "to": "b@example.com", "subject": "s", "html": html}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", &r.text[..r.text.len().min(500)]);
    assert_eq!(stored(&app, &id), 1);
}

fn attachment(bytes: usize) -> Value {
    json!({"filename": "f.bin",
           "content": base64::engine::general_purpose::STANDARD.encode(vec![7u8; bytes])})
}

#[tokio::test]
async fn attachment_count_and_decoded_sizes_are_checked_at_their_bounds() {
    let app = TestApp::spawn_with(|s| {
        s.limits.max_attachments = 3;
        s.limits.max_attachment_bytes = 1000;
        s.limits.max_attachments_total_bytes = 1500;
    })
    .await;
    let (id, key) = tenant(&app, "Attacher", &["send"]).await;
    let send = |attachments: Vec<Value>| {
        let key = key.clone();
        let app = &app;
        async move {
            app.post(
                "/v1/emails",
                &key,
                json!({"from": "a@att.test", "to": "b@example.com", "subject": "s", "text": "t",
                       "attachments": attachments}),
            )
            .await
        }
    };
    // At the bounds: accepted.
    let r = send(vec![attachment(1000)]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let r = send(vec![attachment(500), attachment(500), attachment(500)]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    // One past each bound: refused, naming the field.
    let r = send(vec![attachment(1001)]).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.json["errors"][0]["field"], "attachments[0].content",
        "{}",
        r.text
    );
    let r = send(vec![attachment(1000), attachment(501)]).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["errors"][0]["field"], "attachments", "{}", r.text);
    let r = send(vec![attachment(1); 4]).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("at most 3 attachments"), "{}", r.text);
    assert_eq!(stored(&app, &id), 2);
}
