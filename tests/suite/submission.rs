//! SMTP submission (issue 14) with real clients on real sockets: lettre
//! (STARTTLS and implicit TLS against a CA made here with openssl, AUTH
//! PLAIN and LOGIN) and Python's smtplib, into a running app whose worker
//! delivers to the SMTP sink.

mod budget;
mod headers;
mod oauth;

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::smtp_sink::SmtpSink;
use common::TestApp;
use lettre::address::Envelope;
use lettre::message::header::ContentTransferEncoding;
use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use postline::config::Settings;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(20);

/// The test CA's files (`common::test_ca`), deleted on drop.
struct Certs {
    dir: PathBuf,
    ca_pem: Vec<u8>,
}

impl Certs {
    fn make() -> Certs {
        let (dir, ca_pem) = common::test_ca::make("pl-sub");
        Certs { dir, ca_pem }
    }

    fn apply(&self, s: &mut Settings) {
        s.submission.tls_cert_file = self.dir.join("cert.pem").display().to_string();
        s.submission.tls_key_file = self.dir.join("key.pem").display().to_string();
        s.submission.tls_bind = "127.0.0.1:0".into();
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Setup {
    app: TestApp,
    sink: SmtpSink,
    subm: postline::submission::Listeners,
    certs: Certs,
    tenant: String,
    key: String,
}

async fn setup_with(tenant: serde_json::Value, tweak: impl FnOnce(&mut Settings)) -> Setup {
    let certs = Certs::make();
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |s| {
        certs.apply(s);
        tweak(s);
    })
    .await;
    let subm = postline::submission::start(&app.state)
        .await
        .unwrap()
        .expect("submission listeners start");
    let t = app.create_tenant(tenant).await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = app
        .tenant_key(&id, &["send", "emails:read", "domains:write"])
        .await;
    Setup {
        app,
        sink,
        subm,
        certs,
        tenant: id,
        key,
    }
}

async fn setup() -> Setup {
    setup_with(json!({"name": "Acme"}), |_| {}).await
}

impl Setup {
    fn starttls_port(&self) -> u16 {
        self.subm.starttls.addr().port()
    }

    fn tls(&self) -> TlsParameters {
        TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(&self.certs.ca_pem).unwrap())
            .build_rustls()
            .unwrap()
    }

    /// lettre over STARTTLS with `password` and one mechanism.
    fn client(&self, password: &str, mech: Mechanism) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.starttls_port())
            .tls(Tls::Required(self.tls()))
            .credentials(Credentials::new("anyone".into(), password.into()))
            .authentication(vec![mech])
            .timeout(Some(Duration::from_secs(15)))
            .build()
    }
}

fn message(from: &str, to: &str, body: &str) -> Message {
    Message::builder()
        .from(from.parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject("Über SMTP")
        .singlepart(
            SinglePart::builder()
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .header(ContentTransferEncoding::EightBit)
                .body(body.to_string()),
        )
        .unwrap()
}

/// The id in `250 2.0.0 queued as <id>`.
fn queued_id(resp: &lettre::transport::smtp::response::Response) -> String {
    assert_eq!(resp.code().to_string(), "250");
    let line = resp.message().collect::<Vec<_>>().join(" ");
    let id = line
        .strip_prefix("2.0.0 queued as ")
        .unwrap_or_else(|| panic!("reply {line:?}"));
    uuid::Uuid::parse_str(id).expect("an email id");
    id.to_string()
}

fn code_of(e: &lettre::transport::smtp::Error) -> String {
    e.status()
        .map(|c| c.to_string())
        .unwrap_or_else(|| format!("no code: {e}"))
}

async fn wait_delivered(app: &TestApp, key: &str, id: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = app.get(&format!("/v1/emails/{id}"), key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.json["status"] == "delivered" {
            return r.json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never delivered: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn starttls_plain_auth_delivers_as_sent_with_bcc_only_in_the_envelope() {
    let s = setup().await;
    let client = s.client(&s.key, Mechanism::Plain);
    let msg = message(
        "Acme <news@acme.test>",
        "Ann <ann@example.test>",
        "Grüße aus Köln\n.leading dot\n",
    );
    // Bcc by envelope only: the headers name ann, the envelope adds bob.
    let envelope = Envelope::new(
        Some("news@acme.test".parse().unwrap()),
        vec![
            "ann@example.test".parse().unwrap(),
            "bob@example.test".parse().unwrap(),
        ],
    )
    .unwrap();
    let raw = msg.formatted();
    let resp = client.send_raw(&envelope, &raw).await.expect("accepted");
    let id = queued_id(&resp);

    let got = wait_delivered(&s.app, &s.key, &id).await;
    assert_eq!(got["to"], json!(["ann@example.test"]));
    assert_eq!(got["subject"], "Über SMTP");
    assert_eq!(got["from"], "Acme <news@acme.test>");
    let kinds: Vec<(String, String)> = got["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["email"].as_str().unwrap().into(),
                r["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("bob@example.test".into(), "bcc".into())),
        "{kinds:?}"
    );

    let delivered = s.sink.wait_for(1, WAIT).await;
    let m = &delivered[0];
    let mut rcpts = m.rcpt_to.clone();
    rcpts.sort();
    assert_eq!(rcpts, vec!["ann@example.test", "bob@example.test"]);
    let text = m.text();
    assert!(
        !text.to_ascii_lowercase().contains("bob@example.test"),
        "{text}"
    );
    // Kept as sent: the 8-bit body byte for byte, the dot-stuffed line restored.
    let sent = String::from_utf8(raw.clone()).unwrap();
    assert!(
        text.contains(sent.trim_end()),
        "not as sent:\n{text}\n---\n{sent}"
    );
    assert!(text.contains("Grüße aus Köln\r\n.leading dot"), "{text}");
    assert!(text.contains("Content-Transfer-Encoding: 8bit"), "{text}");
    s.subm.stop().await;
}

#[tokio::test]
async fn auth_login_over_implicit_tls_and_argon2_runs_once_for_repeat_logins() {
    let s = setup().await;
    let port = s.subm.implicit_tls.as_ref().unwrap().addr().port();
    let before = s.app.state.auth.argon2_verifications();
    for round in 0..3 {
        // A new session (and login) each round: the cache serves the key.
        let client = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .tls(Tls::Wrapper(s.tls()))
            .credentials(Credentials::new("x".into(), s.key.clone()))
            .authentication(vec![Mechanism::Login])
            .build();
        let resp = client
            .send(message(
                "a@acme.test",
                "c@example.test",
                &format!("round {round}"),
            ))
            .await
            .expect("accepted");
        queued_id(&resp);
    }
    assert_eq!(s.app.state.auth.argon2_verifications() - before, 1);
    assert!(s.sink.wait_count(3, WAIT).await);
}

#[tokio::test]
async fn refusals_have_the_contract_codes() {
    let s = setup_with(
        json!({"name": "Q", "rate_limit": {"emails_per_day": 1}}),
        |st| {
            st.limits.max_message_bytes = 64 * 1024;
        },
    )
    .await;
    // Wrong key, admin key: 535.
    for bad in ["pl_live_nope_nope", s.app.admin_key.as_str()] {
        let e = s
            .client(bad, Mechanism::Plain)
            .send(message("a@acme.test", "b@example.test", "x"))
            .await
            .unwrap_err();
        assert_eq!(code_of(&e), "535", "{e}");
    }
    let client = || s.client(&s.key, Mechanism::Plain);
    // 51 envelope recipients: the 51st RCPT gets 452.
    let many: Vec<lettre::Address> = (0..51)
        .map(|i| format!("r{i}@example.test").parse().unwrap())
        .collect();
    let raw = message("a@acme.test", "r0@example.test", "x").formatted();
    let env = Envelope::new(Some("a@acme.test".parse().unwrap()), many.clone()).unwrap();
    let e = client().send_raw(&env, &raw).await.unwrap_err();
    assert_eq!(code_of(&e), "452", "{e}");
    // Oversize: one byte over limits.max_message_bytes in DATA → 552.
    let big = message("a@acme.test", "b@example.test", &"a\n".repeat(35 * 1024)).formatted();
    let env1 = Envelope::new(
        Some("a@acme.test".parse().unwrap()),
        vec!["b@example.test".parse().unwrap()],
    )
    .unwrap();
    let e = client().send_raw(&env1, &big).await.unwrap_err();
    assert_eq!(code_of(&e), "552", "{e}");
    // At the bound: 50 envelope recipients are accepted; this first message
    // fits the quota of 1; the second: 451 with the reason.
    let env50 = Envelope::new(Some("a@acme.test".parse().unwrap()), many[..50].to_vec()).unwrap();
    queued_id(
        &client()
            .send_raw(&env50, &raw)
            .await
            .expect("50 recipients, first within quota"),
    );
    let e = client().send_raw(&env1, &raw).await.unwrap_err();
    assert_eq!(code_of(&e), "451", "{e}");
    assert!(e.to_string().to_lowercase().contains("quota"), "{e}");
    // Foreign From domain: once the tenant has a domain, others are refused.
    let r = s
        .app
        .post("/v1/domains", &s.key, json!({"name": "acme.test"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let e = client()
        .send(message("a@foreign.test", "b@example.test", "x"))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "550", "{e}");
    assert!(e.to_string().contains("From domain not allowed"), "{e}");
    // Nothing was queued beyond the one message.
    let list = s.app.get("/v1/emails", &s.key).await;
    assert_eq!(
        list.json["data"].as_array().unwrap().len(),
        1,
        "{}",
        list.text
    );
    let _ = &s.tenant;
}

/// Reads one (possibly multi-line) reply; returns its lines.
async fn reply<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).await.unwrap();
        let done = l.as_bytes().get(3) != Some(&b'-');
        lines.push(l.trim_end().to_string());
        if done || l.is_empty() {
            return lines;
        }
    }
}

#[tokio::test]
async fn plaintext_auth_is_refused_before_starttls_and_size_is_checked_at_mail() {
    let s = setup_with(json!({"name": "P"}), |st| {
        st.limits.max_message_bytes = 64 * 1024
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.starttls_port()))
        .await
        .unwrap();
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    assert!(reply(&mut r).await[0].starts_with("220 "));
    w.write_all(b"EHLO t\r\n").await.unwrap();
    let ehlo = reply(&mut r).await.join("\n");
    assert!(
        ehlo.contains("STARTTLS") && ehlo.contains("SIZE 65536") && ehlo.contains("PIPELINING"),
        "{ehlo}"
    );
    assert!(!ehlo.contains("AUTH"), "AUTH offered before TLS: {ehlo}");
    let plain = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("\0u\0{}", s.key),
    );
    w.write_all(format!("AUTH PLAIN {plain}\r\n").as_bytes())
        .await
        .unwrap();
    assert!(reply(&mut r).await[0].starts_with("538 5.7.11"));
    w.write_all(b"MAIL FROM:<a@acme.test>\r\n").await.unwrap();
    assert!(reply(&mut r).await[0].starts_with("530 5.7.0"));
    // With plaintext AUTH allowed (loopback testing): SIZE= over the limit → 552 at MAIL.
    drop((r, w));
    let mut settings = (*s.app.state.settings).clone();
    settings.submission.allow_plaintext_auth = true;
    settings.submission.tls_bind = String::new();
    let mut state = s.app.state.clone();
    state.settings = std::sync::Arc::new(settings);
    let open = postline::submission::start(&state).await.unwrap().unwrap();
    let tcp = tokio::net::TcpStream::connect(open.starttls.addr())
        .await
        .unwrap();
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    reply(&mut r).await;
    w.write_all(b"EHLO t\r\n").await.unwrap();
    assert!(reply(&mut r).await.join("\n").contains("AUTH PLAIN LOGIN"));
    w.write_all(format!("AUTH PLAIN {plain}\r\n").as_bytes())
        .await
        .unwrap();
    assert!(reply(&mut r).await[0].starts_with("235 "));
    w.write_all(b"MAIL FROM:<a@acme.test> SIZE=65537\r\n")
        .await
        .unwrap();
    assert!(reply(&mut r).await[0].starts_with("552 5.3.4"));
    w.write_all(b"MAIL FROM:<a@acme.test> SIZE=65536\r\n")
        .await
        .unwrap();
    assert!(reply(&mut r).await[0].starts_with("250 "));
    // X-Postline-Scheduled-At: the API's bounds (here: more than 30 days
    // ahead → 550 5.5.4 with the reason), then a valid time → `scheduled`.
    w.write_all(b"RCPT TO:<b@example.test>\r\nDATA\r\n")
        .await
        .unwrap();
    assert!(reply(&mut r).await[0].starts_with("250 "));
    assert!(reply(&mut r).await[0].starts_with("354 "));
    w.write_all(b"From: a@acme.test\r\nTo: b@example.test\r\nX-Postline-Scheduled-At: 2099-01-01T00:00:00Z\r\nSubject: s\r\n\r\nb\r\n.\r\n").await.unwrap();
    let l = reply(&mut r).await;
    assert!(
        l[0].starts_with("550 5.5.4 X-Postline-Scheduled-At must be at most 30 days ahead"),
        "{l:?}"
    );
    let at = (chrono::Utc::now() + chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    w.write_all(b"MAIL FROM:<a@acme.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
        .await
        .unwrap();
    for want in ["250 ", "250 ", "354 "] {
        assert!(reply(&mut r).await[0].starts_with(want));
    }
    w.write_all(
        format!("From: a@acme.test\r\nTo: b@example.test\r\nX-Postline-Scheduled-At: {at}\r\nSubject: later\r\n\r\nb\r\n.\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let l = reply(&mut r).await;
    let id = l[0]
        .strip_prefix("250 2.0.0 queued as ")
        .unwrap_or_else(|| panic!("{l:?}"))
        .trim()
        .to_string();
    let g = s.app.get(&format!("/v1/emails/{id}"), &s.key).await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.json["status"], "scheduled", "{}", g.text);
    let when = chrono::DateTime::parse_from_rfc3339(g.json["scheduled_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(
        when.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        at,
        "{}",
        g.text
    );
    // The header is an instruction to Postline, not part of the message.
    let raw = diesel_raw_message(&s.app, &id);
    assert!(
        !String::from_utf8_lossy(&raw).contains("X-Postline-Scheduled-At"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    open.stop().await;
}

/// The stored message of `id`, as the worker will send it.
fn diesel_raw_message(app: &TestApp, id: &str) -> Vec<u8> {
    use diesel::prelude::*;
    use postline::db::schema::emails::dsl as e;
    let id: uuid::Uuid = id.parse().expect("an email id");
    let mut conn = app.pool().get().expect("a connection");
    e::emails
        .filter(e::id.eq(id))
        .select(e::raw_message)
        .first::<Option<Vec<u8>>>(&mut conn)
        .expect("the message row")
        .expect("a raw message")
}

#[tokio::test]
async fn python_smtplib_submits_over_starttls() {
    let s = setup().await;
    let ca = s.certs.dir.join("ca.pem");
    let script = r#"
import smtplib, ssl, sys
port, key, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
with smtplib.SMTP("localhost", port, timeout=15) as s:
    s.starttls(context=ctx)
    s.login("app", key)
    s.mail("hello@acme.test")
    s.rcpt("py@example.test")
    code, resp = s.data(b"From: hello@acme.test\r\nTo: py@example.test\r\nSubject: from python\r\n\r\nhi\r\n")
    print(code, resp.decode())
"#;
    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            script,
            &s.starttls_port().to_string(),
            &s.key,
            &ca.display().to_string(),
        ])
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout
        .trim()
        .strip_prefix("250 2.0.0 queued as ")
        .unwrap_or_else(|| panic!("{stdout}"));
    let got = wait_delivered(&s.app, &s.key, id).await;
    assert_eq!(got["subject"], "from python");
    let m = s.sink.wait_for(1, WAIT).await;
    assert!(
        m[0].text().contains("Message-ID: <"),
        "a Message-ID is added when missing"
    );
}

#[tokio::test]
async fn sessions_are_bounded_per_client_address_and_per_tenant() {
    let s = setup_with(json!({"name": "B"}), |st| {
        st.submission.allow_plaintext_auth = true;
        st.submission.max_connections_per_ip = 2;
        st.submission.max_connections_per_tenant = 1;
    })
    .await;
    let plain = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("\0u\0{}", s.key),
    );
    let open = || async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.starttls_port()))
            .await
            .unwrap();
        let (r, w) = tcp.into_split();
        let mut r = BufReader::new(r);
        let greeting = reply(&mut r).await;
        (r, w, greeting)
    };
    let (mut r1, mut w1, g1) = open().await;
    let (mut r2, mut w2, g2) = open().await;
    assert!(g1[0].starts_with("220 ") && g2[0].starts_with("220 "));
    // The third from the same address: 421, closed.
    let (_r3, _w3, g3) = open().await;
    assert!(g3[0].starts_with("421 4.7.0"), "{g3:?}");
    // One authenticated session per tenant: the second AUTH gets 454.
    for (r, w) in [(&mut r1, &mut w1), (&mut r2, &mut w2)] {
        w.write_all(b"EHLO t\r\n").await.unwrap();
        reply(r).await;
        w.write_all(format!("AUTH PLAIN {plain}\r\n").as_bytes())
            .await
            .unwrap();
    }
    assert!(reply(&mut r1).await[0].starts_with("235 "));
    let second = reply(&mut r2).await;
    assert!(second[0].starts_with("454 4.7.0"), "{second:?}");
    // Once the first session ends, the tenant may log in again.
    w1.write_all(b"QUIT\r\n").await.unwrap();
    reply(&mut r1).await;
    // (The server ends it just after the 221; 454 is not an error, retry.)
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        w2.write_all(format!("AUTH PLAIN {plain}\r\n").as_bytes())
            .await
            .unwrap();
        let l = reply(&mut r2).await;
        if l[0].starts_with("235 ") {
            break;
        }
        assert!(
            l[0].starts_with("454 ") && tokio::time::Instant::now() < deadline,
            "{l:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
