//! `submission.max_inflight_bytes`: with room for one message, a second
//! session's DATA waits for the first one's message to be handled, and gets
//! `452 4.3.1` when the wait (half the command timeout) runs out; then it
//! sends once the first is done. Raw sockets, plaintext AUTH on loopback.

use super::*;

async fn session(
    s: &Setup,
    port: u16,
) -> (
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    assert!(reply(&mut r).await[0].starts_with("220 "));
    let plain = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("\0u\0{}", s.key),
    );
    w.write_all(format!("EHLO t\r\nAUTH PLAIN {plain}\r\n").as_bytes())
        .await
        .unwrap();
    reply(&mut r).await;
    assert!(reply(&mut r).await[0].starts_with("235 "));
    (r, w)
}

async fn to_data<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
) -> String {
    w.write_all(b"MAIL FROM:<a@acme.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
        .await
        .unwrap();
    assert!(reply(r).await[0].starts_with("250 "));
    assert!(reply(r).await[0].starts_with("250 "));
    reply(r).await.remove(0)
}

#[tokio::test]
async fn the_inflight_budget_holds_data_until_a_message_is_done() {
    let s = setup_with(json!({"name": "Budget"}), |st| {
        st.limits.max_message_bytes = 64 * 1024;
        st.submission.max_inflight_bytes = 64 * 1024;
        st.submission.allow_plaintext_auth = true;
        st.submission.tls_bind = String::new();
        st.submission.command_timeout_secs = 10;
    })
    .await;
    let port = s.starttls_port();
    let (mut ra, mut wa) = session(&s, port).await;
    let (mut rb, mut wb) = session(&s, port).await;

    // A holds the budget mid-message.
    assert!(to_data(&mut ra, &mut wa).await.starts_with("354 "));
    wa.write_all(b"From: a@acme.test\r\nTo: b@example.test\r\nSubject: a\r\n\r\nfirst half\r\n")
        .await
        .unwrap();
    // B's DATA waits half the command timeout (5 s), then 452.
    let started = std::time::Instant::now();
    let refused = to_data(&mut rb, &mut wb).await;
    assert!(refused.starts_with("452 4.3.1"), "{refused}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // A finishes: accepted. Now B's retry gets its 354 and is accepted too.
    wa.write_all(b"second half\r\n.\r\n").await.unwrap();
    let done = reply(&mut ra).await.remove(0);
    assert!(done.starts_with("250 2.0.0 queued as"), "{done}");
    assert!(to_data(&mut rb, &mut wb).await.starts_with("354 "));
    wb.write_all(b"From: a@acme.test\r\nTo: b@example.test\r\nSubject: b\r\n\r\nbody\r\n.\r\n")
        .await
        .unwrap();
    let done = reply(&mut rb).await.remove(0);
    assert!(done.starts_with("250 2.0.0 queued as"), "{done}");
    assert!(s.sink.wait_count(2, WAIT).await);
    s.subm.stop().await;
}
