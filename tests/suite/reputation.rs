//! Tenant reputation (issue 25), end to end: the worker against the SMTP
//! sink, real DSNs and feedback reports from the repository's corpus sent
//! over SMTP to the real inbound listener (per-recipient VERP return
//! paths), the checker every second, every send path, signed webhooks.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::{json, Value};

use crate::bounces::{corpus, send, sent_to, smtp_send, wait_for, FBL, WAIT};
use crate::common::smtp_sink::SmtpSink;
use crate::common::webhook_receiver::Receiver;
use crate::common::TestApp;

mod cli;
mod console;
mod policy;

const PERMS: &[&str] = &[
    "send",
    "emails:read",
    "usage:read",
    "webhooks:write",
    "suppressions:read",
];

struct Setup {
    app: TestApp,
    sink: SmtpSink,
    inbound: postline::smtp_server::Server,
}

async fn setup(tweak: impl FnOnce(&mut postline::config::Settings)) -> Setup {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |s| {
        crate::bounces::settings(s);
        s.reputation.check_secs = 1;
        // A deferred message waits a minute unless something resumes it.
        s.delivery.retry_initial_ms = 60_000;
        s.delivery.retry_max_ms = 120_000;
        tweak(s);
    })
    .await;
    let inbound = postline::bounces::inbound::start(&app.state.settings, app.state.pool.clone())
        .await
        .unwrap()
        .expect("inbound.bind is set in tests");
    Setup { app, sink, inbound }
}

impl Setup {
    /// A tenant with `policy` and a key: (id, key).
    async fn tenant(&self, name: &str, policy: Value) -> (String, String) {
        let t = self.app.create_tenant(json!({"name": name})).await;
        let id = t["id"].as_str().unwrap().to_string();
        let r = self
            .app
            .patch(
                &format!("/v1/tenants/{id}"),
                &self.app.admin_key,
                json!({"reputation_policy": policy}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let key = self.app.tenant_key(&id, PERMS).await;
        (id, key)
    }

    async fn delivered(&self, key: &str, to: &str) -> String {
        let id = send(&self.app, key, json!(to)).await;
        wait_for(&self.app, key, &id, |e| e["status"] == "delivered").await;
        id
    }

    /// A corpus DSN saying `rcpt` failed hard, to its copy's return path.
    async fn hard_bounce(&self, rcpt: &str) {
        let (return_path, _) = sent_to(&self.sink, rcpt).await;
        let dsn = corpus("rfc3464-01.eml").replace("userunknown@bouncehammer.jp", rcpt);
        let codes = smtp_send(self.inbound.addr(), "", &[&return_path], &dsn).await;
        assert_eq!(codes.last(), Some(&250), "{codes:?}");
    }

    /// A feedback report quoting the copy sent to `rcpt` (its token in the
    /// attached message), to the FBL address.
    async fn feedback(&self, rcpt: &str, report: String) {
        let codes = smtp_send(self.inbound.addr(), "fbl@provider.example", &[FBL], &report).await;
        assert_eq!(codes.last(), Some(&250), "{codes:?}");
        let _ = rcpt;
    }

    async fn reputation(&self, key: &str) -> Value {
        let r = self.app.get("/v1/reputation", key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    async fn wait_status(&self, key: &str, status: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = self.reputation(key).await;
            if r["status"] == status {
                return r;
            }
            assert!(Instant::now() < deadline, "never {status}: {r}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn window(rep: &Value) -> (i64, i64, i64) {
    let w = &rep["windows"][0];
    (
        w["delivered"].as_i64().unwrap(),
        w["hard_bounced"].as_i64().unwrap(),
        w["complained"].as_i64().unwrap(),
    )
}

async fn smtp_submit(addr: std::net::SocketAddr, key: &str) -> String {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let client = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(addr.port())
        .credentials(Credentials::new("anyone".into(), key.into()))
        .authentication(vec![Mechanism::Plain])
        .timeout(Some(Duration::from_secs(15)))
        .build();
    let m = Message::builder()
        .from("noreply@acme.test".parse().unwrap())
        .to("smtp@example.org".parse().unwrap())
        .subject("Hi")
        .body("Hello".to_string())
        .unwrap();
    match client.send(m).await {
        Ok(r) => format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" ")),
        Err(e) => format!(
            "{} {e}",
            e.status().map(|c| c.to_string()).unwrap_or_default()
        ),
    }
}

fn signed_event(hooks: &[crate::common::webhook_receiver::Hook], kind: &str, tenant: &str) -> bool {
    hooks
        .iter()
        .any(|h| h.verified && h.body["type"] == kind && h.body["data"]["tenant_id"] == tenant)
}

#[tokio::test]
async fn a_tenant_crossing_the_bounce_threshold_is_paused_everywhere_until_reinstated() {
    let s = setup(|st| {
        st.submission.allow_plaintext_auth = true;
    })
    .await;
    let subm = postline::submission::start(&s.app.state)
        .await
        .unwrap()
        .expect("submission listener starts");
    let (a, key_a) = s.tenant("Acme", json!({"min_volume": 2})).await;
    let (b, key_b) = s.tenant("Bravo", json!({"min_volume": 2})).await;
    // The platform's endpoint and the tenant's own.
    let platform = Receiver::start().await;
    let r = s
        .app
        .post(
            "/v1/admin/webhooks",
            &s.app.admin_key,
            json!({"url": platform.url("/p"), "events": ["tenant.paused", "tenant.reinstated"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    platform.add_secret(r.json["secret"].as_str().unwrap());
    let own = Receiver::start().await;
    let r = s
        .app
        .post(
            "/v1/webhooks",
            &key_a,
            json!({"url": own.url("/a"), "events": ["tenant.paused"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    own.add_secret(r.json["secret"].as_str().unwrap());

    for i in 0..4 {
        s.delivered(&key_a, &format!("a{i}@example.org")).await;
    }
    s.delivered(&key_b, "b0@example.org").await;
    s.delivered(&key_b, "b1@example.org").await;
    // One message of A waits in the queue (deferred, next try in a minute).
    s.sink.script("slow@example.org", vec![451, 250]);
    let slow = send(&s.app, &key_a, json!("slow@example.org")).await;
    wait_for(&s.app, &key_a, &slow, |e| e["status"] == "deferred").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rep = s.reputation(&key_a).await;
    assert_eq!(rep["status"], "healthy", "{rep}");
    assert_eq!(window(&rep), (4, 0, 0), "{rep}");
    assert_eq!(rep["domains"][0]["name"], "acme.test", "{rep}");

    // The report that crosses: 1 of 4 hard-bounced = 25 % ≥ 8 %.
    // Probing sends are deferred (not delivered) so they do not dilute the rate.
    s.sink.script("probe@example.org", vec![451; 500]);
    let crossing = Instant::now();
    s.hard_bounce("a0@example.org").await;
    let refused = loop {
        let r = s
            .app
            .post(
                "/v1/emails",
                &key_a,
                json!({"from": "noreply@acme.test", "to": "probe@example.org", "subject": "Hi", "text": "x"}),
            )
            .await;
        if r.status == 403 {
            break r;
        }
        assert_eq!(r.status, 202, "{}", r.text);
        assert!(
            crossing.elapsed() < Duration::from_secs(5),
            "not paused within check_secs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "reputation: crossing report to first refused send: {:?}",
        crossing.elapsed()
    );
    assert_eq!(refused.json["code"], "tenant_paused", "{}", refused.text);
    let detail = refused.json["detail"].as_str().unwrap();
    assert!(
        detail.contains("25.00%") && detail.contains("8.00%"),
        "{detail}"
    );
    let rep = s.reputation(&key_a).await;
    assert_eq!(rep["status"], "paused");
    assert_eq!(window(&rep), (3, 1, 0), "{rep}");
    assert!(
        rep["reason"].as_str().unwrap().contains("bounce rate"),
        "{rep}"
    );
    assert!(rep["paused_at"].is_string());

    // Every send path refuses; reads still work.
    let batch = s
        .app
        .post(
            "/v1/emails/batch",
            &key_a,
            json!({"emails": [{"from": "noreply@acme.test", "to": "x@example.org", "subject": "Hi", "text": "x"}]}),
        )
        .await;
    assert_eq!(
        (batch.status, batch.json["code"].as_str()),
        (403, Some("tenant_paused")),
        "{}",
        batch.text
    );
    let resend = s
        .app
        .post(
            "/emails",
            &key_a,
            json!({"from": "noreply@acme.test", "to": "x@example.org", "subject": "Hi", "text": "x"}),
        )
        .await;
    assert_eq!(
        (resend.status, resend.json["name"].as_str()),
        (403, Some("tenant_paused")),
        "{}",
        resend.text
    );
    let postmark = s
        .app
        .client
        .post(format!("{}/email", s.app.address))
        .header("X-Postmark-Server-Token", &key_a)
        .json(&json!({"From": "noreply@acme.test", "To": "x@example.org", "Subject": "Hi", "TextBody": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(postmark.status().as_u16(), 422);
    let body: Value = postmark.json().await.unwrap();
    assert_eq!(body["ErrorCode"], 413, "{body}");
    let smtp = smtp_submit(subm.starttls.addr(), &key_a).await;
    assert!(smtp.starts_with("550") && smtp.contains("5.7.1"), "{smtp}");
    assert_eq!(s.app.get("/v1/emails", &key_a).await.status, 200);

    // The queued message is held; the other tenant sends on.
    wait_for(&s.app, &key_a, &slow, |e| e["status"] == "held").await;
    s.delivered(&key_b, "b2@example.org").await;
    assert_eq!(s.reputation(&key_b).await["status"], "healthy");

    // Signed webhooks to both endpoints; an audit entry by `system`.
    let hooks = platform
        .wait_until(WAIT, |h| signed_event(h, "tenant.paused", &a))
        .await;
    let h = hooks
        .iter()
        .find(|h| h.body["type"] == "tenant.paused")
        .unwrap();
    assert_eq!(h.body["data"]["status"], "paused");
    assert_eq!(h.body["data"]["windows"][0]["hard_bounced"], 1);
    own.wait_until(WAIT, |h| signed_event(h, "tenant.paused", &a))
        .await;
    assert!(!platform
        .received()
        .iter()
        .any(|h| h.body["data"]["tenant_id"] == b));
    let actors: Vec<String> = {
        use postline::db::schema::audit_log::dsl::*;
        audit_log
            .filter(action.eq("tenant.paused"))
            .select(actor_kind)
            .load(&mut s.app.sql_conn())
            .unwrap()
    };
    assert_eq!(actors, vec!["system".to_string()]);

    // The admin view and listing.
    let r = s
        .app
        .get(&format!("/v1/tenants/{a}/reputation"), &s.app.admin_key)
        .await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (200, Some("paused")),
        "{}",
        r.text
    );
    let r = s
        .app
        .get("/v1/admin/reputation?status=paused", &s.app.admin_key)
        .await;
    let listed: Vec<&str> = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["tenant_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![a.as_str()], "{}", r.text);

    // The tenant's own console says why; the admin's tenant page too, with
    // the reinstate button.
    use crate::console::{csrf_of, get as page, post as form, sign_in, user};
    use postline::console::users::Role;
    user(&s.app, "owner@acme.test", Role::Owner, Some(&a)).await;
    let (owner, _) = sign_in(&s.app, "owner@acme.test", &[]).await;
    let (status, html, _) = page(&s.app, &owner, "/console/keys").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("id=\"reputation-paused\"") && html.contains("bounce rate 25.00%"),
        "{html}"
    );
    user(&s.app, "admin@platform.test", Role::Admin, None).await;
    let (admin, _) = sign_in(&s.app, "admin@platform.test", &[]).await;
    let (_, html, _) = page(&s.app, &admin, &format!("/console/tenants/{a}")).await;
    assert!(
        html.contains("id=\"reputation-reason\"") && html.contains("id=\"reinstate\""),
        "{html}"
    );
    let (_, html, _) = page(&s.app, &admin, &format!("/console/tenants/{b}")).await;
    assert!(!html.contains("id=\"reinstate\""), "{html}");
    // Without the CSRF token: refused, still paused.
    let (status, _) = form(
        &s.app,
        &admin,
        &format!("/console/tenants/{a}"),
        &[("action", "reinstate")],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(s.reputation(&key_a).await["status"], "paused");

    // Reinstated (the API; the console button below): held mail resumes,
    // figures restart, no new pause.
    let r = s
        .app
        .post(
            &format!("/v1/tenants/{a}/reinstate"),
            &s.app.admin_key,
            json!({"note": "list cleaned"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (_, html, _) = page(&s.app, &owner, "/console/keys").await;
    assert!(!html.contains("id=\"reputation-paused\""), "{html}");
    assert_eq!(r.json["status"], "healthy");
    assert!(r.json["reinstated_at"].is_string());
    assert_eq!(window(&r.json), (0, 0, 0), "{}", r.text);
    wait_for(&s.app, &key_a, &slow, |e| e["status"] == "delivered").await;
    platform
        .wait_until(WAIT, |h| signed_event(h, "tenant.reinstated", &a))
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(s.reputation(&key_a).await["status"], "healthy");
    s.delivered(&key_a, "again@example.org").await;
    let rep = s.reputation(&key_a).await;
    assert_eq!(window(&rep), (2, 0, 0), "slow and again: {rep}");
    assert_eq!(rep["daily"].as_array().unwrap().len(), 30);
    assert_eq!(
        rep["daily"][29]["hard_bounced"], 1,
        "the day keeps its figures: {rep}"
    );
    // The console's reinstate button works too (CSRF token of the page).
    let (_, html, _) = page(&s.app, &admin, &format!("/console/tenants/{a}")).await;
    let csrf = csrf_of(&html);
    let (status, _) = form(
        &s.app,
        &admin,
        &format!("/console/tenants/{a}"),
        &[("csrf", &csrf), ("action", "reinstate")],
    )
    .await;
    assert_eq!(status, 303);
    let reinstated: Vec<String> = {
        use postline::db::schema::audit_log::dsl::*;
        audit_log
            .filter(action.eq("tenant.reinstated"))
            .select(actor_kind)
            .order(at)
            .load(&mut s.app.sql_conn())
            .unwrap()
    };
    assert_eq!(
        reinstated,
        vec!["admin_key".to_string(), "user".to_string()]
    );
}

#[tokio::test]
async fn monitor_mode_only_warns_and_below_min_volume_nothing_is_decided() {
    let s = setup(|_| {}).await;
    let (m, key_m) = s
        .tenant("Monitored", json!({"mode": "monitor", "min_volume": 1}))
        .await;
    let (_, key_l) = s.tenant("Little", json!({"min_volume": 1000})).await;
    let rx = Receiver::start().await;
    let r = s
        .app
        .post(
            "/v1/webhooks",
            &key_m,
            json!({"url": rx.url("/m"), "events": ["tenant.reputation_warning", "tenant.paused"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    rx.add_secret(r.json["secret"].as_str().unwrap());
    for (key, p) in [(&key_m, "m"), (&key_l, "l")] {
        s.delivered(key, &format!("{p}0@example.org")).await;
        s.delivered(key, &format!("{p}1@example.org")).await;
        s.hard_bounce(&format!("{p}0@example.org")).await;
    }
    let rep = s.wait_status(&key_m, "warning").await;
    assert!(
        rep["reason"].as_str().unwrap().contains("pause threshold"),
        "{rep}"
    );
    rx.wait_until(WAIT, |h| signed_event(h, "tenant.reputation_warning", &m))
        .await;
    s.delivered(&key_m, "m2@example.org").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(s.reputation(&key_m).await["status"], "warning");
    assert!(!rx
        .received()
        .iter()
        .any(|h| h.body["type"] == "tenant.paused"));
    let little = s.reputation(&key_l).await;
    assert_eq!(little["status"], "healthy", "{little}");
    assert_eq!(window(&little), (1, 1, 0), "{little}");
    let r = s.app.get("/v1/admin/reputation", &s.app.admin_key).await;
    assert_eq!(r.json["data"].as_array().unwrap().len(), 1, "{}", r.text);
    assert_eq!(r.json["data"][0]["tenant_id"], m.as_str());
    let r = s
        .app
        .get("/v1/admin/reputation?status=bogus", &s.app.admin_key)
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
}

#[tokio::test]
async fn a_jmrp_report_counts_as_a_complaint_and_a_dmarc_failure_report_does_not() {
    let s = setup(|_| {}).await;
    let (_, key) = s.tenant("Fbl", json!({"mode": "off"})).await;
    s.delivered(&key, "kijitora@example.com").await;
    s.delivered(&key, "dmarc@example.org").await;
    // Microsoft JMRP: the complained message attached, no feedback-report part.
    let (_, token) = sent_to(&s.sink, "kijitora@example.com").await;
    let jmrp = corpus("arf-22.eml").replace(
        "X-HmXmrOriginalRecipient: kijitora@example.com\n",
        &format!("X-HmXmrOriginalRecipient: kijitora@example.com\nX-Postline-ID: {token}\n"),
    );
    assert!(jmrp.contains(&token));
    s.feedback("kijitora@example.com", jmrp).await;
    // A DMARC failure report (Feedback-Type: auth-failure) about the other copy.
    let (_, token) = sent_to(&s.sink, "dmarc@example.org").await;
    let auth =
        corpus("arf-20.eml").replacen("\nFrom: ", &format!("\nX-Postline-ID: {token}\nFrom: "), 2);
    assert!(auth.matches(&token).count() >= 1);
    s.feedback("dmarc@example.org", auth).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let rep = s.reputation(&key).await;
        if window(&rep).2 == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the JMRP report never counted: {rep}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rep = s.reputation(&key).await;
    assert_eq!(window(&rep), (2, 0, 1), "{rep}");
    let suppressed: Vec<(String, String)> = crate::bounces::suppressions(&s.app);
    assert_eq!(
        suppressed,
        vec![("kijitora@example.com".to_string(), "complaint".to_string())]
    );
}
