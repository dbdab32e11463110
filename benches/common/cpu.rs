//! CPU accounting for the load benchmarks: the whole process (getrusage),
//! one thread of it (the load client's or the SMTP sink's, so they can be
//! subtracted), and the Postgres cluster under test (its postmaster and
//! backends, read from /proc).

use std::time::Duration;

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    timeval(ru.ru_utime) + timeval(ru.ru_stime)
}

/// User + system CPU of this whole process so far.
pub fn process() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// User + system CPU of the calling thread so far.
pub fn this_thread() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

/// The kernel id of the calling thread (to read its CPU from elsewhere).
pub fn tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `(ppid, utime + stime + cutime + cstime)` from a `/proc/.../stat` line
/// (clock ticks; 10 ms resolution, fine for phases of seconds).
fn stat_times(stat: &str) -> Option<(i32, u64)> {
    // The command name may hold spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let sum = (11..15).map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0));
    Some((ppid, sum.sum()))
}

/// CPU of one thread of this process, by kernel thread id.
pub fn thread(tid: i32) -> Duration {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|s| stat_times(&s))
        .map_or(Duration::ZERO, |(_, t)| {
            Duration::from_secs_f64(t as f64 / ticks())
        })
}

/// The cluster listening on `port`: its postmaster's pid (found by the
/// `-p PORT` of its command line, as `deploy/dev` starts it).
pub fn postmaster(port: u16) -> Option<i32> {
    let want = port.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_pg = args
            .first()
            .is_some_and(|a| a.ends_with(b"/postgres") || *a == b"postgres");
        let on_port = args
            .windows(2)
            .any(|w| w[0] == b"-p" && w[1] == want.as_bytes());
        if is_pg && on_port {
            return Some(pid);
        }
    }
    None
}

/// CPU used so far by the cluster whose postmaster is `pid`: the postmaster
/// (with its reaped children, i.e. backends already gone) plus every live
/// child. Zero when it cannot be read.
pub fn cluster(pid: i32) -> Duration {
    let mut total = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for entry in dir.flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        if let Some((ppid, t)) = stat_times(&stat) {
            if p == pid || ppid == pid {
                total += t;
            }
        }
    }
    Duration::from_secs_f64(total as f64 / ticks())
}

/// The port of a `postgres://…@host:PORT/db` URL.
pub fn port_of(url: &str) -> Option<u16> {
    let after_at = url.rsplit_once('@').map_or(url, |(_, r)| r);
    let host_port = after_at.split('/').next()?;
    host_port.rsplit_once(':')?.1.parse().ok()
}

/// CPU split of one phase: this process (server side, i.e. minus the
/// client and sink threads), the client thread, the sink thread, Postgres.
#[derive(Clone, Copy, Debug, Default)]
pub struct Split {
    pub server: Duration,
    pub client: Duration,
    pub sink: Duration,
    pub postgres: Duration,
}

/// Snapshots to subtract: `Meter::start` before a phase, `stop` after.
#[derive(Clone, Copy)]
pub struct Meter {
    process: Duration,
    sink_tid: Option<i32>,
    sink: Duration,
    postmaster: Option<i32>,
    postgres: Duration,
}

impl Meter {
    pub fn start(sink_tid: Option<i32>, postmaster: Option<i32>) -> Meter {
        Meter {
            process: process(),
            sink_tid,
            sink: sink_tid.map_or(Duration::ZERO, thread),
            postmaster,
            postgres: postmaster.map_or(Duration::ZERO, cluster),
        }
    }

    /// `client` is the client thread's own CPU over the phase (it measures
    /// itself with [`this_thread`]).
    pub fn stop(&self, client: Duration) -> Split {
        let process = process().saturating_sub(self.process);
        let sink = self
            .sink_tid
            .map_or(Duration::ZERO, |t| thread(t).saturating_sub(self.sink));
        let postgres = self
            .postmaster
            .map_or(Duration::ZERO, |p| cluster(p).saturating_sub(self.postgres));
        Split {
            server: process.saturating_sub(client).saturating_sub(sink),
            client,
            sink,
            postgres,
        }
    }
}

impl Split {
    /// `server 41.2 us/msg, client 6.1, sink 0.0, postgres 80.3 (cores: …)`.
    pub fn per_message(&self, n: usize, wall: Duration) -> String {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        let cores = |d: Duration| d.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        format!(
            "server {:.1} us/msg ({:.2} cores), client {:.1} ({:.2}), sink {:.1} ({:.2}), postgres {:.1} ({:.2})",
            per(self.server),
            cores(self.server),
            per(self.client),
            cores(self.client),
            per(self.sink),
            cores(self.sink),
            per(self.postgres),
            cores(self.postgres),
        )
    }
}
