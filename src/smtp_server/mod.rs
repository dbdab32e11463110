//! One tokio SMTP server (RFC 5321), used by the inbound listener for
//! bounces and complaints and meant for SMTP submission too: the session loop
//! and its limits are here, what to accept is the [`Handler`]'s.
//!
//! Limits: command lines of at most 512 octets (§4.5.3.1.4) and text lines of
//! at most [`Limits::max_line`] (1000 by the RFC; lenient by default, real
//! bounces quote long lines), [`Limits::max_message_bytes`] (advertised as
//! SIZE, 552 beyond it), [`Limits::max_recipients`] per transaction (452
//! beyond), [`Limits::max_connections`] at once (421 to the next),
//! a timeout on every read (§4.5.3.2: 5 minutes for commands and data
//! blocks), and [`Limits::max_errors`] bad commands before the connection is
//! closed. Command parsing is `smtp-proto`'s.

mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// A reply: code, enhanced status and text, e.g. `550 5.7.1 relay denied`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            text: text.into(),
        }
    }

    pub fn ok() -> Self {
        Reply::new(250, "2.0.0 OK")
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }
}

/// The envelope of one accepted transaction.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    pub peer: Option<SocketAddr>,
    pub helo: String,
    /// Empty for the null sender `<>` (every DSN has it).
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
}

/// What a server accepts. Every method is called on the session's task.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// `MAIL FROM`: accept (250) or refuse.
    async fn mail(&self, _env: &Envelope, _from: &str) -> Reply {
        Reply::ok()
    }
    /// `RCPT TO`: accept (250) or refuse (550 for anything it does not serve).
    async fn rcpt(&self, env: &Envelope, to: &str) -> Reply;
    /// The message after the final dot (dot-unstuffed, CRLF line endings).
    async fn data(&self, env: Envelope, message: Vec<u8>) -> Reply;
}

#[derive(Clone, Debug)]
pub struct Limits {
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    pub max_connections: usize,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    /// Longest line of message text (CRLF excluded).
    pub max_line: usize,
    /// Each read of a command or a data block.
    pub command_timeout: Duration,
    /// Bad commands before the server closes the connection.
    pub max_errors: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hostname: "postline".into(),
            max_connections: 100,
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 100,
            max_line: 64 * 1024,
            command_timeout: Duration::from_secs(300),
            max_errors: 10,
        }
    }
}

/// A running server; dropping the handle does not stop it, [`Server::stop`] does.
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `addr` (port 0: any free port) and serves in the background.
    pub async fn bind(
        addr: &str,
        limits: Limits,
        handler: Arc<dyn Handler>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::new(limits), handler, stopped));
        Ok(Server { addr, stop, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; sessions in progress finish on their own.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    limits: Arc<Limits>,
    handler: Arc<dyn Handler>,
    mut stopped: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, most likely: back off instead of spinning.
                tracing::warn!(error = %e, "smtp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let permit = permits.clone().try_acquire_owned();
        let limits = limits.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            match permit {
                Ok(_permit) => session::run(stream, peer, &limits, handler.as_ref()).await,
                Err(_) => session::refuse_busy(stream, &limits).await,
            }
        });
    }
}
