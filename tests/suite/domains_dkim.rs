//! DKIM signing end to end: a message delivered to the SMTP sink verifies
//! against the keys published in the loopback DNS server, with two verifiers
//! that are not the signing code — mail-auth's verifier resolving through
//! that server, and Python's dkimpy — for RSA and Ed25519; one changed header
//! byte fails both; a rotated key signs only once its record is published.

use std::time::Duration;

use mail_auth::common::verify::VerifySignature;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use serde_json::{json, Value};

use crate::common::dns_server::DnsServer;
use crate::common::smtp_sink::SmtpSink;
use crate::common::TestApp;
use crate::domains::{dkim_records, publish_all, tenant, verified_domain};

async fn serving(dns: &DnsServer, sink: &SmtpSink) -> TestApp {
    let ns = dns.nameserver();
    TestApp::spawn_serving(sink.port(), move |s| {
        s.dns.nameservers = vec![ns];
        s.domains.require_verified = true;
        s.domains.cache_secs = 1;
    })
    .await
}

/// mail-auth's verifier on its own resolver, pointed at the test server.
pub fn verifier(dns: &DnsServer) -> MessageAuthenticator {
    let mut ns = NameServerConfig::udp_and_tcp(dns.addr.ip());
    for c in &mut ns.connections {
        c.port = dns.addr.port();
    }
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    MessageAuthenticator::new(ResolverConfig::from_parts(None, vec![], vec![ns]), opts).unwrap()
}

/// `(selector, algorithm, passed)` per DKIM-Signature.
pub async fn mail_auth_results(
    v: &MessageAuthenticator,
    raw: &[u8],
) -> Vec<(String, String, bool)> {
    let msg = AuthenticatedMessage::parse(raw).expect("message parses");
    v.verify_dkim(&msg)
        .await
        .iter()
        .map(|o| {
            let sig = o.signature().expect("signature parsed");
            (
                sig.selector().to_string(),
                format!("{:?}", sig.algorithm()),
                o.result() == &DkimResult::Pass,
            )
        })
        .collect()
}

const DKIMPY: &str = r#"
import json, sys
import dkim
records = json.load(open(sys.argv[2]))
def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    v = records.get(n.rstrip(".").lower())
    return v.encode() if v is not None else None
msg = open(sys.argv[1], "rb").read()
count = sum(1 for line in msg.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
d = dkim.DKIM(msg)
print(json.dumps([bool(d.verify(idx=i, dnsfunc=dnsfunc)) for i in range(count)]))
"#;

/// dkimpy's verdict per signature (index order), resolving `records`.
pub fn dkimpy(raw: &[u8], records: &[(String, String)]) -> Vec<bool> {
    let dir = std::env::temp_dir().join(format!("pl-dkim-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (eml, recs, script) = (dir.join("m.eml"), dir.join("r.json"), dir.join("v.py"));
    std::fs::write(&eml, raw).unwrap();
    let map: serde_json::Map<String, Value> = records
        .iter()
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    std::fs::write(&recs, serde_json::to_vec(&map).unwrap()).unwrap();
    std::fs::write(&script, DKIMPY).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&eml)
        .arg(&recs)
        .output()
        .expect("python3 runs (deploy/dev test installs dkimpy and pynacl)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "dkimpy failed (is it installed? `pip install dkimpy pynacl`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tamper_subject(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw).into_owned();
    assert!(text.contains("Subject: Quarterly report"));
    text.replacen("Subject: Quarterly report", "Subject: Quarterly reporT", 1)
        .into_bytes()
}

fn mail() -> Value {
    json!({"from": "Acme <hello@acme.test>", "to": "rcpt@example.org", "cc": "cc@example.org",
           "reply_to": "support@acme.test", "subject": "Quarterly report", "text": "Numbers.\r\n", "html": "<p>Numbers.</p>"})
}

#[tokio::test]
async fn delivered_mail_carries_rsa_and_ed25519_signatures_that_independent_verifiers_accept() {
    let dns = DnsServer::start().await;
    let sink = SmtpSink::start().await;
    let app = serving(&dns, &sink).await;
    let (_, key) = tenant(&app).await;
    let d = verified_domain(
        &app,
        &dns,
        &key,
        json!({"name": "acme.test",
        "dkim": {"algorithms": ["rsa-sha256", "ed25519-sha256"]}}),
    )
    .await;
    assert_eq!(d["dkim"].as_array().unwrap().len(), 2);
    let r = app.post("/v1/emails", &key, mail()).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    let raw = got[0].data.clone();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("DKIM-Signature:"),
        "signature prepended: {text}"
    );
    assert!(text.contains("c=relaxed/relaxed"));
    assert!(
        text.contains("@acme.test>"),
        "Message-ID on the sending domain"
    );
    let h = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    for signed in [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "reply-to",
    ] {
        assert!(h.contains(signed), "{signed} signed");
    }

    let v = verifier(&dns);
    let results = mail_auth_results(&v, &raw).await;
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results.iter().all(|r| r.2), "mail-auth: {results:?}");
    assert!(
        results.iter().any(|r| r.1.contains("Ed25519")),
        "{results:?}"
    );
    assert_eq!(dkimpy(&raw, &dkim_records(&d)), vec![true, true]);

    let bad = tamper_subject(&raw);
    let results = mail_auth_results(&v, &bad).await;
    assert!(
        results.iter().all(|r| !r.2),
        "tampered must fail: {results:?}"
    );
    assert_eq!(dkimpy(&bad, &dkim_records(&d)), vec![false, false]);
}

#[tokio::test]
async fn a_rotated_key_signs_only_once_its_record_is_published() {
    let dns = DnsServer::start().await;
    let sink = SmtpSink::start().await;
    let app = serving(&dns, &sink).await;
    let (_, key) = tenant(&app).await;
    let d = verified_domain(&app, &dns, &key, json!({"name": "acme.test"})).await;
    let old = d["dkim"][0]["selector"].as_str().unwrap().to_string();
    let r = app
        .post("/v1/domains/acme.test/dkim/rotate", &key, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let keys = r.json["dkim"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    let new = keys.iter().find(|k| k["status"] == "pending").unwrap()["selector"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(old, new);
    let again = app
        .post("/v1/domains/acme.test/dkim/rotate", &key, json!({}))
        .await;
    assert_eq!(again.status, 409, "one rotation at a time");

    // Not yet published: still signed with the old selector.
    assert_eq!(app.post("/v1/emails", &key, mail()).await.status, 202);
    let first = sink.wait_for(1, Duration::from_secs(20)).await;
    let v = verifier(&dns);
    let res = mail_auth_results(&v, &first[0].data).await;
    assert_eq!(res, vec![(old.clone(), "RsaSha256".to_string(), true)]);

    publish_all(&dns, &r.json);
    let after = app
        .post("/v1/domains/acme.test/verify", &key, json!({}))
        .await;
    let status_of = |sel: &str| {
        after.json["dkim"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["selector"] == sel)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(
        (status_of(&old), status_of(&new)),
        (json!("retiring"), json!("active")),
        "{}",
        after.text
    );
    tokio::time::sleep(Duration::from_millis(1500)).await; // the worker's key cache (cache_secs = 1)
    assert_eq!(app.post("/v1/emails", &key, mail()).await.status, 202);
    let both = sink.wait_for(2, Duration::from_secs(20)).await;
    let res = mail_auth_results(&v, &both[1].data).await;
    assert_eq!(res, vec![(new, "RsaSha256".to_string(), true)]);
}
