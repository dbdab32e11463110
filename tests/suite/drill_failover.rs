//! Postgres failover drill (issue 27): two clusters of their own on
//! loopback, a primary and a synchronous standby (`synchronous_commit = on`,
//! `synchronous_standby_names`, `pg_basebackup -R`); two `postline serve`
//! nodes on a connection string naming both hosts with
//! `target_session_attrs=read-write`. Under load the primary's postmaster
//! is killed (-9) and the standby promoted (`pg_ctl promote`): every
//! acknowledged message is delivered (duplicates counted and reported), the
//! nodes recover without a restart, and the time from the kill to the first
//! accepted send is reported. `#[ignore]`: `deploy/dev drill failover`
//! (needs `POSTLINE_TEST_PG_BIN`, and `POSTLINE_TEST_PG_USER` as root).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::drills::{self, Load, LoadShape, Server, AFTER, BEFORE};
use common::smtp_sink::SmtpSink;

struct Pg {
    bin: String,
    user: String,
    base: PathBuf,
}

impl Pg {
    fn from_env() -> Pg {
        let bin = std::env::var("POSTLINE_TEST_PG_BIN")
            .expect("POSTLINE_TEST_PG_BIN: run with `deploy/dev drill failover`");
        let user = std::env::var("POSTLINE_TEST_PG_USER").unwrap_or_default();
        let base = std::env::temp_dir().join(format!(
            "postline-failover-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&base).unwrap();
        if !user.is_empty() {
            run(Command::new("chown").args([&user, base.to_str().unwrap()]));
        }
        Pg { bin, user, base }
    }

    /// A Postgres program, as the cluster owner.
    fn cmd(&self, program: &str) -> Command {
        let path = format!("{}/{program}", self.bin);
        if self.user.is_empty() {
            Command::new(path)
        } else {
            let mut c = Command::new("runuser");
            c.args(["-u", &self.user, "--", &path]);
            c
        }
    }

    fn dir(&self, name: &str) -> String {
        self.base.join(name).to_str().unwrap().to_string()
    }

    fn opts(&self, port: u16, extra: &str) -> String {
        format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c max_connections=200 {extra}",
            self.base.display()
        )
    }

    fn start(&self, name: &str, opts: &str) {
        let log = format!("{}/{name}.log", self.base.display());
        run(self.cmd("pg_ctl").args([
            "-D",
            &self.dir(name),
            "-l",
            &log,
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        ]));
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        for name in ["primary", "standby"] {
            let _ = self
                .cmd("pg_ctl")
                .args(["-D", &self.dir(name), "-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn psql(pg: &Pg, port: u16, sql: &str) -> String {
    run(pg.cmd("psql").args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-Atc",
        sql,
    ]))
    .trim()
    .to_string()
}

fn postmaster_pid(dir: &Path) -> i32 {
    let text = std::fs::read_to_string(dir.join("postmaster.pid")).expect("postmaster.pid");
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// The postmaster and its children (backends, walsender, …), as a crash
/// of the host would take them: a killed postmaster alone leaves its
/// backends serving their connections for a while.
fn cluster_pids(postmaster: i32) -> Vec<i32> {
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so after the ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

/// Sends one message at a time from now on until one is accepted; the
/// time it took and the id.
async fn first_accepted_send(base: &str, key: &str) -> (Duration, uuid::Uuid) {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no send accepted in 60 s"
        );
        let r = client
            .post(format!("{base}/v1/emails"))
            .bearer_auth(key)
            .json(
                &serde_json::json!({"from": "drill@sender.test", "to": "probe@example.org",
                "subject": "failover probe", "text": "t"}),
            )
            .send()
            .await;
        if let Ok(r) = r {
            if r.status().as_u16() == 202 {
                let v: serde_json::Value = r.json().await.unwrap();
                let id = v["id"].as_str().unwrap().parse().unwrap();
                return (started.elapsed(), id);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a drill: deploy/dev drill failover"]
async fn drill_failover_primary_killed_standby_promoted_loses_no_acknowledged_mail() {
    let pg = Pg::from_env();
    let (p1, p2) = (drills::free_port(), drills::free_port());
    run(pg.cmd("initdb").args([
        "-D",
        &pg.dir("primary"),
        "-U",
        "postgres",
        "-A",
        "trust",
        "--no-sync",
    ]));
    pg.start(
        "primary",
        &pg.opts(
            p1,
            "-c wal_level=replica -c max_wal_senders=5 -c synchronous_commit=on \
             -c synchronous_standby_names=standby1",
        ),
    );
    run(pg.cmd("pg_basebackup").args([
        "-h",
        "127.0.0.1",
        "-p",
        &p1.to_string(),
        "-U",
        "postgres",
        "-D",
        &pg.dir("standby"),
        "-R",
        "-X",
        "stream",
    ]));
    // Named for synchronous_standby_names; once promoted it waits for no one.
    pg.start(
        "standby",
        &pg.opts(
            p2,
            &format!(
                "-c synchronous_standby_names= -c primary_conninfo='host=127.0.0.1 port={p1} user=postgres application_name=standby1'"
            ),
        ),
    );
    let started = Instant::now();
    while psql(&pg, p1, "SELECT sync_state FROM pg_stat_replication") != "sync" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no synchronous standby"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!(
        "postgres://postgres@127.0.0.1:{p1},127.0.0.1:{p2}/postgres?target_session_attrs=read-write"
    );
    let sink = SmtpSink::start().await;
    let mut servers: Vec<Server> = (0..2)
        .map(|_| {
            Server::new(
                &url,
                sink.port(),
                &[("POSTLINE__DATABASE__CONNECT_TIMEOUT_SECS", "2")],
            )
        })
        .collect();
    let http = reqwest::Client::new();
    servers[0].start();
    servers[0].wait_up(&http, Duration::from_secs(60)).await;
    servers[1].start();
    servers[1].wait_up(&http, Duration::from_secs(60)).await;
    let admin = servers[0].admin_key();
    let key = drills::tenant_key(&http, &servers[0].base, &admin).await;
    let shape = LoadShape {
        clients: 3,
        timeout: Duration::from_secs(15),
        ..LoadShape::default()
    };
    let loads: Vec<Load> = servers
        .iter()
        .map(|s| Load::start(&s.base, &key, shape.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before: usize = loads.iter().map(|l| l.stats.acked_count()).sum();
    // kill -9 the primary's postmaster (its backends die with it), then
    // promote the standby, as a failover manager would.
    let pid = postmaster_pid(&pg.base.join("primary"));
    for l in &loads {
        l.stats.set_phase(AFTER);
    }
    let pids: Vec<String> = cluster_pids(pid).iter().map(|p| p.to_string()).collect();
    let killed = Instant::now();
    run(Command::new("kill").arg("-9").args(&pids));
    let probe = {
        let (base, key) = (servers[1].base.clone(), key.clone());
        tokio::spawn(async move { first_accepted_send(&base, &key).await })
    };
    run(pg
        .cmd("pg_ctl")
        .args(["-D", &pg.dir("standby"), "-w", "-t", "60", "promote"]));
    let promoted = killed.elapsed();
    let (first, probe_id) = probe.await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut acked = vec![probe_id];
    let mut statuses = std::collections::BTreeMap::new();
    for l in loads {
        let stats = l.stop().await;
        for (k, v) in stats.statuses(AFTER) {
            *statuses.entry(k).or_insert(0u64) += v;
        }
        assert!(stats.count(BEFORE, 202) > 0);
        acked.extend(stats.acked());
    }
    let r = drills::reconcile(&sink, &acked, Duration::from_secs(90)).await;
    let after = acked.len() - before.min(acked.len());
    eprintln!(
        "failover drill: promote took {promoted:?}; first accepted send {first:?} after the kill \
         ({} processes killed); \
         answers after the kill {statuses:?}; {} acknowledged ({after} after the kill), {} lost, \
         {} duplicated ({} extra copies), {} delivered unacknowledged",
        pids.len(),
        r.acked,
        r.lost.len(),
        r.duplicated_ids,
        r.extra_copies,
        r.unacked_delivered
    );
    assert!(r.lost.is_empty(), "acknowledged but lost: {:?}", r.lost);
    assert!(after > 0, "the nodes did not recover");
    for s in &mut servers {
        s.terminate(Duration::from_secs(20));
    }
}
