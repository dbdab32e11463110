//! Open and click tracking (issue 29) end to end: a tracked HTML message
//! captured at the SMTP sink (links rewritten, pixel present, the DKIM
//! signature still verified by dkimpy), its links and pixel answered over
//! real HTTP, and the signed `email.clicked` / `email.opened` webhooks with
//! their machine verdicts; tampered links are 404s; links keep working after
//! the content purge and the tenant's deletion.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};
use postline::config::Settings;
use serde_json::{json, Value};

use crate::common::dns_server::DnsServer;
use crate::common::smtp_sink::SmtpSink;
use crate::common::webhook_receiver::{Hook, Receiver};
use crate::common::{mime_parts, TestApp};
use crate::domains::{dkim_records, tenant, verified_domain};

pub const BASE: &str = "https://t.platform.test";
pub const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const WAIT: Duration = Duration::from_secs(20);
const SHOP: &str = "https://shop.example/a?x=1&y=2";
const DOCS: &str = "https://docs.example/guide";

pub struct Setup {
    pub app: TestApp,
    pub sink: SmtpSink,
    pub dns: DnsServer,
    pub tenant: String,
    pub key: String,
    pub rx: Receiver,
    pub domain: Value,
}

/// A serving app resolving through a loopback DNS server, a tenant with
/// the verified domain `acme.test` and a webhook for opens and clicks.
pub async fn setup(tweak: impl FnOnce(&mut Settings) + Send + 'static) -> Setup {
    let dns = DnsServer::start().await;
    let sink = SmtpSink::start().await;
    let ns = dns.nameserver();
    let app = TestApp::spawn_serving(sink.port(), move |s| {
        s.dns.nameservers = vec![ns];
        s.domains.require_verified = true;
        s.domains.cache_secs = 1;
        s.tracking.public_url = BASE.into();
        s.tracking.scanner_secs = 0;
        tweak(s);
    })
    .await;
    let (tenant, key) = tenant(&app).await;
    let domain = verified_domain(&app, &dns, &key, json!({"name": "acme.test"})).await;
    let rx = Receiver::start().await;
    let hook = app
        .post(
            "/v1/webhooks",
            &key,
            json!({"url": rx.url("/hook"), "events": ["email.opened", "email.clicked"]}),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    rx.add_secret(hook.json["secret"].as_str().unwrap());
    Setup {
        app,
        sink,
        dns,
        tenant,
        key,
        rx,
        domain,
    }
}

pub fn html() -> String {
    format!(
        "<html><body><p>Hello</p><a href=\"{}\">Shop</a> <a href=\"{DOCS}\">Docs</a> \
         <a href=\"mailto:help@acme.test\">Mail</a> <a href=\"tel:+15550100\">Call</a> \
         <a href=\"#top\">Top</a> <a data-pl-notrack href=\"https://keep.example/\">Keep</a> \
         <a href=\"{BASE}/u/UNSUBSCRIBE-TOKEN\">Unsubscribe</a></body></html>",
        SHOP.replace('&', "&amp;")
    )
}

/// The `href`s of an HTML text, in order.
pub fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect()
}

/// The `src` of the open pixel.
pub fn pixel(html: &str) -> Option<String> {
    let at = html.find(&format!("src=\"{BASE}/o/"))? + 5;
    Some(html[at..at + html[at..].find('"')?].to_string())
}

/// The decoded part of `mime` type of a captured message.
pub fn part(raw: &str, mime: &str) -> String {
    mime_parts(raw)
        .into_iter()
        .find(|(t, _)| t == mime)
        .unwrap_or_else(|| panic!("no {mime} part in {raw}"))
        .1
}

/// A client that does not follow redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `url` (on the tracking base) asked of the app instead.
pub fn local(app: &TestApp, url: &str) -> String {
    url.replacen(BASE, &app.address, 1)
}

/// `/c/{token}` or `/o/{token}.gif` with a token the app signed; a click
/// leads to the app's own pixel, which answers GET and HEAD (the isolation
/// matrix calls public routes with a client that follows redirects).
pub fn signed_path(app: &TestApp, pattern: &str) -> String {
    use postline::tracking::token::{Kind, Link, LinkKeys};
    let keys = LinkKeys::from_settings(&app.state.settings).unwrap();
    let link = |kind, url| Link {
        kind,
        tenant_id: uuid::Uuid::nil(),
        email_id: uuid::Uuid::nil(),
        recipient: None,
        url,
    };
    let open = keys.token(&link(Kind::Open, None)).unwrap();
    let token = if pattern.starts_with("/c/") {
        let pixel = format!("{}/o/{open}.gif", app.address);
        keys.token(&link(Kind::Click, Some(pixel))).unwrap()
    } else {
        open
    };
    pattern.replace("{token}", &token)
}

async fn hook(rx: &Receiver, pred: impl Fn(&Hook) -> bool) -> Hook {
    let hooks = rx.wait_until(WAIT, |h| h.iter().any(&pred)).await;
    hooks
        .into_iter()
        .find(|h| pred(h))
        .expect("the webhook came")
}

#[derive(QueryableByName)]
struct Firsts {
    #[diesel(sql_type = Bool)]
    opened: bool,
    #[diesel(sql_type = Bool)]
    clicked: bool,
    #[diesel(sql_type = BigInt)]
    opens: i64,
    #[diesel(sql_type = BigInt)]
    clicks: i64,
}

fn firsts(app: &TestApp, tenant: &str) -> Firsts {
    diesel::sql_query(format!(
        "SELECT bool_or(first_opened_at IS NOT NULL) AS opened, bool_or(first_clicked_at IS NOT NULL) AS clicked, \
           (SELECT COALESCE(sum(emails_opened), 0)::bigint FROM usage_daily WHERE tenant_id = '{tenant}') AS opens, \
           (SELECT COALESCE(sum(emails_clicked), 0)::bigint FROM usage_daily WHERE tenant_id = '{tenant}') AS clicks \
         FROM email_recipients WHERE tenant_id = '{tenant}'"
    ))
    .get_result(&mut app.sql_conn())
    .unwrap()
}

pub fn mail(track: Value) -> Value {
    json!({"from": "Acme <hello@acme.test>", "to": "rcpt@example.org", "subject": "Tracked",
           "html": html(), "text": format!("Shop at {SHOP}\r\n"), "track": track})
}

#[tokio::test]
async fn tracked_links_redirect_signed_events_follow_and_tampering_is_a_404() {
    let s = setup(|_| {}).await;
    let r = s
        .app
        .post(
            "/v1/emails",
            &s.key,
            mail(json!({"opens": true, "clicks": true})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let raw = s.sink.wait_for(1, WAIT).await[0].data.clone();
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(text.starts_with("DKIM-Signature:"), "{text}");
    assert_eq!(
        crate::domains_dkim::dkimpy(&raw, &dkim_records(&s.domain)),
        vec![true],
        "the rewritten message is what DKIM signed"
    );
    let h = part(&text, "text/html");
    let links = hrefs(&h);
    assert!(links[0].starts_with(&format!("{BASE}/c/")), "{h}");
    assert!(links[1].starts_with(&format!("{BASE}/c/")), "{h}");
    assert_eq!(
        &links[2..],
        &[
            "mailto:help@acme.test".to_string(),
            "tel:+15550100".into(),
            "#top".into(),
            "https://keep.example/".into(),
            format!("{BASE}/u/UNSUBSCRIBE-TOKEN"),
        ]
    );
    assert!(!h.contains("data-pl-notrack"));
    let px = pixel(&h).expect("the open pixel");
    assert!(px.ends_with(".gif"), "{px}");
    assert!(h.find(&px).unwrap() < h.find("</body>").unwrap());
    // Clicks alone cover the HTML part: the text part is as written.
    assert_eq!(
        part(&text, "text/plain").trim_end(),
        format!("Shop at {SHOP}")
    );

    // A person clicks (scanner_secs is 0 here): 302 to the URL as written.
    let c = client();
    let got = c
        .get(local(&s.app, &links[0]))
        .header("user-agent", FIREFOX)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 302);
    assert_eq!(got.headers()["location"], SHOP);
    let clicked = hook(&s.rx, |h| h.body["type"] == "email.clicked").await;
    assert!(clicked.verified, "signed like every webhook");
    let d = &clicked.body["data"];
    assert_eq!(d["url"], SHOP);
    assert_eq!(d["recipient"], "rcpt@example.org");
    assert_eq!(d["email_id"], r.json["id"]);
    assert_eq!(d["user_agent"], FIREFOX);
    assert_eq!(d["ip"], "127.0.0.1");
    assert_eq!(
        (d["machine"].clone(), d["machine_reason"].clone()),
        (json!(false), Value::Null),
        "{d}"
    );

    // Another link of the same copy within a second: a scanner's sweep.
    let got = c
        .get(local(&s.app, &links[1]))
        .header("user-agent", FIREFOX)
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["location"], DOCS);
    let swept = hook(&s.rx, |h| h.body["data"]["url"] == DOCS).await;
    assert_eq!(swept.body["data"]["machine"], true);
    assert_eq!(swept.body["data"]["machine_reason"], "scanner_timing");

    // HEAD: answered the same, reported as a machine.
    let got = c
        .head(local(&s.app, &links[0]))
        .header("user-agent", FIREFOX)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 302);
    let head = hook(&s.rx, |h| {
        h.body["data"]["machine_reason"] == "head_request"
    })
    .await;
    assert_eq!(head.body["type"], "email.clicked");

    // The pixel.
    let got = c
        .get(local(&s.app, &px))
        .header("user-agent", FIREFOX)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/gif");
    let gif = got.bytes().await.unwrap();
    assert!(gif.starts_with(b"GIF89a") && gif.len() == 43);
    let opened = hook(&s.rx, |h| h.body["type"] == "email.opened").await;
    assert!(opened.verified);
    assert_eq!(opened.body["data"]["machine"], false);
    assert!(opened.body["data"].get("url").is_none(), "{}", opened.body);

    // Human events only: one first open, one first click, counted once.
    let f = firsts(&s.app, &s.tenant);
    assert!(f.opened && f.clicked);
    assert_eq!((f.opens, f.clicks), (1, 1));
    let u = s
        .app
        .get(&format!("/v1/tenants/{}/usage", s.tenant), &s.app.admin_key)
        .await;
    assert_eq!(
        (
            u.json["emails_opened"].clone(),
            u.json["emails_clicked"].clone()
        ),
        (json!(1), json!(1)),
        "{}",
        u.text
    );
    let events = s
        .app
        .get(
            &format!("/v1/emails/{}", r.json["id"].as_str().unwrap()),
            &s.key,
        )
        .await;
    assert!(
        events.text.contains("email.clicked") && events.text.contains("email.opened"),
        "{}",
        events.text
    );
    let rcpt = &events.json["recipients"][0];
    assert!(
        rcpt["first_opened_at"].is_string() && rcpt["first_clicked_at"].is_string(),
        "{rcpt}"
    );

    // Tampered: another signature, another payload, a click token as a pixel.
    let token = links[0].rsplit('/').next().unwrap();
    let (payload, sig) = token.rsplit_once('.').unwrap();
    let flip = |t: &str| {
        let mut b = t.as_bytes().to_vec();
        b[2] = if b[2] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    for bad in [
        format!("/c/{payload}.{}", flip(sig)),
        format!("/c/{}.{sig}", flip(payload)),
        format!("/o/{token}.gif"),
        format!("/c/{}", "A".repeat(20_000)),
    ] {
        let got = c
            .get(format!("{}{bad}", s.app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 404, "{bad}");
        assert!(got.headers().get("location").is_none());
    }

    // The content purged, then the tenant deleted: the link still leads on.
    diesel::sql_query(
        "UPDATE emails SET html_body = NULL, text_body = NULL, content_purged_at = now()",
    )
    .execute(&mut s.app.sql_conn())
    .unwrap();
    let got = c.get(local(&s.app, &links[0])).send().await.unwrap();
    assert_eq!(
        (
            got.status().as_u16(),
            got.headers()["location"].to_str().unwrap()
        ),
        (302, SHOP)
    );
    let del = s
        .app
        .delete(&format!("/v1/tenants/{}", s.tenant), &s.app.admin_key)
        .await;
    assert!(del.status < 300, "{}", del.text);
    let got = c.get(local(&s.app, &links[0])).send().await.unwrap();
    assert_eq!(
        (
            got.status().as_u16(),
            got.headers()["location"].to_str().unwrap()
        ),
        (302, SHOP)
    );
    drop(s.dns);
}

#[tokio::test]
async fn early_clicks_proxies_and_scanners_are_machines_and_count_for_nothing() {
    let s = setup(|s| {
        s.tracking.scanner_secs = 60;
        // The loopback address the test's opens come from is a "proxy".
        s.tracking.proxy_cidrs = vec!["127.0.0.2/32".into()];
        s.auth.trust_x_forwarded_for = true;
    })
    .await;
    let r = s
        .app
        .post(
            "/v1/emails",
            &s.key,
            mail(json!({"opens": true, "clicks": true})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let raw = s.sink.wait_for(1, WAIT).await[0].text();
    let h = part(&raw, "text/html");
    let link = hrefs(&h)[0].clone();
    let px = pixel(&h).unwrap();
    let c = client();
    // A second after delivery, from an ordinary address.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = c
        .get(local(&s.app, &link))
        .header("user-agent", FIREFOX)
        .header("x-forwarded-for", "127.0.0.3")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 302);
    let early = hook(&s.rx, |h| h.body["type"] == "email.clicked").await;
    assert_eq!(early.body["data"]["machine"], true);
    assert_eq!(early.body["data"]["machine_reason"], "scanner_timing");
    assert_eq!(early.body["data"]["ip"], "127.0.0.3");
    // An open through the proxy's address.
    let got = c
        .get(local(&s.app, &px))
        .header("user-agent", FIREFOX)
        .header("x-forwarded-for", "127.0.0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let proxied = hook(&s.rx, |h| h.body["type"] == "email.opened").await;
    assert_eq!(proxied.body["data"]["machine_reason"], "prefetch_proxy");
    // A security gateway's fetch of the pixel.
    c.get(local(&s.app, &px))
        .header("user-agent", "Mimecast-URL-Protect/1.0")
        .send()
        .await
        .unwrap();
    let scanner = hook(&s.rx, |h| {
        h.body["data"]["machine_reason"] == "known_scanner"
    })
    .await;
    assert_eq!(scanner.body["data"]["machine"], true);
    // None of them a person's.
    let f = firsts(&s.app, &s.tenant);
    assert!(!f.opened && !f.clicked);
    assert_eq!((f.opens, f.clicks), (0, 0));
    let view = s
        .app
        .get(
            &format!("/v1/emails/{}", r.json["id"].as_str().unwrap()),
            &s.key,
        )
        .await;
    assert!(
        view.json["recipients"][0]["first_clicked_at"].is_null(),
        "{}",
        view.text
    );
}
