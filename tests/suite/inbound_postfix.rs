//! Issue 28, "Postfix relaying to the listener": Debian's Postfix, in a
//! configuration of its own (loopback only, `relayhost` = the inbound
//! listener), takes mail from Python's smtplib and relays it. The routed
//! address reaches the tenant's webhook signed and parsed, with Postfix's
//! `Received` header; an address without a route is refused by the
//! listener, so Postfix bounces it and nothing is stored. Skipped, saying
//! so, where Postfix is not installed or cannot run (it needs root).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::inbound::{hooks_at, message, route, smtplib, world_with, WAIT};

const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// A Postfix master of this test's own, stopped (by its own `postfix -c …
/// stop`) and removed on drop.
struct Postfix {
    dir: PathBuf,
    port: u16,
}

impl Postfix {
    /// `Err`: why it cannot run here (the test then says SKIPPED).
    fn start(relay: SocketAddr) -> Result<Postfix, String> {
        if !Path::new("/usr/sbin/postfix").exists() {
            return Err("Debian's postfix is not installed (deploy/dev test installs it)".into());
        }
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("postfix needs root to start its master".into());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("pl-postfix-{}", uuid::Uuid::new_v4()));
        let pf = Postfix { dir, port };
        let (conf, data) = (pf.dir.join("conf"), pf.dir.join("data"));
        for d in [&conf, &data, &pf.dir.join("queue")] {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pf.dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(&data)
            .status()
            .map_err(|e| e.to_string())?;
        if !chown.success() {
            return Err("no postfix user to own its data directory".into());
        }
        let d = pf.dir.display();
        let main = format!(
            "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
             myhostname = relay.postline.test\nmydestination =\ninet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             relayhost = [{}]:{}\nsmtp_tls_security_level = none\n\
             smtp_dns_support_level = disabled\nmaillog_file_prefixes = {}\n\
             maillog_file = {d}/maillog\nlocal_transport = error:no local delivery\n\
             alias_maps =\nalias_database =\n",
            relay.ip(),
            relay.port(),
            std::env::temp_dir().display(),
        );
        std::fs::write(conf.join("main.cf"), main).map_err(|e| e.to_string())?;
        let master = format!("127.0.0.1:{port} inet n - n - - smtpd\n{MASTER_CF}");
        std::fs::write(conf.join("master.cf"), master).map_err(|e| e.to_string())?;
        let started = Command::new("postfix")
            .arg("-c")
            .arg(&conf)
            .arg("start")
            .status()
            .map_err(|e| e.to_string())?;
        if !started.success() {
            return Err(format!("postfix did not start: {}", pf.log()));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("postfix did not listen: {}", pf.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(pf)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits until the log has `needle` (Postfix's own account of a delivery).
    async fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the Postfix log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.dir.join("conf"))
            .arg("stop")
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn postfix_relays_routed_mail_to_the_listener_and_bounces_the_rest() {
    let w = world_with(|_| {}).await;
    let pf = match Postfix::start(w.inbound.addr()) {
        Ok(pf) => pf,
        Err(why) => {
            eprintln!("SKIPPED postfix_relays_routed_mail_to_the_listener: {why}");
            return;
        }
    };
    route(
        &w,
        json!({"match": "support@acme.test", "action": "webhook", "webhook_id": w.hook}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let msg = message(
        "dave@sender.test",
        "support@acme.test",
        "Through Postfix",
        "Relayed once.",
        "",
        &[("note.txt", "text/plain", b"RELAYED".to_vec())],
    );
    let out = smtplib(pf.addr(), "dave@sender.test", &["support@acme.test"], &msg).await;
    assert_eq!(out["data"][0], 250, "Postfix queued it: {out}");
    let log = pf.wait_log("to=<support@acme.test>").await;
    assert!(log.contains("status=sent"), "{log}");
    let h = hooks_at(&w.rx, "/acme.test", 1).await;
    assert!(h[0].verified, "signed");
    let data = &h[0].body["data"];
    assert_eq!(data["subject"], "Through Postfix", "{data}");
    assert_eq!(data["recipient"], "support@acme.test");
    assert_eq!(data["attachments"][0]["filename"], "note.txt", "{data}");
    let received: Vec<&str> = data["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| {
            x["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("received"))
        })
        .filter_map(|x| x["value"].as_str())
        .collect();
    assert!(
        received.iter().any(|v| v.contains("relay.postline.test")),
        "Postfix's Received header: {received:?}"
    );

    // No route: the listener refuses it during Postfix's session, so
    // Postfix bounces it; nothing is stored.
    let msg = message("dave@sender.test", "nobody@acme.test", "Lost", "x", "", &[]);
    let out = smtplib(pf.addr(), "dave@sender.test", &["nobody@acme.test"], &msg).await;
    assert_eq!(out["data"][0], 250, "{out}");
    let log = pf.wait_log("to=<nobody@acme.test>").await;
    let line = log
        .lines()
        .find(|l| l.contains("to=<nobody@acme.test>"))
        .unwrap();
    assert!(
        line.contains("status=bounced") && line.contains("550"),
        "{line}"
    );
    let list = w.app.get("/v1/inbound", &w.key).await;
    let subjects: Vec<&str> = list.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["subject"].as_str())
        .collect();
    assert_eq!(subjects, vec!["Through Postfix"]);
}
