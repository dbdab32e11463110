//! Inbound mail for tenants (issue 28), over real sockets: Python's
//! `smtplib` delivers to the real listener, the loopback DNS server answers
//! SPF/DKIM/DMARC lookups, the webhook receiver checks signatures, the API
//! reads what was stored.

use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use diesel::prelude::*;
use serde_json::{json, Value};

use crate::common::dns_server::DnsServer;
use crate::common::smtp_sink::SmtpSink;
use crate::common::webhook_receiver::{Hook, Receiver};
use crate::common::TestApp;

pub const WAIT: Duration = Duration::from_secs(20);
pub const PERMS: &[&str] = &[
    "send",
    "emails:read",
    "inbound:read",
    "inbound:write",
    "webhooks:write",
    "domains:read",
    "domains:write",
];

pub struct World {
    pub app: TestApp,
    pub dns: DnsServer,
    pub rx: Receiver,
    pub _sink: SmtpSink,
    pub inbound: postline::smtp_server::Server,
    pub key: String,
    pub hook: String,
}

pub async fn world_with(tweak: impl FnOnce(&mut postline::config::Settings)) -> World {
    let dns = DnsServer::start().await;
    let rx = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let ns = dns.nameserver();
    let app = TestApp::spawn_serving(sink.port(), move |s| {
        s.dns.nameservers = vec![ns];
        s.bounces.domain = "bounces.postline.test".into();
        s.domains.cache_secs = 1;
        s.webhooks.retry_initial_ms = 100;
        s.inbound.mx_host = "mx.postline.test".into();
        tweak(s);
    })
    .await;
    let inbound = postline::bounces::inbound::start(&app.state.settings, app.state.pool.clone())
        .await
        .unwrap()
        .expect("inbound.bind is set in tests");
    let (key, hook) = tenant(&app, &dns, &rx, "acme.test").await;
    World {
        app,
        dns,
        rx,
        _sink: sink,
        inbound,
        key,
        hook,
    }
}

/// A tenant with `domain` verified and a webhook endpoint: (key, endpoint id).
pub async fn tenant(
    app: &crate::common::Api,
    dns: &DnsServer,
    rx: &Receiver,
    domain: &str,
) -> (String, String) {
    let t = app.create_tenant(json!({"name": domain})).await;
    let key = app.tenant_key(t["id"].as_str().unwrap(), PERMS).await;
    crate::domains::verified_domain(app, dns, &key, json!({"name": domain})).await;
    let hook = app
        .post(
            "/v1/webhooks",
            &key,
            json!({"url": rx.url(&format!("/{domain}")), "events": ["email.received"]}),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    rx.add_secret(hook.json["secret"].as_str().unwrap());
    (key, hook.json["id"].as_str().unwrap().to_string())
}

pub async fn route(w: &World, body: Value) -> Value {
    let r = w.app.post("/v1/inbound/routes", &w.key, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json
}

/// A MIME message; attachments base64 in 76-column lines.
pub fn message(
    from: &str,
    to: &str,
    subject: &str,
    text: &str,
    extra: &str,
    files: &[(&str, &str, Vec<u8>)],
) -> Vec<u8> {
    let mut m = format!(
        "From: Sender <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{}@sender.test>\r\nMIME-Version: 1.0\r\n{extra}",
        uuid::Uuid::new_v4().simple()
    );
    if files.is_empty() {
        m.push_str(&format!(
            "Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
        ));
        return m.into_bytes();
    }
    m.push_str("Content-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n--BOUNDARY\r\n");
    m.push_str(&format!(
        "Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    ));
    for (name, ctype, bytes) in files {
        m.push_str(&format!(
            "--BOUNDARY\r\nContent-Type: {ctype}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        ));
        let b = B64.encode(bytes);
        for line in b.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(line).unwrap());
            m.push_str("\r\n");
        }
    }
    m.push_str("--BOUNDARY--\r\n");
    m.into_bytes()
}

const SMTPLIB: &str = r#"
import json, smtplib, sys
port, sender, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rcpts = sys.argv[4:]
data = open(path, "rb").read()
out = {"rcpt": [], "data": None}
with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
    s.ehlo("client.sender.test")
    s.mail(sender)
    ok = False
    for r in rcpts:
        code, msg = s.rcpt(r)
        out["rcpt"].append([code, msg.decode()])
        ok = ok or code == 250
    if ok:
        code, msg = s.data(data)
        out["data"] = [code, msg.decode()]
    else:
        s.rset()
print(json.dumps(out))
"#;

/// Delivers `msg` with Python's smtplib: `{"rcpt": [[code, text]…], "data": [code, text] | null}`.
pub async fn smtplib(addr: SocketAddr, from: &str, rcpts: &[&str], msg: &[u8]) -> Value {
    let path = std::env::temp_dir().join(format!("pl-inbound-{}.eml", uuid::Uuid::new_v4()));
    std::fs::write(&path, msg).unwrap();
    let mut args = vec![
        "-c".to_string(),
        SMTPLIB.to_string(),
        addr.port().to_string(),
        from.to_string(),
        path.display().to_string(),
    ];
    args.extend(rcpts.iter().map(|r| r.to_string()));
    let out = tokio::process::Command::new("python3")
        .args(&args)
        .output()
        .await
        .expect("python3 runs");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "smtplib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub async fn hooks_at(rx: &Receiver, path: &str, n: usize) -> Vec<Hook> {
    let p = path.to_string();
    rx.wait_until(WAIT, |h| h.iter().filter(|x| x.path == p).count() >= n)
        .await
        .into_iter()
        .filter(|x| x.path == path)
        .collect()
}

fn stored(app: &TestApp) -> i64 {
    use postline::db::schema::inbound_messages::dsl::*;
    inbound_messages
        .count()
        .get_result(&mut app.sql_conn())
        .unwrap()
}

#[tokio::test]
async fn routed_mail_reaches_the_webhook_signed_and_parsed_with_attachments() {
    let w = world_with(|_| {}).await;
    let r = route(
        &w,
        json!({"match": "support@acme.test", "action": "webhook", "webhook_id": w.hook}),
    )
    .await;
    assert_eq!(r["match"], "support@acme.test");
    let small = b"small file\n".to_vec();
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let msg = message(
        "alice@sender.test",
        "support@acme.test",
        "Help please",
        "My order is late.\r\n\r\nOn Sat, 5 Dec 2026, Acme <support@acme.test> wrote:\r\n> earlier text\r\n",
        "",
        &[("note.txt", "text/plain", small.clone()), ("big.bin", "application/octet-stream", big.clone())],
    );
    let out = smtplib(
        w.inbound.addr(),
        "alice@sender.test",
        &["support@acme.test"],
        &msg,
    )
    .await;
    assert_eq!(out["rcpt"][0][0], 250, "{out}");
    assert_eq!(out["data"][0], 250, "{out}");

    let h = hooks_at(&w.rx, "/acme.test", 1).await;
    assert!(h[0].verified, "signed with the endpoint's secret");
    let b = &h[0].body;
    assert_eq!(b["type"], "email.received");
    let d = &b["data"];
    assert_eq!(d["subject"], "Help please");
    assert_eq!(d["from"], "alice@sender.test");
    assert_eq!(d["to"], json!(["support@acme.test"]));
    assert_eq!(d["stripped_text_reply"], "My order is late.");
    assert!(d["text"].as_str().unwrap().contains("earlier text"));
    let atts = d["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2);
    assert_eq!(atts[0]["filename"], "note.txt");
    assert_eq!(
        B64.decode(atts[0]["content"].as_str().unwrap()).unwrap(),
        small
    );
    assert_eq!(atts[1]["size"], big.len());
    assert!(
        atts[1].get("content").is_none(),
        "3 MiB is listed, not inlined"
    );

    let id = d["id"].as_str().unwrap();
    let got = w.app.get(&format!("/v1/inbound/{id}"), &w.key).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json["route_id"], r["id"]);
    // The dispatcher records the 2xx: the message is delivered.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let g = w.app.get(&format!("/v1/inbound/{id}"), &w.key).await;
        if g.json["status"] == "delivered" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", g.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let file = w
        .app
        .client
        .get(format!("{}/v1/inbound/{id}/attachments/1", w.app.address))
        .bearer_auth(&w.key)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        file.bytes().await.unwrap().to_vec(),
        big,
        "downloadable as sent"
    );
    let raw = w
        .app
        .client
        .get(format!("{}/v1/inbound/{id}/raw", w.app.address))
        .bearer_auth(&w.key)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    assert!(String::from_utf8_lossy(&raw.bytes().await.unwrap()).contains("Subject: Help please"));
    let missing = w
        .app
        .get(&format!("/v1/inbound/{id}/attachments/2"), &w.key)
        .await;
    assert_eq!(missing.status, 404);

    // Listing and its filters.
    let l = w.app.get("/v1/inbound?to=support@acme.test", &w.key).await;
    assert_eq!(l.json["data"].as_array().unwrap().len(), 1, "{}", l.text);
    let l = w
        .app
        .get("/v1/inbound?from=nobody@sender.test", &w.key)
        .await;
    assert_eq!(l.json["data"].as_array().unwrap().len(), 0, "{}", l.text);
    let l = w
        .app
        .get(
            &format!("/v1/inbound?route_id={}", r["id"].as_str().unwrap()),
            &w.key,
        )
        .await;
    assert_eq!(l.json["data"].as_array().unwrap().len(), 1, "{}", l.text);
    let l = w
        .app
        .get("/v1/inbound?after=2999-01-01T00:00:00Z", &w.key)
        .await;
    assert_eq!(l.json["data"].as_array().unwrap().len(), 0, "{}", l.text);
    assert_eq!(
        w.app
            .get("/v1/inbound?after=yesterday", &w.key)
            .await
            .status,
        422
    );

    // The domain now lists its inbound MX record.
    let dom = w.app.get("/v1/domains/acme.test", &w.key).await;
    let mx: Vec<&Value> = dom.json["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["purpose"] == "inbound")
        .collect();
    assert_eq!(mx.len(), 1, "{}", dom.text);
    assert_eq!(mx[0]["type"], "MX");
    assert_eq!(mx[0]["value"], "10 mx.postline.test");
    assert_eq!(mx[0]["required"], false);
}

#[tokio::test]
async fn only_routed_addresses_are_accepted_never_a_relay() {
    let w = world_with(|_| {}).await;
    let (other_key, other_hook) = tenant(&w.app, &w.dns, &w.rx, "other.test").await;
    route(&w, json!({"match": "support@acme.test", "action": "hold"})).await;
    route(&w, json!({"match": "spam@acme.test", "action": "reject"})).await;
    let msg = message("a@sender.test", "x@acme.test", "s", "t", "", &[]);
    for rcpt in [
        "nobody@acme.test",       // no route for that address
        "support@other.test",     // another tenant's domain, no route there
        "someone@example.org",    // nobody's: never relayed
        "support@acme.test.evil", // look-alike
    ] {
        let out = smtplib(w.inbound.addr(), "a@sender.test", &[rcpt], &msg).await;
        assert_eq!(out["rcpt"][0][0], 550, "{rcpt}: {out}");
        assert!(
            out["rcpt"][0][1].as_str().unwrap().starts_with("5.1.1"),
            "{out}"
        );
    }
    let out = smtplib(w.inbound.addr(), "a@sender.test", &["spam@acme.test"], &msg).await;
    assert_eq!(
        out["rcpt"][0][0], 550,
        "a reject route refuses in the session: {out}"
    );
    assert_eq!(stored(&w.app), 0, "nothing stored");

    // The routes API: verified domains only, own endpoints only.
    let bad = w
        .app
        .post(
            "/v1/inbound/routes",
            &w.key,
            json!({"match": "a@unverified.test", "action": "hold"}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert_eq!(bad.json["code"], "domain_not_verified");
    let theirs = w
        .app
        .post(
            "/v1/inbound/routes",
            &w.key,
            json!({"match": "*@other.test", "action": "hold"}),
        )
        .await;
    assert_eq!(
        theirs.json["code"], "domain_not_verified",
        "{}",
        theirs.text
    );
    let hook = w
        .app
        .post(
            "/v1/inbound/routes",
            &w.key,
            json!({"match": "x@acme.test", "action": "webhook", "webhook_id": other_hook}),
        )
        .await;
    assert_eq!(hook.status, 422, "{}", hook.text);
    let none = w
        .app
        .post(
            "/v1/inbound/routes",
            &w.key,
            json!({"match": "x@acme.test", "action": "webhook"}),
        )
        .await;
    assert_eq!(none.status, 422, "{}", none.text);
    let plus = w
        .app
        .post(
            "/v1/inbound/routes",
            &w.key,
            json!({"match": "x+y@acme.test", "action": "hold"}),
        )
        .await;
    assert_eq!(plus.status, 422, "{}", plus.text);
    let act = w
        .app
        .post(
            "/v1/inbound/routes",
            &w.key,
            json!({"match": "x@acme.test", "action": "bounce"}),
        )
        .await;
    assert_eq!(act.status, 422, "{}", act.text);
    let sub = w
        .app
        .post(
            "/v1/inbound/routes",
            &w.key,
            json!({"match": "*@reply.acme.test", "action": "hold"}),
        )
        .await;
    assert_eq!(
        sub.status, 201,
        "a subdomain of a verified domain: {}",
        sub.text
    );
    let dup = w
        .app
        .post(
            "/v1/inbound/routes",
            &w.key,
            json!({"match": "SUPPORT@acme.test", "action": "hold"}),
        )
        .await;
    assert_eq!(dup.status, 409, "{}", dup.text);
    let list = w.app.get("/v1/inbound/routes", &w.key).await;
    assert_eq!(
        list.json["data"].as_array().unwrap().len(),
        3,
        "{}",
        list.text
    );
    let _ = other_key;
}

#[tokio::test]
async fn dkim_signed_with_a_published_key_passes_and_fails_when_tampered() {
    use postline::domains::keys::{generate, Algorithm};
    use postline::domains::signing::{sign_with, LoadedKey};
    let w = world_with(|_| {}).await;
    route(&w, json!({"match": "*@acme.test", "action": "hold"})).await;
    let kp = generate(Algorithm::Ed25519Sha256).unwrap();
    w.dns.add_txt(
        "sel._domainkey.sender.test",
        &format!("v=DKIM1; k=ed25519; p={}", kp.public_b64),
    );
    w.dns.add_txt("sender.test", "v=spf1 ip4:127.0.0.1 -all");
    w.dns.add_txt("_dmarc.sender.test", "v=DMARC1; p=reject");
    let key = LoadedKey::new(Algorithm::Ed25519Sha256, &kp.pkcs8, "sender.test", "sel").unwrap();
    let plain = message(
        "bob@sender.test",
        "desk@acme.test",
        "Signed",
        "hello",
        "",
        &[],
    );
    let signed = sign_with(&[key], plain).unwrap();
    let tampered = String::from_utf8(signed.clone())
        .unwrap()
        .replace("Subject: Signed", "Subject: Changed")
        .into_bytes();

    for (msg, want_dkim, want_dmarc) in [(&signed, "pass", "pass"), (&tampered, "fail", "pass")] {
        let out = smtplib(
            w.inbound.addr(),
            "bob@sender.test",
            &["desk@acme.test"],
            msg,
        )
        .await;
        assert_eq!(out["data"][0], 250, "{out}");
        let l = w.app.get("/v1/inbound?limit=1", &w.key).await;
        let m = &l.json["data"][0];
        assert_eq!(m["status"], "held");
        assert_eq!(m["auth"]["dkim"], want_dkim, "{m}");
        assert_eq!(m["auth"]["spf"], "pass", "{m}");
        // SPF passes aligned, so DMARC passes either way.
        assert_eq!(m["auth"]["dmarc"], want_dmarc, "{m}");
    }
    // From an address SPF does not allow and unsigned: both fail.
    w.dns.remove("sender.test");
    w.dns.add_txt("sender.test", "v=spf1 -all");
    let plain = message(
        "bob@sender.test",
        "desk@acme.test",
        "Unsigned",
        "hello",
        "",
        &[],
    );
    let out = smtplib(
        w.inbound.addr(),
        "bob@sender.test",
        &["desk@acme.test"],
        &plain,
    )
    .await;
    assert_eq!(out["data"][0], 250, "{out}");
    let l = w.app.get("/v1/inbound?limit=1", &w.key).await;
    let m = &l.json["data"][0];
    assert_eq!(m["subject"], "Unsigned");
    assert_eq!(m["auth"]["spf"], "fail", "{m}");
    assert_eq!(m["auth"]["dkim"], "none", "{m}");
    assert_eq!(m["auth"]["dmarc"], "fail", "{m}");
}

#[tokio::test]
async fn a_reply_is_linked_plus_hash_kept_and_postmark_format_posted() {
    let w = world_with(|_| {}).await;
    let sent = w
        .app
        .post(
            "/v1/emails",
            &w.key,
            json!({"from": "noreply@acme.test", "to": "carol@sender.test", "subject": "Your ticket", "text": "t"}),
        )
        .await;
    assert_eq!(sent.status, 202, "{}", sent.text);
    let sent_id = sent.json["id"].as_str().unwrap().to_string();
    let got = w.app.get(&format!("/v1/emails/{sent_id}"), &w.key).await;
    let mid = got.json["message_id"].as_str().unwrap().to_string();
    route(&w, json!({"match": "reply@acme.test", "action": "webhook", "webhook_id": w.hook, "format": "postmark"})).await;
    let extra = format!("In-Reply-To: {mid}\r\nReferences: <older@sender.test> {mid}\r\n");
    let msg = message(
        "carol@sender.test",
        "Acme <reply+ticket42@acme.test>",
        "Re: Your ticket",
        "Thanks!\r\n\r\n> t\r\n",
        &extra,
        &[("a.txt", "text/plain", b"attached".to_vec())],
    );
    let out = smtplib(
        w.inbound.addr(),
        "carol@sender.test",
        &["reply+ticket42@acme.test"],
        &msg,
    )
    .await;
    assert_eq!(out["data"][0], 250, "{out}");
    let h = hooks_at(&w.rx, "/acme.test", 1).await;
    assert!(h[0].verified);
    let p = &h[0].body;
    // Postmark's inbound JSON, as its handlers read it.
    assert_eq!(p["From"], "carol@sender.test");
    assert_eq!(p["FromFull"]["Email"], "carol@sender.test");
    assert_eq!(p["FromFull"]["Name"], "Sender");
    assert_eq!(p["To"], "\"Acme\" <reply+ticket42@acme.test>");
    assert_eq!(p["ToFull"][0]["Email"], "reply+ticket42@acme.test");
    assert_eq!(p["ToFull"][0]["MailboxHash"], "ticket42");
    assert_eq!(p["MailboxHash"], "ticket42");
    assert_eq!(p["OriginalRecipient"], "reply+ticket42@acme.test");
    assert_eq!(p["Subject"], "Re: Your ticket");
    assert_eq!(p["StrippedTextReply"], "Thanks!");
    assert!(p["TextBody"].as_str().unwrap().contains("> t"));
    assert_eq!(p["HtmlBody"], "");
    assert_eq!(p["Date"], "Sun, 6 Dec 2026 10:00:00 +0000");
    assert!(p["Headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["Name"] == "In-Reply-To"));
    let a = &p["Attachments"][0];
    assert_eq!(a["Name"], "a.txt");
    assert_eq!(a["ContentType"], "text/plain");
    assert_eq!(a["ContentLength"], 8);
    assert_eq!(
        B64.decode(a["Content"].as_str().unwrap()).unwrap(),
        b"attached"
    );
    // Our own object says which sent message it answers.
    let id = p["MessageID"].as_str().unwrap();
    let m = w.app.get(&format!("/v1/inbound/{id}"), &w.key).await;
    assert_eq!(
        m.json["in_reply_to_email_id"],
        sent_id.as_str(),
        "{}",
        m.text
    );
    assert_eq!(m.json["mailbox_hash"], "ticket42");
    assert_eq!(m.json["recipient"], "reply+ticket42@acme.test");
}

#[tokio::test]
async fn another_tenants_received_mail_and_routes_are_not_found() {
    let w = world_with(|_| {}).await;
    let (other_key, _) = tenant(&w.app, &w.dns, &w.rx, "other.test").await;
    let r = route(&w, json!({"match": "*@acme.test", "action": "hold"})).await;
    let msg = message(
        "a@sender.test",
        "x@acme.test",
        "Private",
        "secret",
        "",
        &[("f.txt", "text/plain", b"x".to_vec())],
    );
    let out = smtplib(w.inbound.addr(), "a@sender.test", &["x@acme.test"], &msg).await;
    assert_eq!(out["data"][0], 250, "{out}");
    let l = w.app.get("/v1/inbound", &w.key).await;
    let id = l.json["data"][0]["id"].as_str().unwrap().to_string();
    let missing = uuid::Uuid::new_v4();
    for path in [
        format!("/v1/inbound/{id}"),
        format!("/v1/inbound/{id}/raw"),
        format!("/v1/inbound/{id}/attachments/0"),
        format!("/v1/inbound/routes/{}", r["id"].as_str().unwrap()),
    ] {
        let own = w.app.get(&path, &w.key).await;
        assert_eq!(own.status, 200, "{path}: {}", own.text);
        let theirs = w.app.get(&path, &other_key).await;
        assert_eq!(theirs.status, 404, "{path}: {}", theirs.text);
        let gone = w
            .app
            .get(
                &path
                    .replace(&id, &missing.to_string())
                    .replace(r["id"].as_str().unwrap(), &missing.to_string()),
                &other_key,
            )
            .await;
        assert_eq!(theirs.text, gone.text, "{path}: looks like missing");
    }
    let del = w
        .app
        .delete(
            &format!("/v1/inbound/routes/{}", r["id"].as_str().unwrap()),
            &other_key,
        )
        .await;
    assert_eq!(del.status, 404);
    let list = w.app.get("/v1/inbound", &other_key).await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 0);
    // A read-only key cannot change routes.
    let t = w.app.get("/v1/inbound/routes", &w.key).await;
    assert_eq!(t.status, 200);
    let del = w
        .app
        .delete(
            &format!("/v1/inbound/routes/{}", r["id"].as_str().unwrap()),
            &w.key,
        )
        .await;
    assert_eq!(del.status, 204);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = smtplib(w.inbound.addr(), "a@sender.test", &["x@acme.test"], &msg).await;
    assert_eq!(
        out["rcpt"][0][0], 550,
        "a deleted route refuses again: {out}"
    );
}

#[tokio::test]
async fn the_bounds_hold_at_their_limits() {
    let w = world_with(|s| {
        s.inbound.max_attachments = 2;
        s.inbound.max_recipients = 2;
        s.inbound.messages_per_tenant_per_minute = 4;
        s.inbound.max_message_bytes = 64 * 1024;
    })
    .await;
    route(&w, json!({"match": "*@acme.test", "action": "hold"})).await;
    let f = |n: usize| -> Vec<(&'static str, &'static str, Vec<u8>)> {
        (0..n)
            .map(|_| ("f.bin", "application/octet-stream", vec![1u8; 10]))
            .collect()
    };
    // Two attachments: taken; three: 552.
    let ok = smtplib(
        w.inbound.addr(),
        "a@sender.test",
        &["x@acme.test"],
        &message("a@sender.test", "x@acme.test", "two", "t", "", &f(2)),
    )
    .await;
    assert_eq!(ok["data"][0], 250, "{ok}");
    let no = smtplib(
        w.inbound.addr(),
        "a@sender.test",
        &["x@acme.test"],
        &message("a@sender.test", "x@acme.test", "three", "t", "", &f(3)),
    )
    .await;
    assert_eq!(no["data"][0], 552, "{no}");
    // Recipients per message: the third is refused (452).
    let r = smtplib(
        w.inbound.addr(),
        "a@sender.test",
        &["a@acme.test", "b@acme.test", "c@acme.test"],
        &message("a@sender.test", "a@acme.test", "rcpts", "t", "", &[]),
    )
    .await;
    assert_eq!(r["rcpt"][0][0], 250, "{r}");
    assert_eq!(r["rcpt"][1][0], 250, "{r}");
    assert_eq!(r["rcpt"][2][0], 452, "{r}");
    assert_eq!(r["data"][0], 250, "{r}");
    // Size: 64 KiB plus one is refused.
    let big = message(
        "a@sender.test",
        "x@acme.test",
        "big",
        &format!("{}\r\n", "x".repeat(70)).repeat(1024),
        "",
        &[],
    );
    let b = smtplib(w.inbound.addr(), "a@sender.test", &["x@acme.test"], &big).await;
    assert_eq!(b["data"][0], 552, "{b}");
    // Messages that reached DATA count (three so far, the refused one
    // too): the fourth this minute is the last, the fifth waits.
    let third = smtplib(
        w.inbound.addr(),
        "a@sender.test",
        &["x@acme.test"],
        &message("a@sender.test", "x@acme.test", "third", "t", "", &[]),
    )
    .await;
    assert_eq!(third["data"][0], 250, "{third}");
    let fourth = smtplib(
        w.inbound.addr(),
        "a@sender.test",
        &["x@acme.test"],
        &message("a@sender.test", "x@acme.test", "fourth", "t", "", &[]),
    )
    .await;
    assert_eq!(fourth["rcpt"][0][0], 451, "{fourth}");
    assert_eq!(stored(&w.app), 3);
}

#[tokio::test]
async fn received_content_is_purged_with_retention() {
    let w = world_with(|_| {}).await;
    route(&w, json!({"match": "*@acme.test", "action": "hold"})).await;
    let msg = message(
        "a@sender.test",
        "x@acme.test",
        "Old",
        "old text",
        "",
        &[("f.txt", "text/plain", b"x".to_vec())],
    );
    let out = smtplib(w.inbound.addr(), "a@sender.test", &["x@acme.test"], &msg).await;
    assert_eq!(out["data"][0], 250, "{out}");
    let l = w.app.get("/v1/inbound", &w.key).await;
    let id = l.json["data"][0]["id"].as_str().unwrap().to_string();
    let mut settings = w.app.state.settings.retention.clone();
    settings.content_days = 30;
    let mut conn = w.app.sql_conn();
    // Younger than content_days: kept.
    postline::retention::purge_batch(&mut conn, &settings).unwrap();
    let m = w.app.get(&format!("/v1/inbound/{id}"), &w.key).await;
    assert_eq!(
        m.json["text"].as_str().map(str::trim_end),
        Some("old text"),
        "{}",
        m.text
    );
    diesel::sql_query(format!(
        "UPDATE inbound_messages SET created_at = now() - interval '31 days' WHERE id = '{id}'"
    ))
    .execute(&mut conn)
    .unwrap();
    let counts = postline::retention::purge_batch(&mut conn, &settings).unwrap();
    assert_eq!(counts.content, 1);
    let m = w.app.get(&format!("/v1/inbound/{id}"), &w.key).await;
    assert_eq!(m.status, 200);
    assert!(m.json["text"].is_null(), "{}", m.text);
    assert!(m.json["content_purged_at"].is_string(), "{}", m.text);
    assert_eq!(m.json["subject"], "Old", "metadata stays");
    let raw = w.app.get(&format!("/v1/inbound/{id}/raw"), &w.key).await;
    assert_eq!(raw.status, 409, "{}", raw.text);
    assert_eq!(raw.json["code"], "content_purged");
    let att = w
        .app
        .get(&format!("/v1/inbound/{id}/attachments/0"), &w.key)
        .await;
    assert_eq!(att.status, 409, "{}", att.text);
}
