//! Issue 22, finding 1: over SMTP submission a message names its author
//! once. Two `From:` fields (the first another domain's), a `Sender:` or
//! `Resent-From:` of a domain the tenant may not send from, a repeated
//! once-only field or a line that is not a field are refused with the
//! contract's codes and the reason, and nothing is queued; a message whose
//! header set is sound is sent, without a forged `X-Postline-ID`.

use super::*;

async fn refused(s: &Setup, message: &str) -> (String, String) {
    let env = Envelope::new(
        Some("a@acme.test".parse().unwrap()),
        vec!["b@example.test".parse().unwrap()],
    )
    .unwrap();
    let e = s
        .client(&s.key, Mechanism::Plain)
        .send_raw(&env, message.as_bytes())
        .await
        .expect_err(message);
    (code_of(&e), e.to_string())
}

#[tokio::test]
async fn author_fields_are_single_and_within_the_tenants_domains() {
    let s = setup().await;
    let r = s
        .app
        .post("/v1/domains", &s.key, json!({"name": "acme.test"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let body = "To: b@example.test\r\nSubject: s\r\n\r\nhi\r\n";
    let cases = [
        // The reported case: a foreign From first, the tenant's own last.
        (
            format!("From: ceo@victim.test\r\nFrom: a@acme.test\r\n{body}"),
            "554",
            "2 From header fields",
        ),
        (
            format!("From: a@acme.test, ceo@victim.test\r\n{body}"),
            "554",
            "exactly one address",
        ),
        (
            format!("From: a@acme.test\r\nSender: ceo@victim.test\r\n{body}"),
            "550",
            "Sender domain not allowed",
        ),
        (
            format!("From: a@acme.test\r\nSender: a@acme.test\r\nSender: b@acme.test\r\n{body}"),
            "554",
            "2 Sender header fields",
        ),
        (
            format!("From: a@acme.test\r\nResent-From: ceo@victim.test\r\n{body}"),
            "550",
            "Resent-From domain not allowed",
        ),
        (
            format!("From: a@acme.test\r\nSubject: Invoice\r\n{body}"),
            "554",
            "2 Subject header fields",
        ),
        (
            format!("From: a@acme.test\r\nTo: c@example.test\r\n{body}"),
            "554",
            "2 To header fields",
        ),
        (
            format!("From: a@acme.test\r\nX-A: 1\rFrom: ceo@victim.test\r\n{body}"),
            "554",
            "bare CR",
        ),
    ];
    for (message, code, reason) in &cases {
        let (got, text) = refused(&s, message).await;
        assert_eq!(&got, code, "{text} for {message:?}");
        assert!(text.contains(reason), "{text} for {message:?}");
        assert!(
            text.contains(if *code == "554" { "5.6.0" } else { "5.7.1" }),
            "{text}"
        );
    }
    let list = s.app.get("/v1/emails", &s.key).await;
    assert_eq!(list.json["data"], json!([]), "queued: {}", list.text);

    // A sound header set with a Sender of the tenant's own domain is sent;
    // the X-Postline-ID the client wrote is not (Postline writes its own).
    let env = Envelope::new(
        Some("a@acme.test".parse().unwrap()),
        vec!["b@example.test".parse().unwrap()],
    )
    .unwrap();
    let ok = format!(
        "From: a@acme.test\r\nSender: ops@mail.acme.test\r\nX-Postline-ID: forged\r\n{body}"
    );
    let resp = s
        .client(&s.key, Mechanism::Plain)
        .send_raw(&env, ok.as_bytes())
        .await
        .expect("a sound message is accepted");
    queued_id(&resp);
    let got = s.sink.wait_for(1, WAIT).await;
    let text = got[0].text();
    assert!(!text.contains("forged"), "{text}");
    assert!(text.contains("Sender: ops@mail.acme.test"), "{text}");
}
