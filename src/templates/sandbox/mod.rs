//! Tenant templates render in child processes with a memory and a time
//! limit (issue 11, finding 1). minijinja's fuel counts instructions, and one
//! instruction can build a string of any size (`'x' * 100000000`, `a ~ a`
//! doubling, `join`/`replace` over lazy repetitions, tuple repetition): no
//! in-process check covers every operator and filter, so the bound is the
//! operating system's. Each child (`postline template-sandbox`) caps its own
//! data segment (`RLIMIT_DATA`, `templates.render_memory_mb` above what it
//! uses at start) and arms a CPU-time timer per render; a template that exceeds
//! either kills only that child, the caller gets 422 `template_render_failed`
//! naming the limit, and the next render starts a fresh child.
//!
//! At most `templates.render_processes` children exist, so the memory that
//! rendering can take is `render_processes × render_memory_mb`, however many
//! requests arrive. Renders wait for a free one in turn, within their
//! tenant's share and for at most `templates.render_wait_ms` ([`slots`]).
//! The limit also holds the job itself: its variables (at most
//! `limits.max_request_bytes`) are held about four times (the JSON line,
//! the variables' text, parsed, as engine values), which the 64 MiB default
//! leaves room for.
//!
//! A child starts with an empty environment (issue 22, finding 10): the
//! server's may hold the master key or a database URL, and a child runs
//! tenant code.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};

mod child;
mod slots;

pub use child::serve_stdio;

use super::render::{self, Rendered};
use crate::config::TemplateSettings;
use crate::domain::TenantId;
use crate::error::{AppError, FieldError};

/// The CPU time one render (all parts of one template) may use.
pub const RENDER_TIMEOUT_MS: u64 = 2_000;

/// One template to render, as sent to a child.
#[derive(Serialize, Deserialize)]
pub struct Job {
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    /// A JSON object, parsed by the child (within its memory limit).
    pub variables: Box<serde_json::value::RawValue>,
    pub prefix: String,
}

/// A child's answer.
#[derive(Serialize, Deserialize)]
enum Reply {
    Ok(Rendered),
    Err {
        code: String,
        detail: String,
        errors: Vec<(String, String)>,
    },
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

struct Pool {
    idle: Vec<Proc>,
    live: usize,
}

#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    slots: slots::Slots,
    program: PathBuf,
    memory_mb: u64,
    max: usize,
    pool: Mutex<Pool>,
    freed: Condvar,
}

impl Sandbox {
    pub fn new(s: &TemplateSettings) -> anyhow::Result<Self> {
        let program = if s.sandbox_program.is_empty() {
            std::env::current_exe().map_err(|e| {
                anyhow::anyhow!("templates.sandbox_program: cannot find this binary ({e}); set it")
            })?
        } else {
            PathBuf::from(&s.sandbox_program)
        };
        Ok(Self {
            inner: Arc::new(Inner {
                slots: slots::Slots::new(s),
                program,
                memory_mb: s.render_memory_mb,
                max: s.render_processes.max(1),
                pool: Mutex::new(Pool {
                    idle: Vec::new(),
                    live: 0,
                }),
                freed: Condvar::new(),
            }),
        })
    }

    /// Renders `job` for `tenant` in a child, once a process is free for it
    /// ([`slots`]); the exchange with the child runs on the blocking pool.
    pub async fn render(&self, tenant: TenantId, job: Job) -> Result<Rendered, AppError> {
        let line = job_line(&job)?;
        let field = format!("{}template", job.prefix);
        drop(job);
        let slot = self.inner.slots.acquire(tenant).await?;
        let sandbox = self.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            sandbox.render_blocking(&line, &field)
        })
        .await
        .map_err(|e| AppError::internal("template render task", e))?
    }

    /// Renders a job line in a child; blocks. Callers hold a
    /// [`slots::Slot`], so a process is idle or may be started. `field`
    /// names the template in a failure.
    fn render_blocking(&self, line: &[u8], field: &str) -> Result<Rendered, AppError> {
        let mut proc = self.checkout()?;
        match exchange(&mut proc, line) {
            Ok(reply) => {
                self.checkin(proc);
                match reply {
                    Reply::Ok(r) => Ok(r),
                    Reply::Err {
                        code,
                        detail,
                        errors,
                    } => Err(error_of(&code, detail, errors)),
                }
            }
            Err(io) => {
                let _ = proc.child.kill();
                let status = proc.child.wait();
                self.discard();
                tracing::warn!(error = %io, status = ?status, "template render process died");
                let why = match status.as_ref().ok().and_then(signal_of) {
                    Some(libc::SIGPROF) => {
                        format!("the template uses more than {RENDER_TIMEOUT_MS} ms of CPU time")
                    }
                    // An allocation refused by RLIMIT_DATA aborts; so does a
                    // stack overflow; the kernel's OOM killer sends SIGKILL.
                    Some(libc::SIGABRT | libc::SIGKILL | libc::SIGSEGV) => format!(
                        "the template needs more than {} MiB of memory",
                        self.inner.memory_mb
                    ),
                    _ => {
                        return Err(AppError::internal(
                            "template sandbox",
                            format!("render process ended unexpectedly: {io}; {status:?}"),
                        ))
                    }
                };
                Err(render::failed(field, &why))
            }
        }
    }

    fn checkout(&self) -> Result<Proc, AppError> {
        let mut pool = self
            .inner
            .pool
            .lock()
            .map_err(|_| AppError::internal("template sandbox", "pool lock poisoned"))?;
        loop {
            if let Some(p) = pool.idle.pop() {
                return Ok(p);
            }
            if pool.live < self.inner.max {
                pool.live += 1;
                drop(pool);
                return self.spawn().inspect_err(|_| self.discard());
            }
            pool = self
                .inner
                .freed
                .wait(pool)
                .map_err(|_| AppError::internal("template sandbox", "pool lock poisoned"))?;
        }
    }

    fn checkin(&self, p: Proc) {
        if let Ok(mut pool) = self.inner.pool.lock() {
            pool.idle.push(p);
        }
        self.inner.freed.notify_one();
    }

    fn discard(&self) {
        if let Ok(mut pool) = self.inner.pool.lock() {
            pool.live = pool.live.saturating_sub(1);
        }
        self.inner.freed.notify_one();
    }

    fn spawn(&self) -> Result<Proc, AppError> {
        let mut child = Command::new(&self.inner.program)
            .arg("template-sandbox")
            .arg("--memory-mb")
            .arg(self.inner.memory_mb.to_string())
            // Nothing of the server's environment: the child needs none of it.
            .env_clear()
            // A child that aborts on its memory limit must not first map the
            // whole binary to print a backtrace (~130 MB of RSS with debug info).
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                AppError::internal(
                    "template sandbox",
                    format!("cannot start {}: {e}", self.inner.program.display()),
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(AppError::internal("template sandbox", "no pipes"));
        };
        Ok(Proc {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(pool) = self.pool.get_mut() {
            for p in &mut pool.idle {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

fn signal_of(status: &std::process::ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(status)
}

/// The job as one line of JSON, in a buffer sized for it up front: growing
/// one by doubling would hold up to three times the variables at once.
fn job_line(job: &Job) -> Result<Vec<u8>, AppError> {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let size = job.subject.len()
        + text(&job.html)
        + text(&job.text)
        + job.variables.get().len()
        + job.prefix.len();
    // Room for the field names and some escaping.
    let mut line = Vec::with_capacity(size + size / 8 + 128);
    serde_json::to_writer(&mut line, job).map_err(|e| AppError::internal("template job", e))?;
    Ok(line)
}

fn exchange(p: &mut Proc, line: &[u8]) -> std::io::Result<Reply> {
    p.stdin.write_all(line)?;
    p.stdin.write_all(b"\n")?;
    p.stdin.flush()?;
    let mut answer = String::new();
    if p.stdout.read_line(&mut answer)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "render process exited",
        ));
    }
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}

/// The codes a child may answer with, as the `&'static str` AppError keeps.
fn known_code(code: &str) -> &'static str {
    match code {
        "template_variable_missing" => "template_variable_missing",
        "validation_failed" => "validation_failed",
        _ => "template_render_failed",
    }
}

/// Turns a child's error back into the caller's 422.
fn error_of(code: &str, detail: String, errors: Vec<(String, String)>) -> AppError {
    AppError::Validation {
        code: known_code(code),
        detail,
        errors: errors
            .into_iter()
            .map(|(f, m)| FieldError::new(f, m))
            .collect(),
    }
}
