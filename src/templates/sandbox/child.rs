//! The child side of the sandbox: `postline template-sandbox` limits its own
//! memory, then answers one render per line of stdin.

use std::io::{BufRead, Write};

use super::{Job, Reply, RENDER_TIMEOUT_MS};
use crate::error::AppError;
use crate::templates::render;

/// `postline template-sandbox`: limits itself, then renders one job per
/// line of stdin, answering one line each, until stdin closes.
pub fn serve_stdio(memory_mb: u64) -> anyhow::Result<()> {
    limit_self(memory_mb)?;
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lines() {
        let job: Job = serde_json::from_str(&line?)?;
        arm_timer(RENDER_TIMEOUT_MS);
        let rendered = serde_json::from_str(job.variables.get())
            .map_err(|e| AppError::internal("template variables", e))
            .and_then(|variables| {
                render::render(
                    &job.subject,
                    job.html.as_deref(),
                    job.text.as_deref(),
                    &variables,
                    &job.prefix,
                )
            });
        let reply = match rendered {
            Ok(r) => Reply::Ok(r),
            Err(e) => to_reply(e),
        };
        arm_timer(0);
        serde_json::to_writer(&mut stdout, &reply)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
    }
    Ok(())
}

fn to_reply(e: AppError) -> Reply {
    match e {
        AppError::Validation {
            code,
            detail,
            errors,
        } => Reply::Err {
            code: code.to_string(),
            detail,
            errors: errors.into_iter().map(|f| (f.field, f.message)).collect(),
        },
        other => Reply::Err {
            code: "template_render_failed".into(),
            detail: other.to_string(),
            errors: Vec::new(),
        },
    }
}

/// Caps this process's data segment at `memory_mb` above its current size
/// and switches core dumps off (a child killed for its memory must not
/// write one).
fn limit_self(memory_mb: u64) -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let data_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let limit = (data_kb * 1024).saturating_add(memory_mb * 1024 * 1024);
    let set = |res, value: u64| {
        let lim = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            anyhow::bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_DATA, limit)?;
    set(libc::RLIMIT_CORE, 0)
}

/// Arms (or with 0 disarms) a one-shot timer of this process's CPU time
/// (user + system): SIGPROF's default action ends the process, which the
/// parent reports as a timeout. CPU time, not wall time, so a render that
/// waits for a core on a loaded machine is not cut short.
fn arm_timer(ms: u64) {
    let value = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: (ms / 1000) as libc::time_t,
            tv_usec: ((ms % 1000) * 1000) as libc::suseconds_t,
        },
    };
    // SAFETY: setitimer reads `value`; the old value is not requested.
    unsafe {
        libc::setitimer(libc::ITIMER_PROF, &value, std::ptr::null_mut());
    }
}
