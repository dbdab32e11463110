//! `deploy/dev run` as a newcomer runs it, twice in a row, with its default
//! Postgres port (55432) held by another program: it picks another port,
//! remembers it, reuses its own cluster on the second run, allows loopback
//! webhooks (local mode), prints what another shell needs, and never
//! connects to the program on 55432. No build: `POSTLINE_DEV_BIN` points at
//! the binary this suite was built with, `POSTLINE_DEV_DATA` at a temp dir.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

const DEFAULT_PG_PORT: u16 = 55432;

/// Holds a port and counts every connection made to it.
struct Squatter {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Squatter {
    fn hold(port: u16) -> Option<Squatter> {
        let listener = TcpListener::bind(("127.0.0.1", port)).ok()?;
        listener.set_nonblocking(true).ok()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Some(Squatter { accepted, stop })
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Dev {
    data: PathBuf,
    bind: String,
}

/// Stops the test's cluster and removes its directory however the test
/// ends (a failed assertion must not leave a Postgres running).
struct Cleanup<'a> {
    dev: &'a Dev,
    dir: PathBuf,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.dev.output(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Dev {
    fn command(&self, args: &[&str]) -> Command {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut cmd = Command::new(Path::new(root).join("deploy/dev"));
        for (k, _) in std::env::vars() {
            if k.starts_with("POSTLINE") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.args(args)
            .env("POSTLINE_DEV_DATA", &self.data)
            .env("POSTLINE_DEV_BIN", env!("CARGO_BIN_EXE_postline"))
            .env("POSTLINE__SERVER__BIND", &self.bind)
            .env("POSTLINE__SERVER__WORKERS", "1")
            // SMTP submission on a free port: tests run side by side.
            .env("POSTLINE__SUBMISSION__BIND", "127.0.0.1:0")
            .stdin(Stdio::null());
        cmd
    }

    fn start_run(&self, log: &Path) -> Child {
        let out = File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        self.command(&["run"])
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn deploy/dev run")
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run deploy/dev")
    }
}

/// Waits for `needle` in the log (the child must stay up meanwhile).
fn wait_for(child: &mut Child, log: &Path, needle: &str) -> String {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("deploy/dev run exited ({status}):\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no {needle:?} after 120 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn interrupt(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(45) {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "{status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("deploy/dev run did not stop on SIGINT");
}

fn admin_key_of(banner: &str) -> Option<String> {
    banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin key"))
        .map(str::trim)
        .filter(|k| k.starts_with("pl_admin_"))
        .map(str::to_string)
}

#[tokio::test]
async fn deploy_dev_run_twice_with_the_default_port_busy_uses_its_own_cluster_only() {
    let squatter = Squatter::hold(DEFAULT_PG_PORT);
    let tmp =
        std::env::temp_dir().join(format!("postline-devrun-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp).unwrap();
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dev = Dev {
        data: tmp.join("data"),
        bind: format!("127.0.0.1:{http_port}"),
    };
    let _cleanup = Cleanup {
        dev: &dev,
        dir: tmp.clone(),
    };
    let base = format!("http://{}", dev.bind);
    let client = reqwest::Client::new();
    let listening = format!("listening on {base}");

    // First run: a new cluster on some other port, an admin key.
    let log1 = tmp.join("run1.log");
    let mut child = dev.start_run(&log1);
    let banner = wait_for(&mut child, &log1, &listening);
    let pg_port: u16 = std::fs::read_to_string(dev.data.join("pg.port"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pg_port, DEFAULT_PG_PORT, "{banner}");
    let key = admin_key_of(&banner).unwrap_or_else(|| panic!("no admin key in:\n{banner}"));
    assert!(banner.contains("loopback/private"), "{banner}");
    // Where a person goes next: the console (and how to get a user), the docs.
    assert!(banner.contains(&format!("{base}/console")), "{banner}");
    assert!(banner.contains("user create --admin --email"), "{banner}");
    assert!(banner.contains(&format!("{base}/docs")), "{banner}");
    let front = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(front.url().path(), "/console/login");
    assert!(
        banner.contains(&format!(". {}/env", dev.data.display())),
        "{banner}"
    );
    let r = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(&key)
        .json(&json!({"name": "Dev run"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let tenant: serde_json::Value = r.json().await.unwrap();
    // Local mode: a webhook receiver on loopback is allowed.
    let r = client
        .post(format!(
            "{base}/v1/tenants/{}/webhooks",
            tenant["id"].as_str().unwrap()
        ))
        .bearer_auth(&key)
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["email.delivered"]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 201, "{}", r.text().await.unwrap_or_default());
    interrupt(child);

    // Second run: the same cluster (its remembered port), no new key.
    let log2 = tmp.join("run2.log");
    let mut child = dev.start_run(&log2);
    let banner = wait_for(&mut child, &log2, &listening);
    assert!(admin_key_of(&banner).is_none(), "{banner}");
    assert!(banner.contains(&format!("127.0.0.1:{pg_port}")), "{banner}");
    // A new client: the first one's pooled connection died with run 1.
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{base}/v1/tenants"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{page}");
    interrupt(child);

    // The CLI from "another shell": the wrapper, and the env file.
    let out = dev.output(&["postline", "admin-key", "create", "--name", "second"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = std::fs::read_to_string(dev.data.join("env")).unwrap();
    let mut cli = Command::new(env!("CARGO_BIN_EXE_postline"));
    cli.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for line in env.lines() {
        if let Some((k, v)) = line.trim_start_matches("export ").split_once('=') {
            cli.env(k, v);
        }
    }
    let out = cli
        .args(["admin-key", "create", "--name", "third"])
        .current_dir(&tmp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = dev.output(&["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(s) = &squatter {
        assert_eq!(
            s.accepted.load(Ordering::Relaxed),
            0,
            "something connected to the program on port {DEFAULT_PG_PORT}"
        );
    }
}

/// `deploy/dev test` ends with one line that names what failed, and exits
/// non-zero: forced here with a target that does not exist (cargo refuses
/// it before building anything; the target dir is a temp one, so this does
/// not wait for the build lock of the cargo that runs this suite).
#[test]
fn deploy_dev_test_names_the_failed_target_on_its_last_line() {
    let tmp = std::env::temp_dir().join(format!(
        "postline-devtest-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(Path::new(root).join("deploy/dev"))
        .args(["test", "--test", "no_such_target"])
        .env("CARGO_TARGET_DIR", &tmp)
        .stdin(Stdio::null())
        .output()
        .expect("run deploy/dev test");
    let _ = std::fs::remove_dir_all(&tmp);
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    assert!(!out.status.success(), "{text}");
    assert!(
        last.starts_with("[postline] FAILED") && last.contains("no_such_target"),
        "last line: {last}\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
