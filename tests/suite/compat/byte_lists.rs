//! Issue 22, finding 11: byte lists (Resend's `content` as numbers) are
//! read straight into bytes; a value that is not a byte, or a list longer
//! than `limits.max_attachment_bytes`, is Resend's 422 naming the place, and
//! nothing is queued.

use serde_json::{json, Value};

use super::{FROM, TO};
use crate::common::TestApp;

#[tokio::test]
async fn bad_byte_values_and_long_lists_are_a_clear_422() {
    let app = TestApp::spawn_with(|s| s.limits.max_attachment_bytes = 1000).await;
    let t = app.create_tenant(json!({"name": "Bytes"})).await;
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let with = |content: Value| {
        json!({"from": FROM, "to": TO, "subject": "s", "text": "t",
               "attachments": [{"filename": "f.bin", "content": content}]})
    };
    let byte = "must be a whole number from 0 to 255";
    for (content, names) in [
        (
            json!([1, 256]),
            format!("attachments[0].content[1]: {byte}, not the number 256"),
        ),
        (
            json!([1.5]),
            format!("attachments[0].content[0]: {byte}, not the number 1.5"),
        ),
        (
            json!([-1]),
            format!("attachments[0].content[0]: {byte}, not the number -1"),
        ),
        (
            json!(["7"]),
            format!("attachments[0].content[0]: {byte}, not a string"),
        ),
        (
            json!({"type": "Buffer", "data": [0, 999]}),
            format!("attachments[0].content.data[1]: {byte}, not the number 999"),
        ),
        (
            json!(vec![7u8; 1001]),
            "attachments[0].content: holds more than 1000 bytes; at most 1000 per attachment"
                .to_string(),
        ),
    ] {
        let r = app.post("/emails", &key, with(content)).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.json["name"], "validation_error", "{}", r.text);
        assert_eq!(r.json["message"], names.as_str(), "{}", r.text);
        let r = app
            .post(
                "/emails/batch",
                &key,
                json!([with(json!([1])), with(json!([300]))]),
            )
            .await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(
            r.json["message"]
                .as_str()
                .unwrap()
                .starts_with("emails[1].attachments[0].content[0]: "),
            "{}",
            r.text
        );
    }
    let r = app.get("/emails", &key).await;
    assert_eq!(
        r.json["data"].as_array().map(Vec::len),
        Some(0),
        "{}",
        r.text
    );
    // At the bound: 1000 bytes are sent, as base64.
    let r = app
        .post("/emails", &key, with(json!(vec![255u8; 1000])))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
