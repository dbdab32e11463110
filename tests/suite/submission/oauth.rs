//! An OAuth access token (issue 15) as the SMTP password, as it is a bearer
//! token on the API: its client's tenant and scope decide, like a key's. Such
//! a token is longer than an SMTP command line, hence the AUTH line bound.

use super::*;

#[tokio::test]
async fn an_oauth_access_token_is_a_submission_password_with_its_scope() {
    let s = setup().await;
    let path = format!("/v1/tenants/{}/oauth-clients", s.tenant);
    let (_, id, secret) = crate::oauth::client(&s.app, &path, &["send", "emails:read"]).await;
    let token = crate::oauth::token(&s.app, &id, &secret, None).await;

    let resp = s
        .client(&token, Mechanism::Plain)
        .send(message("a@acme.test", "t@example.test", "by token"))
        .await
        .expect("accepted with the token");
    let mail = queued_id(&resp);
    let got = wait_delivered(&s.app, &s.key, &mail).await;
    assert_eq!(got["to"], json!(["t@example.test"]));

    // Narrowed to reading: no `send`, so 535 as for a key without it.
    let read_only = crate::oauth::token(&s.app, &id, &secret, Some("emails:read")).await;
    // A token whose signature is not ours: 535 too.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    for bad in [read_only, forged] {
        let err = s
            .client(&bad, Mechanism::Login)
            .send(message("a@acme.test", "t@example.test", "refused"))
            .await
            .expect_err("refused");
        assert_eq!(code_of(&err), "535", "{err}");
    }
    s.subm.stop().await;
}

/// Command lines end at 512 bytes (RFC 5321), except AUTH, whose initial
/// response (such a token) may fill the SASL line bound of 12 KiB.
#[tokio::test]
async fn command_lines_are_bounded_and_auth_lines_hold_a_long_credential() {
    let s = setup().await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.starttls_port()))
        .await
        .unwrap();
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    assert!(reply(&mut r).await[0].starts_with("220 "));
    let padded = |head: &str, len: usize| {
        let mut line = head.to_string();
        line.push_str(&"A".repeat(len - head.len() - 2));
        line.push_str("\r\n");
        assert_eq!(line.len(), len);
        line
    };
    for (line, want) in [
        (padded("NOOP ", 512), "250 "),
        (padded("NOOP ", 513), "500 5.5.2 line too long"),
        // Not cut short: refused for what it is (AUTH before TLS).
        (padded("AUTH PLAIN ", 4096), "538 "),
        (padded("AUTH PLAIN ", 12 * 1024), "538 "),
        (
            padded("AUTH PLAIN ", 12 * 1024 + 1),
            "500 5.5.2 line too long",
        ),
        ("NOOP\r\n".to_string(), "250 "),
    ] {
        w.write_all(line.as_bytes()).await.unwrap();
        let got = reply(&mut r).await;
        assert!(got[0].starts_with(want), "{} bytes: {got:?}", line.len());
    }
    s.subm.stop().await;
}
