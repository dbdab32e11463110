//! Per-recipient envelopes in direct delivery (issue 22, finding 2): a
//! domain's envelopes go as transactions in order over one session, a new
//! session once the site's messages per connection are used up.

use super::*;
use postline::delivery::Envelope;

/// One envelope per recipient, each with its own return path.
fn per_recipient(to: &[&str]) -> OutgoingMessage {
    let mut msg = message(to);
    msg.envelopes = to
        .iter()
        .enumerate()
        .map(|(i, rcpt)| Envelope {
            from: format!("b+{i}@bounces.test"),
            recipients: vec![rcpt.to_string()],
            headers: format!("X-Postline-ID: t{i}\r\n"),
            ..Default::default()
        })
        .collect();
    msg
}

#[tokio::test]
async fn a_domains_envelopes_share_a_session_up_to_the_sites_messages_per_connection() {
    let mut w = World::new().await;
    let one = w.mx_host("mx.env-one.test", 5, SinkConfig::default()).await;
    let two = w.mx_host("mx.env-two.test", 6, SinkConfig::default()).await;
    w.dns.add_mx("one.test", 10, "mx.env-one.test");
    w.dns.add_mx("two.test", 10, "mx.env-two.test");
    let mut s = w.settings();
    s.delivery.mx.sites = vec![rule("two", "env-two.test", 2, 2, 100_000)];
    let t = MxTransport::new(&s, options());

    let to = [
        "a@one.test",
        "b@one.test",
        "c@one.test",
        "d@two.test",
        "e@two.test",
        "f@two.test",
    ];
    let out = t.send(&per_recipient(&to)).await;
    assert!(out.is_delivered(), "{out:?}");

    let got = w.sinks[one].wait_for(3, WAIT).await;
    let froms: Vec<&str> = got.iter().map(|m| m.mail_from.as_str()).collect();
    assert_eq!(
        froms,
        ["b+0@bounces.test", "b+1@bounces.test", "b+2@bounces.test"]
    );
    assert!(got.iter().all(|m| m.rcpt_to.len() == 1));
    assert!(got[1].text().starts_with("X-Postline-ID: t1\r\n"));
    assert_eq!(w.sinks[one].connections(), 1, "one session for the domain");
    assert_eq!(w.sinks[one].pipelined(), 3);

    // Two messages per connection at this site: the third envelope opens a
    // second session.
    let got = w.sinks[two].wait_for(3, WAIT).await;
    assert_eq!(got[2].mail_from, "b+5@bounces.test");
    assert_eq!(w.sinks[two].connections(), 2);
    assert_eq!(got[0].connection_id, got[1].connection_id);
    assert_ne!(got[1].connection_id, got[2].connection_id);
}
