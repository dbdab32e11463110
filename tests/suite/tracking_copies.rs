//! A tracked message to several recipients (issue 29): each recipient's
//! copy is rewritten on its own, so its links and pixel name it and an open
//! or click says whose it was; each copy carries its own DKIM signature
//! (dkimpy verifies every one), with VERP and RFC 8058 headers too. Tracking
//! off keeps one transaction and one signature for everyone.

use std::time::Duration;

use postline::tracking::token::{Kind, LinkKeys};
use serde_json::{json, Value};

use crate::common::smtp_sink::ReceivedMessage;
use crate::domains::dkim_records;
use crate::domains_dkim::dkimpy;
use crate::tracking::{client, hrefs, html, local, part, pixel, setup, Setup, BASE, FIREFOX};

const WAIT: Duration = Duration::from_secs(20);
const ONE: &str = "one@example.org";
const TWO: &str = "two@example.org";
const UNSUB: &str = "https://mail.postline.test";

fn mail(track: Value, extra: Value) -> Value {
    let mut m = json!({"from": "Acme <hello@acme.test>", "to": [ONE, TWO], "subject": "Tracked",
           "html": html(), "text": "Shop at https://shop.example/text\r\n", "track": track});
    if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(extra.clone());
    }
    m
}

/// The message the sink got for `rcpt`.
fn copy_for<'a>(got: &'a [ReceivedMessage], rcpt: &str) -> &'a ReceivedMessage {
    let m: Vec<_> = got
        .iter()
        .filter(|m| m.rcpt_to.iter().any(|r| r == rcpt))
        .collect();
    assert_eq!(m.len(), 1, "one copy for {rcpt}");
    m[0]
}

/// The recipient a tracked URL names (click or pixel).
fn named(keys: &LinkKeys, url: &str) -> Option<String> {
    if let Some(t) = url.strip_prefix(&format!("{BASE}/c/")) {
        return keys
            .verify(Kind::Click, t)
            .expect("a valid click link")
            .recipient;
    }
    let t = url
        .strip_prefix(&format!("{BASE}/o/"))
        .and_then(|t| t.strip_suffix(".gif"))
        .expect("a tracking URL");
    keys.verify(Kind::Open, t).expect("a valid pixel").recipient
}

/// Each copy: DKIM verifies, the first two links, the pixel and (when
/// tracked) the text link name its own recipient; returns (rcpt, html).
fn check_copies(s: &Setup, got: &[ReceivedMessage]) -> Vec<(String, String)> {
    let keys = LinkKeys::from_settings(&s.app.state.settings).unwrap();
    let mut out = Vec::new();
    for rcpt in [ONE, TWO] {
        let m = copy_for(got, rcpt);
        assert_eq!(m.rcpt_to, vec![rcpt.to_string()]);
        assert_eq!(
            dkimpy(&m.data, &dkim_records(&s.domain)),
            vec![true],
            "{rcpt}'s copy verifies: {}",
            m.text()
        );
        let text = m.text();
        let h = part(&text, "text/html");
        let links = hrefs(&h);
        for l in &links[..2] {
            assert_eq!(named(&keys, l).as_deref(), Some(rcpt), "{l}");
        }
        assert_eq!(
            named(&keys, &pixel(&h).expect("pixel")).as_deref(),
            Some(rcpt)
        );
        let t = part(&text, "text/plain");
        let tl = t
            .split_whitespace()
            .find(|w| w.starts_with(&format!("{BASE}/c/")))
            .expect("the text link is tracked");
        assert_eq!(named(&keys, tl).as_deref(), Some(rcpt));
        out.push((rcpt.to_string(), h));
    }
    out
}

#[tokio::test]
async fn each_recipient_copy_names_its_recipient_and_clicks_say_whose() {
    let s = setup(|_| {}).await;
    let track = json!({"opens": true, "clicks": true, "links": "html_and_text"});
    let r = s
        .app
        .post("/v1/emails", &s.key, mail(track, json!({})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let got = s.sink.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2, "one transaction per recipient");
    let copies = check_copies(&s, &got);
    assert_ne!(copies[0].1, copies[1].1);

    // TWO clicks in their copy: the event names TWO, and only TWO's
    // first_clicked_at is set.
    let link = hrefs(&copies[1].1)[0].clone();
    let c = client();
    let res = c
        .get(local(&s.app, &link))
        .header("user-agent", FIREFOX)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "https://shop.example/a?x=1&y=2");
    let hooks =
        s.rx.wait_until(WAIT, |h| {
            h.iter().any(|h| h.body["type"] == "email.clicked")
        })
        .await;
    let clicked: Vec<_> = hooks
        .iter()
        .filter(|h| h.body["type"] == "email.clicked")
        .collect();
    assert_eq!(clicked.len(), 1);
    assert!(clicked[0].verified);
    assert_eq!(clicked[0].body["data"]["recipient"], TWO);
    assert_eq!(clicked[0].body["data"]["email_id"], r.json["id"]);
    assert_eq!(clicked[0].body["data"]["machine"], false);
    // ONE opens theirs.
    let px = pixel(&copies[0].1).unwrap();
    let res = c
        .get(local(&s.app, &px))
        .header("user-agent", FIREFOX)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let hooks =
        s.rx.wait_until(WAIT, |h| h.iter().any(|h| h.body["type"] == "email.opened"))
            .await;
    let opened = hooks
        .iter()
        .find(|h| h.body["type"] == "email.opened")
        .unwrap();
    assert_eq!(opened.body["data"]["recipient"], ONE);
    let view = s
        .app
        .get(
            &format!("/v1/emails/{}", r.json["id"].as_str().unwrap()),
            &s.key,
        )
        .await;
    let rcpts = view.json["recipients"].as_array().unwrap();
    let of = |a: &str| {
        rcpts
            .iter()
            .find(|r| r["email"] == a || r["recipient"] == a)
    };
    let (one, two) = (of(ONE).expect(&view.text), of(TWO).expect(&view.text));
    assert!(one["first_opened_at"].is_string(), "{}", view.text);
    assert!(one["first_clicked_at"].is_null(), "{}", view.text);
    assert!(two["first_clicked_at"].is_string(), "{}", view.text);
    assert!(two["first_opened_at"].is_null(), "{}", view.text);

    // Tracking off: one transaction for both, one signature, as before.
    let off = s
        .app
        .post(
            "/v1/emails",
            &s.key,
            mail(json!({"opens": false, "clicks": false}), json!({})),
        )
        .await;
    assert_eq!(off.status, 202, "{}", off.text);
    let got = s.sink.wait_for(3, WAIT).await;
    let m = &got[2];
    assert_eq!(m.rcpt_to.len(), 2, "both recipients in one transaction");
    assert_eq!(m.text().matches("DKIM-Signature:").count(), 1);
    assert_eq!(dkimpy(&m.data, &dkim_records(&s.domain)), vec![true]);
    assert!(!m.text().contains(&format!("{BASE}/c/")));
}

#[tokio::test]
async fn copies_carry_their_verp_and_unsubscribe_headers_under_their_own_signature() {
    let s = setup(|s| {
        crate::bounces::settings(s);
        s.unsubscribe.public_url = UNSUB.into();
    })
    .await;
    // The tenant's own unsubscribe link under the unsubscribe URL stays as
    // written.
    let own = format!("{UNSUB}/u/TENANT-LINK");
    let body = html().replace("</body>", &format!("<a href=\"{own}\">Leave</a></body>"));
    let track = json!({"opens": true, "clicks": true, "links": "html_and_text"});
    let r = s
        .app
        .post(
            "/v1/emails",
            &s.key,
            mail(track, json!({"stream": "broadcast", "html": body})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let got = s.sink.wait_for(2, WAIT).await;
    let copies = check_copies(&s, &got);
    let mut ids = Vec::new();
    for (rcpt, h) in &copies {
        let m = copy_for(&got, rcpt).text();
        assert!(m.contains("List-Unsubscribe-Post:"), "{m}");
        assert!(hrefs(h).contains(&own), "{h}");
        let id = m
            .lines()
            .find_map(|l| l.strip_prefix("X-Postline-ID: "))
            .expect("VERP header")
            .to_string();
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn a_template_renders_first_and_its_links_are_then_tracked() {
    let s = setup(|_| {}).await;
    let start = "https://app.example/start?u=1&v=2";
    let r = s
        .app
        .post(
            "/v1/emails",
            &s.key,
            json!({"from": "Acme <hello@acme.test>", "to": ONE, "template": "welcome",
                   "variables": {"name": "Ann", "app_name": "Acme", "action_url": start},
                   "track": {"opens": true, "clicks": true}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let got = s.sink.wait_for(1, WAIT).await;
    let h = part(&got[0].text(), "text/html");
    let keys = LinkKeys::from_settings(&s.app.state.settings).unwrap();
    let tracked: Vec<String> = hrefs(&h)
        .into_iter()
        .filter_map(|l| {
            let t = l.strip_prefix(&format!("{BASE}/c/"))?.to_string();
            keys.verify(Kind::Click, &t)
        })
        .map(|l| l.url.unwrap())
        .collect();
    assert!(tracked.iter().any(|u| u == start), "{h}");
    assert!(pixel(&h).is_some());
    assert!(!h.contains("{{"), "rendered before rewriting: {h}");
    assert_eq!(dkimpy(&got[0].data, &dkim_records(&s.domain)), vec![true]);
}

#[tokio::test]
async fn past_max_copies_bytes_one_copy_goes_to_all_naming_no_one() {
    let s = setup(|s| s.tracking.max_copies_bytes = 64 * 1024).await;
    let keys = LinkKeys::from_settings(&s.app.state.settings).unwrap();
    let track = json!({"opens": true, "clicks": true});
    // ~40 KB a copy: two copies would pass 64 KiB.
    let big = html().replace(
        "<p>Hello</p>",
        &format!("<p>{}</p>", "Hello ".repeat(7_000)),
    );
    let r = s
        .app
        .post(
            "/v1/emails",
            &s.key,
            mail(track.clone(), json!({"html": big})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let got = s.sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to.len(), 2, "one transaction for both");
    let h = part(&got[0].text(), "text/html");
    assert_eq!(named(&keys, &hrefs(&h)[0]), None);
    assert_eq!(named(&keys, &pixel(&h).unwrap()), None);
    assert_eq!(dkimpy(&got[0].data, &dkim_records(&s.domain)), vec![true]);
    // A small one: a copy each, within the budget.
    let r = s
        .app
        .post("/v1/emails", &s.key, mail(track, json!({})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let got = s.sink.wait_for(3, WAIT).await;
    let small = &got[1..];
    for rcpt in [ONE, TWO] {
        let m = copy_for(small, rcpt);
        let h = part(&m.text(), "text/html");
        assert_eq!(named(&keys, &hrefs(&h)[0]).as_deref(), Some(rcpt));
    }
}
