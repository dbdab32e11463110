//! The redirect under a flood (issue 29), over real HTTP from real source
//! addresses (clients bound to distinct loopback addresses): with the
//! events' writer held (a transaction locking `email_events`), one address
//! past `tracking.max_pending_per_address` has exactly that many events
//! waiting and then written, every request still answered with the right
//! redirect; other addresses get in; the channel never holds more than
//! `tracking.max_pending_events`; and at the bound exactly, nothing is lost.

use std::net::IpAddr;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use futures_util::StreamExt;
use serde_json::json;

use crate::common::TestApp;
use crate::tracking::{hrefs, local, mail, part, setup, Setup, FIREFOX};

const WAIT: Duration = Duration::from_secs(20);
const PER_ADDRESS: usize = 5;
const CHANNEL: usize = 40;
const SHOP: &str = "https://shop.example/a?x=1&y=2";

async fn tracked(s: &Setup) -> String {
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
    let link = hrefs(&part(&raw, "text/html"))[0].clone();
    // The delivery recorded (its event written) before the writer is held.
    let id = r.json["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = s.app.get(&format!("/v1/emails/{id}"), &s.key).await;
        if v.json["status"] == "delivered" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", v.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    local(&s.app, &link)
}

/// A client whose connections come from `ip` (a loopback address).
fn from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// `n` clicks on `url` from `ip`, 16 at a time; each must be the redirect.
async fn clicks(ip: &str, url: &str, n: usize) {
    let c = from(ip);
    let answers: Vec<(u16, String)> = futures_util::stream::iter(0..n)
        .map(|_| {
            let (c, url) = (c.clone(), url.to_string());
            async move {
                let r = c
                    .get(url)
                    .header("user-agent", FIREFOX)
                    .send()
                    .await
                    .unwrap();
                let at = r
                    .headers()
                    .get("location")
                    .map(|l| l.to_str().unwrap().to_string());
                (r.status().as_u16(), at.unwrap_or_default())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(answers.len(), n);
    for a in answers {
        assert_eq!(a, (302, SHOP.to_string()), "from {ip}");
    }
}

/// Holds the events' writer: a transaction holding `email_events`
/// exclusively, once the writer has taken the hit of `warm` (so it waits on
/// the lock with that one batch and everything after stays pending).
struct Held(PgConnection);

async fn hold(s: &Setup, url: &str, warm: &str) -> Held {
    let mut c = s.app.sql_conn();
    diesel::sql_query("BEGIN").execute(&mut c).unwrap();
    diesel::sql_query("LOCK TABLE email_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut c)
        .unwrap();
    clicks(warm, url, 1).await;
    let sink = &s.app.state.tracking.sink;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let waiting = waiting_on_lock(&s.app);
        if sink.pending().0 == 0 && waiting {
            return Held(c);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer never waited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Held {
    fn release(mut self) {
        diesel::sql_query("COMMIT").execute(&mut self.0).unwrap();
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn waiting_on_lock(app: &TestApp) -> bool {
    let c: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE NOT l.granted AND c.relname = 'email_events'",
    )
    .get_result(&mut app.sql_conn())
    .unwrap();
    c.n > 0
}

#[derive(QueryableByName)]
struct ByIp {
    #[diesel(sql_type = Nullable<Text>)]
    ip: Option<String>,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Click events written, by address, once nothing is pending.
async fn written(s: &Setup) -> Vec<(String, i64)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.app.state.tracking.sink.pending().0 > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last batch's transaction.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows: Vec<ByIp> = diesel::sql_query(
        "SELECT detail->'tracking'->>'ip' AS ip, count(*) AS n FROM email_events \
         WHERE type = 'email.clicked' GROUP BY 1 ORDER BY 1",
    )
    .load(&mut s.app.sql_conn())
    .unwrap();
    rows.into_iter()
        .map(|r| (r.ip.unwrap_or_default(), r.n))
        .collect()
}

/// `postline_tracking_events_dropped_total` as `/metrics` shows it.
async fn dropped_total(app: &TestApp) -> f64 {
    let text = reqwest::get(format!("{}/metrics", app.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("postline_tracking_events_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn flood_setup() -> Setup {
    setup(|s| {
        s.tracking.max_pending_per_address = PER_ADDRESS;
        s.tracking.max_pending_events = CHANNEL;
    })
    .await
}

#[tokio::test]
async fn a_flood_from_one_address_is_held_at_its_bound_and_others_still_count() {
    let s = flood_setup().await;
    let url = tracked(&s).await;
    let sink = s.app.state.tracking.sink.clone();
    let held = hold(&s, &url, "127.0.0.9").await;
    let before = dropped_total(&s.app).await;

    // 300 clicks from one address: every one redirected where the link
    // points; PER_ADDRESS of them wait to be written, the rest dropped.
    clicks("127.0.0.5", &url, 300).await;
    assert_eq!(sink.pending_from("127.0.0.5".parse().unwrap()), PER_ADDRESS);
    assert_eq!(sink.pending(), (PER_ADDRESS, 1));
    assert!(dropped_total(&s.app).await - before >= (300 - PER_ADDRESS) as f64);

    // Another address is not pushed out by it.
    clicks("127.0.0.6", &url, 3).await;
    assert_eq!(sink.pending_from("127.0.0.6".parse().unwrap()), 3);

    // Many addresses: the channel holds CHANNEL at most, all answered.
    for i in 1..=20 {
        clicks(&format!("127.0.1.{i}"), &url, 4).await;
    }
    let (total, sources) = sink.pending();
    assert_eq!(total, CHANNEL, "the channel is full, not past full");
    assert!(sources <= CHANNEL);
    let many = CHANNEL - PER_ADDRESS - 3;

    held.release();
    let by_ip = written(&s).await;
    let n = |ip: &str| {
        by_ip
            .iter()
            .find(|(i, _)| i == ip)
            .map(|x| x.1)
            .unwrap_or(0)
    };
    assert_eq!(n("127.0.0.9"), 1, "{by_ip:?}");
    assert_eq!(n("127.0.0.5"), PER_ADDRESS as i64, "{by_ip:?}");
    assert_eq!(n("127.0.0.6"), 3, "{by_ip:?}");
    let rest: i64 = by_ip
        .iter()
        .filter(|(i, _)| i.starts_with("127.0.1."))
        .map(|x| x.1)
        .sum();
    assert_eq!(rest, many as i64, "{by_ip:?}");
    // Written, the address has room again.
    clicks("127.0.0.5", &url, 1).await;
    let by_ip = written(&s).await;
    assert_eq!(
        by_ip.iter().find(|(i, _)| i == "127.0.0.5").map(|x| x.1),
        Some(PER_ADDRESS as i64 + 1)
    );
}

#[tokio::test]
async fn at_the_bound_every_event_is_kept_and_one_more_is_not() {
    let s = flood_setup().await;
    let url = tracked(&s).await;
    let sink = s.app.state.tracking.sink.clone();
    let held = hold(&s, &url, "127.0.0.9").await;
    let ip: IpAddr = "127.0.0.7".parse().unwrap();
    clicks("127.0.0.7", &url, PER_ADDRESS).await;
    assert_eq!(
        sink.pending_from(ip),
        PER_ADDRESS,
        "all of them at the bound"
    );
    clicks("127.0.0.7", &url, 1).await;
    assert_eq!(
        sink.pending_from(ip),
        PER_ADDRESS,
        "one past it is not kept"
    );
    held.release();
    let by_ip = written(&s).await;
    assert_eq!(
        by_ip.iter().find(|(i, _)| i == "127.0.0.7").map(|x| x.1),
        Some(PER_ADDRESS as i64),
        "{by_ip:?}"
    );
}
