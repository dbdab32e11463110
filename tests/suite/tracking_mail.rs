//! Which messages are rewritten and how (issue 29): tracking off leaves the
//! message byte for byte as it was built before tracking existed; the
//! tenant's default and the per-message choice; the sending domain's own
//! tracking host once its record checks; Postmark's `TrackOpens` /
//! `TrackLinks` and Resend's tracking flags through the official SDKs.

use std::time::Duration;

use postline::domain::TenantId;
use serde_json::json;

use crate::common::TestApp;
use crate::tracking::{hrefs, mail, part, pixel, setup, BASE};

const WAIT: Duration = Duration::from_secs(20);

/// A message without its Date line and with its boundaries named `B`:
/// what stays the same between two builds of one row.
fn normalised(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out: String = text
        .split("\r\n")
        .filter(|l| !l.starts_with("Date:") && !l.starts_with("X-Postline-ID:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    while let Some(at) = out.find("boundary=\"") {
        let start = at + "boundary=\"".len();
        let end = start + out[start..].find('"').unwrap();
        let b = out[start..end].to_string();
        out = out
            .replace(&b, "B")
            .replacen("boundary=\"B\"", "boundary=B", 1);
    }
    out
}

/// The message as `emails::mime::build` makes it from the stored row,
/// the DKIM signature the worker adds left aside.
fn built(app: &TestApp, tenant: &str, id: &str) -> Vec<u8> {
    let row = postline::emails::model::find(
        &mut app.sql_conn(),
        TenantId(tenant.parse().unwrap()),
        id.parse().unwrap(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(row.track, 0);
    postline::emails::mime::build(row).unwrap()
}

fn unsigned(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let Some(rest) = text.strip_prefix("DKIM-Signature:") else {
        return raw.to_vec();
    };
    // The signature header and its continuation lines.
    let mut lines = rest.split("\r\n");
    lines.next();
    let body: Vec<&str> = lines
        .skip_while(|l| l.starts_with(' ') || l.starts_with('\t'))
        .collect();
    body.join("\r\n").into_bytes()
}

#[tokio::test]
async fn off_is_byte_identical_and_the_tenant_default_yields_to_the_message() {
    let s = setup(|_| {}).await;
    // The tenant's default: opens and clicks on.
    let p = s
        .app
        .patch(
            &format!("/v1/tenants/{}", s.tenant),
            &s.app.admin_key,
            json!({"settings": {"tracking": {"opens": true, "clicks": true}}}),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.json["settings"]["tracking"]["opens"], true, "{}", p.text);
    let off = s
        .app
        .post(
            "/v1/emails",
            &s.key,
            mail(json!({"opens": false, "clicks": false})),
        )
        .await;
    assert_eq!(off.status, 202, "{}", off.text);
    let got = s.sink.wait_for(1, WAIT).await;
    let sent = unsigned(&got[0].data);
    let id = off.json["id"].as_str().unwrap();
    assert_eq!(normalised(&sent), normalised(&built(&s.app, &s.tenant, id)));
    assert!(!String::from_utf8_lossy(&sent).contains("/c/"));

    // No `track` in the body: the tenant's default applies.
    let mut body = mail(json!(null));
    body.as_object_mut().unwrap().remove("track");
    let on = s.app.post("/v1/emails", &s.key, body.clone()).await;
    assert_eq!(on.status, 202, "{}", on.text);
    let got = s.sink.wait_for(2, WAIT).await;
    let h = part(&got[1].text(), "text/html");
    assert!(
        pixel(&h).is_some() && hrefs(&h)[0].starts_with(&format!("{BASE}/c/")),
        "{h}"
    );

    // The default cleared: off again, and the message untouched.
    let p = s
        .app
        .patch(
            &format!("/v1/tenants/{}", s.tenant),
            &s.app.admin_key,
            json!({"settings": {"tracking": null}}),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.text);
    let plain = s.app.post("/v1/emails", &s.key, body).await;
    let got = s.sink.wait_for(3, WAIT).await;
    let id = plain.json["id"].as_str().unwrap();
    assert_eq!(
        normalised(&unsigned(&got[2].data)),
        normalised(&built(&s.app, &s.tenant, id))
    );
    // A `track` that is not the contract's shape is a 422 naming it.
    let bad = s
        .app
        .post("/v1/emails", &s.key, mail(json!({"opens": "yes"})))
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("track"), "{}", bad.text);
}

#[tokio::test]
async fn the_sending_domain_tracking_host_is_used_once_its_record_checks() {
    let s = setup(|s| s.tracking.domain = "tracking.platform.test".into()).await;
    let d = s.app.get("/v1/domains/acme.test", &s.key).await;
    let rec = d.json["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == "tracking")
        .cloned()
        .expect("a tracking record is listed");
    assert_eq!(rec["type"], "CNAME");
    assert_eq!(rec["name"], "track.acme.test");
    assert_eq!(rec["value"], "tracking.platform.test");
    assert_eq!(rec["required"], false);
    // Not published yet: links use tracking.public_url.
    let track = json!({"opens": true, "clicks": true});
    s.app.post("/v1/emails", &s.key, mail(track.clone())).await;
    let got = s.sink.wait_for(1, WAIT).await;
    assert!(hrefs(&part(&got[0].text(), "text/html"))[0].starts_with(&format!("{BASE}/c/")));
    let verify = || async {
        let v = s
            .app
            .post("/v1/domains/acme.test/verify", &s.key, json!({}))
            .await;
        v.json["records"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", v.text))
            .iter()
            .find(|r| r["purpose"] == "tracking")
            .unwrap()["status"]
            .clone()
    };
    // A CNAME to somewhere else: a mismatch, and still tracking.public_url.
    s.dns
        .add_cname("track.acme.test", "tracking.elsewhere.test");
    assert_eq!(verify().await, "mismatch");
    tokio::time::sleep(Duration::from_millis(1100)).await; // domains.cache_secs
    s.app.post("/v1/emails", &s.key, mail(track.clone())).await;
    let got = s.sink.wait_for(2, WAIT).await;
    assert!(hrefs(&part(&got[1].text(), "text/html"))[0].starts_with(&format!("{BASE}/c/")));
    // Published as asked and checked: the domain's own host.
    s.dns.remove("track.acme.test");
    s.dns.add_cname("track.acme.test", "tracking.platform.test");
    assert_eq!(verify().await, "ok");
    tokio::time::sleep(Duration::from_millis(1100)).await; // domains.cache_secs
    s.app.post("/v1/emails", &s.key, mail(track)).await;
    let got = s.sink.wait_for(3, WAIT).await;
    let h = part(&got[2].text(), "text/html");
    assert!(
        hrefs(&h)[0].starts_with("https://track.acme.test/c/"),
        "{h}"
    );
    assert!(h.contains("src=\"https://track.acme.test/o/"), "{h}");
}

#[tokio::test]
async fn postmark_and_resend_sdk_flags_are_honoured() {
    if !crate::compat::python_ready() {
        return;
    }
    let s = setup(|_| {}).await;
    let env = vec![
        ("KEY", s.key.clone()),
        ("FROM", "Acme <hello@acme.test>".to_string()),
        ("TO", "rcpt@example.org".to_string()),
        ("POSTLINE_URL", s.app.address.clone()),
        ("RESEND_API_URL", format!("{}/", s.app.address)),
    ];
    let out = crate::compat::drive("python3", "tracking_sdk.py", &env).await;
    assert_eq!(out["pm_text"]["ErrorCode"], 0, "{out}");
    assert!(out["resend"]["id"].is_string(), "{out}");
    assert_eq!(out["pm_bad"]["status"], 422, "{out}");
    assert_eq!(out["pm_bad"]["body"]["ErrorCode"], 300, "{out}");
    let why = out["pm_bad"]["body"]["Message"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("TrackLinks"), "{out}");
    let got = s.sink.wait_for(5, WAIT).await;
    assert_eq!(got.len(), 5, "the refused one was not sent");
    let by = |subject: &str| {
        let m = got
            .iter()
            .find(|m| m.text().contains(&format!("Subject: {subject}")))
            .unwrap_or_else(|| panic!("{subject}"));
        let t = m.text();
        (part(&t, "text/html"), part(&t, "text/plain"))
    };
    let tracked = |s: &str| s.contains(&format!("{BASE}/c/"));
    // TrackOpens + TextOnly: the pixel, text links only.
    let (h, t) = by("pm text");
    assert!(
        pixel(&h).is_some() && !tracked(&h) && tracked(&t),
        "{h}\n{t}"
    );
    // TrackLinks None, TrackOpens false: untouched.
    let (h, t) = by("pm none");
    assert!(pixel(&h).is_none() && !tracked(&h) && !tracked(&t));
    // HtmlOnly without TrackOpens: HTML links only, no pixel.
    let (h, t) = by("pm html");
    assert!(
        pixel(&h).is_none() && tracked(&h) && !tracked(&t),
        "{h}\n{t}"
    );
    // HtmlAndText in a batch: both parts' links, no pixel.
    let (h, t) = by("pm batch");
    assert!(
        pixel(&h).is_none() && tracked(&h) && tracked(&t),
        "{h}\n{t}"
    );
    // Resend's open_tracking / click_tracking: pixel and HTML links.
    let (h, t) = by("resend tracked");
    assert!(
        pixel(&h).is_some() && tracked(&h) && !tracked(&t),
        "{h}\n{t}"
    );
}
