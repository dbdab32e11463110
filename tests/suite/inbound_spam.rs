//! rspamd scores for received mail (issue 28): a real rspamd (Debian's
//! `rspamd`, installed by `deploy/dev test`) started on loopback with a
//! minimal configuration of its own; GTUBE is recognised out of the box.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::inbound::{message, route, smtplib, world_with};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// One rspamd process (its normal worker only) on a free loopback port.
pub struct Rspamd {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rspamd {
    pub async fn start() -> Rspamd {
        let bin = ["/usr/bin/rspamd", "/usr/sbin/rspamd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("rspamd is not installed: `deploy/dev test` installs Debian's rspamd (apt-get install rspamd)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("pl-rspamd-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("rspamd.conf");
        std::fs::write(
            &conf,
            format!(
                r#".include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    dns {{ nameserver = ["127.0.0.1:1"]; timeout = 0.2s; retransmits = 1; }}
}}
logging {{ type = "console"; level = "error"; }}
worker "normal" {{
    bind_socket = "127.0.0.1:{port}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
"#
            ),
        )
        .unwrap();
        let d = dir.display().to_string();
        let child = Command::new(bin)
            .args(["-f", "-u", "root", "-g", "root", "-c"])
            .arg(&conf)
            .arg(format!("--var=RUNDIR={d}"))
            .arg(format!("--var=DBDIR={d}"))
            .arg(format!("--var=LOCAL_CONFDIR={d}"))
            .arg(format!("--var=LOGDIR={d}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rspamd starts");
        let r = Rspamd { child, dir, port };
        // Loading its rules takes a while on a busy machine.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "rspamd did not listen within 180 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        r
    }
}

#[tokio::test]
async fn gtube_is_scored_as_spam_by_a_real_rspamd() {
    let rspamd = Rspamd::start().await;
    let url = format!("http://127.0.0.1:{}", rspamd.port);
    let w = world_with(move |s| s.inbound.spam.rspamd_url = url).await;
    route(&w, json!({"match": "*@acme.test", "action": "hold"})).await;
    let spam = message("x@sender.test", "desk@acme.test", "Cheap", GTUBE, "", &[]);
    let out = smtplib(
        w.inbound.addr(),
        "x@sender.test",
        &["desk@acme.test"],
        &spam,
    )
    .await;
    assert_eq!(out["data"][0], 250, "{out}");
    let ham = message(
        "x@sender.test",
        "desk@acme.test",
        "Lunch",
        "See you at noon.",
        "",
        &[],
    );
    let out = smtplib(w.inbound.addr(), "x@sender.test", &["desk@acme.test"], &ham).await;
    assert_eq!(out["data"][0], 250, "{out}");
    let l = w.app.get("/v1/inbound", &w.key).await;
    let by = |s: &str| {
        l.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["subject"] == s)
            .cloned()
            .unwrap_or_else(|| panic!("no {s} in {}", l.text))
    };
    let s = by("Cheap");
    assert_eq!(s["spam"]["action"], "reject", "{s}");
    assert!(s["spam"]["score"].as_f64().unwrap() >= 15.0, "{s}");
    let h = by("Lunch");
    assert_ne!(h["spam"]["action"], "reject", "{h}");
    assert!(h["spam"]["score"].as_f64().unwrap() < 15.0, "{h}");
}

#[tokio::test]
async fn an_unreachable_rspamd_leaves_spam_null_and_the_message_stored() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let w = world_with(move |s| {
        s.inbound.spam.rspamd_url = format!("http://127.0.0.1:{port}");
        s.inbound.spam.timeout_ms = 500;
    })
    .await;
    route(&w, json!({"match": "*@acme.test", "action": "hold"})).await;
    let msg = message("x@sender.test", "desk@acme.test", "Hi", "hello", "", &[]);
    let out = smtplib(w.inbound.addr(), "x@sender.test", &["desk@acme.test"], &msg).await;
    assert_eq!(out["data"][0], 250, "{out}");
    let l = w.app.get("/v1/inbound", &w.key).await;
    assert_eq!(
        l.json["data"][0]["spam"],
        serde_json::Value::Null,
        "{}",
        l.text
    );
    assert_eq!(l.json["data"][0]["status"], "held");
}
