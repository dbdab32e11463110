//! Issue 22, finding 6: a stranger who knows a client's (public) client_id
//! used to spend its `oauth.token_requests_per_minute` with wrong secrets,
//! and the real secret then got 429 `slow_down`. The secret is checked
//! first now and failures count against the caller's address: the flooding
//! address is throttled, the real client (another address) is not.

use std::net::IpAddr;

use crate::common::TestApp;

/// A client whose requests leave from `source` (a loopback address: the
/// server on 127.0.0.1 sees a different peer for each).
fn from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn token(http: &reqwest::Client, app: &TestApp, id: &str, secret: &str) -> (u16, String) {
    let r = http
        .post(format!("{}/oauth/token", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .basic_auth(id, Some(secret))
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn wrong_secrets_from_one_address_neither_lock_the_client_nor_go_unthrottled() {
    let app = TestApp::spawn_with(|s| {
        s.oauth.token_requests_per_minute = 30;
        s.auth.failed_per_ip_per_minute = 20;
    })
    .await;
    let (_, client_id, secret) =
        crate::oauth::client(&app, "/v1/oauth-clients", &["tenants:read"]).await;
    let (stranger, real) = (from("127.0.0.2"), from("127.0.0.1"));

    let mut statuses = Vec::new();
    for i in 0..50 {
        statuses.push(token(&stranger, &app, &client_id, &format!("guess-{i}")).await);
    }
    // The first 20 are refused as bad credentials, the rest throttled.
    assert!(
        statuses[..20]
            .iter()
            .all(|(s, b)| *s == 401 && b.contains("invalid_client")),
        "{statuses:?}"
    );
    assert!(
        statuses[20..]
            .iter()
            .all(|(s, b)| *s == 429 && b.contains("slow_down")),
        "{statuses:?}"
    );

    // The real client, from its own address, still gets its tokens.
    let (status, body) = token(&real, &app, &client_id, &secret).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("access_token"), "{body}");
    // Once this node has seen the real secret pass, it works from the
    // throttled address too (a shared NAT); guesses from there stay 429.
    let (status, body) = token(&stranger, &app, &client_id, &secret).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = token(&stranger, &app, &client_id, "guess-again").await;
    assert_eq!(status, 429);
}
