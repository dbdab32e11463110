//! One transaction per envelope (issue 22, finding 2) against the real SMTP
//! sink: every envelope of a message goes with its own `MAIL FROM` and its
//! own header lines in front of the shared content, in order over one
//! connection, pipelined when the server offers PIPELINING and one command
//! at a time when it does not (the sink then refuses pipelined input, as
//! Postfix's `reject_unauth_pipelining` does); a refusal in one envelope
//! leaves the session usable for the next.

use crate::common;

use std::time::Duration;

use common::smtp_sink::{SinkConfig, SmtpSink};
use postline::config::TlsMode;
use postline::delivery::{
    Envelope, Fate, Outcome, OutgoingMessage, RelayConfig, SmtpOptions, SmtpTransport, Transport,
};
use postline::domain::TenantId;

const WAIT: Duration = Duration::from_secs(5);

fn transport(sink: &SmtpSink) -> SmtpTransport {
    let relay = RelayConfig {
        host: "127.0.0.1".into(),
        port: sink.port(),
        tls: TlsMode::None,
        username: None,
        password: None,
    };
    let options = SmtpOptions {
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        data_timeout: Duration::from_secs(5),
        ..SmtpOptions::default()
    };
    SmtpTransport::new(relay, options)
}

/// A message with one envelope per recipient: return path `b+<i>@…` and an
/// `X-Postline-ID: t<i>` line of its own.
fn per_recipient(to: &[&str]) -> OutgoingMessage {
    let raw = lettre::Message::builder()
        .from("App <app@sender.test>".parse().unwrap())
        .to("list@example.org".parse().unwrap())
        .subject("envelopes")
        .body("Shared content\r\n.dot-led line\r\n".to_string())
        .unwrap()
        .formatted();
    let envelopes = to
        .iter()
        .enumerate()
        .map(|(i, rcpt)| Envelope {
            from: format!("b+{i}@bounces.test"),
            recipients: vec![rcpt.to_string()],
            headers: format!("X-Postline-ID: t{i}\r\n"),
            ..Default::default()
        })
        .collect();
    OutgoingMessage {
        tenant_id: TenantId::new(),
        email_id: uuid::Uuid::new_v4(),
        envelopes,
        raw,
    }
}

fn fates(outcome: &Outcome) -> Vec<(String, Fate)> {
    match outcome {
        Outcome::PerRecipient { recipients, .. } => recipients
            .iter()
            .map(|r| (r.recipient.clone(), r.fate))
            .collect(),
        other => panic!("expected per-recipient fates, got {other:?}"),
    }
}

/// Each envelope arrived as its own transaction, on one connection, with
/// its header line before the shared content.
fn assert_one_transaction_each(sink: &SmtpSink, msg: &OutgoingMessage) {
    let got = sink.messages();
    assert_eq!(got.len(), msg.envelopes.len(), "{got:?}");
    for (m, env) in got.iter().zip(&msg.envelopes) {
        assert_eq!(m.mail_from, env.from);
        assert_eq!(m.rcpt_to, env.recipients);
        let mut want = env.headers.clone().into_bytes();
        want.extend_from_slice(&msg.raw);
        assert_eq!(m.data, want, "header line, then the content byte for byte");
        assert_eq!(m.connection_id, got[0].connection_id);
    }
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn each_envelope_is_its_own_pipelined_transaction_on_one_connection() {
    let sink = SmtpSink::start().await;
    let t = transport(&sink);
    let msg = per_recipient(&["a@example.org", "b@example.org", "c@example.org"]);
    let out = t.send(&msg).await;
    assert!(out.is_delivered(), "{out:?}");
    sink.wait_for(3, WAIT).await;
    assert_one_transaction_each(&sink, &msg);
    assert_eq!(sink.pipelined(), 3, "MAIL, RCPT and DATA in one write each");
}

#[tokio::test]
async fn without_pipelining_the_transactions_go_one_command_at_a_time() {
    let sink = SmtpSink::start_with(SinkConfig {
        no_pipelining: true,
        ..SinkConfig::default()
    })
    .await;
    let t = transport(&sink);
    let msg = per_recipient(&["a@example.org", "b@example.org", "c@example.org"]);
    let out = t.send(&msg).await;
    assert!(out.is_delivered(), "{out:?}");
    sink.wait_for(3, WAIT).await;
    assert_one_transaction_each(&sink, &msg);
    assert_eq!(sink.pipelined(), 0);
    assert!(sink.rejected().is_empty(), "{:?}", sink.rejected());
}

#[tokio::test]
async fn a_refused_recipient_leaves_the_session_to_the_next_envelope() {
    for no_pipelining in [false, true] {
        let sink = SmtpSink::start_with(SinkConfig {
            no_pipelining,
            ..SinkConfig::default()
        })
        .await;
        let t = transport(&sink);
        let msg = per_recipient(&[
            "a@example.org",
            "bounce@example.org",
            "defer@example.org",
            "c@example.org",
        ]);
        let out = t.send(&msg).await;
        assert_eq!(
            fates(&out),
            vec![
                ("a@example.org".into(), Fate::Delivered),
                ("bounce@example.org".into(), Fate::Bounced),
                ("defer@example.org".into(), Fate::Deferred),
                ("c@example.org".into(), Fate::Delivered),
            ],
            "pipelining off: {no_pipelining}"
        );
        let got = sink.wait_for(2, WAIT).await;
        assert_eq!(got[1].mail_from, "b+3@bounces.test");
        assert_eq!(sink.connections(), 1, "pipelining off: {no_pipelining}");
    }
}

/// MAIL refused inside a pipelined batch: the RCPT and DATA replies behind
/// it are read, so the next envelope's replies are its own.
#[tokio::test]
async fn a_mail_refused_in_a_pipelined_batch_keeps_the_session_in_step() {
    let sink = SmtpSink::start_with(SinkConfig {
        require_auth: Some(("u".into(), "p".into())),
        ..SinkConfig::default()
    })
    .await;
    let t = transport(&sink);
    let msg = per_recipient(&["a@example.org", "b@example.org"]);
    let out = t.send(&msg).await;
    let Outcome::Deferred { response } = &out else {
        panic!("{out:?}")
    };
    assert!(response.starts_with("MAIL refused: 530"), "{response}");
    assert_eq!(sink.pipelined(), 2);
    assert_eq!(sink.connections(), 1, "the session stayed usable");
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn a_pooled_connection_the_server_dropped_is_replaced_once() {
    let sink = SmtpSink::start().await;
    let t = transport(&sink);
    assert!(t
        .send(&per_recipient(&["first@example.org"]))
        .await
        .is_delivered());
    sink.drop_connections().await;
    let msg = per_recipient(&["a@example.org", "b@example.org"]);
    let out = t.send(&msg).await;
    assert!(out.is_delivered(), "{out:?}");
    let got = sink.wait_for(3, WAIT).await;
    assert_eq!(got[1].connection_id, got[2].connection_id);
    assert_eq!(sink.connections(), 2);
}
