//! One tokio SMTP server (RFC 5321), used by the inbound listener for
//! bounces and complaints and by SMTP submission (`crate::submission`): the
//! session loop and its limits are here, what to accept is the [`Handler`]'s.
//! [`Security`] adds STARTTLS (RFC 3207) or implicit TLS (RFC 8314) with
//! rustls, and AUTH PLAIN/LOGIN (RFC 4954), offered only on TLS unless
//! plaintext AUTH is allowed.
//!
//! Limits: command lines of at most 512 octets (§4.5.3.1.4) and text lines of
//! at most [`Limits::max_line`] (1000 by the RFC; lenient by default, real
//! bounces quote long lines), [`Limits::max_message_bytes`] (advertised as
//! SIZE, 552 beyond it), [`Limits::max_recipients`] per transaction (452
//! beyond), [`Limits::max_connections`] at once and
//! [`Limits::max_connections_per_ip`] from one client address (421 4.7.0 to
//! the next, before any other work), a timeout on every line (§4.5.3.2: 5
//! minutes for commands and data blocks) and on a whole DATA transfer
//! ([`Limits::data_timeout`]), [`Limits::max_errors`] bad commands or
//! refused recipients before the connection is closed (each past the third
//! answered after [`Limits::error_delay`]), and with [`Limits::data_budget`]
//! a byte budget for the messages of all sessions at once (452 4.3.1 when
//! it stays full). Command parsing is `smtp-proto`'s.

mod accept;
mod budget;
mod io;
mod sasl;
mod session;

pub use budget::DataBudget;

use std::any::Any;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
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

/// Who a session authenticated as: whatever [`Handler::auth`] returned
/// (the handler downcasts it back); dropped when the session ends.
pub type Identity = Arc<dyn Any + Send + Sync>;

/// The envelope of one accepted transaction.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    pub peer: Option<SocketAddr>,
    pub helo: String,
    /// Set by a successful AUTH; kept across transactions until the
    /// session ends (STARTTLS starts the session over without it).
    pub auth: Option<Identity>,
    /// The session is on TLS (STARTTLS done, or implicit TLS).
    pub tls: bool,
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
    /// AUTH with these credentials (PLAIN or LOGIN): an identity kept for
    /// the session, or the refusal (535). Only called when [`Security::auth`].
    async fn auth(
        &self,
        _peer: Option<SocketAddr>,
        _user: &str,
        _password: &str,
    ) -> Result<Identity, Reply> {
        Err(Reply::new(535, "5.7.8 authentication credentials invalid"))
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
    /// Sessions at once from one client address.
    pub max_connections_per_ip: usize,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    /// Longest line of message text (CRLF excluded).
    pub max_line: usize,
    /// A command line, or a line of message text, from its first byte to
    /// its end.
    pub command_timeout: Duration,
    /// A whole DATA transfer, from the 354 to the final dot.
    pub data_timeout: Duration,
    /// Bad commands and refused recipients before the server closes the
    /// connection.
    pub max_errors: usize,
    /// The wait before each error reply past the third: a client that keeps
    /// erring (guessing recipients) gets answers slowly while it holds one
    /// of its address's few sessions.
    pub error_delay: Duration,
    /// Shared by every session: DATA waits for `max_message_bytes` of it
    /// (at most half the command timeout, then 452). `None`: no budget.
    pub data_budget: Option<DataBudget>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hostname: "postline".into(),
            max_connections: 100,
            max_connections_per_ip: 100,
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 100,
            max_line: 64 * 1024,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_errors: 10,
            error_delay: Duration::from_secs(1),
            data_budget: None,
        }
    }
}

/// TLS and authentication of a listener. The default (no TLS, no AUTH) is
/// the inbound listener's.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// The certificate and key: STARTTLS is offered with it (or, with
    /// `implicit_tls`, every connection starts with the TLS handshake).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    pub implicit_tls: bool,
    /// AUTH PLAIN and LOGIN offered, and MAIL refused (530) until it succeeds.
    pub auth: bool,
    /// AUTH offered before TLS too (loopback testing); else 538 there.
    pub plaintext_auth: bool,
    /// SMTPUTF8 (RFC 6531) advertised: the handler takes UTF-8 addresses.
    pub smtputf8: bool,
}

impl Security {
    pub(crate) fn auth_offered(&self, on_tls: bool) -> bool {
        self.auth && (on_tls || self.plaintext_auth)
    }
}

/// Which connection limit a refused connection met.
#[derive(Clone, Copy, Debug)]
enum Busy {
    /// `max_connections_per_ip`.
    Address,
    /// `max_connections`.
    Server,
}

/// Sessions per client address, counted while they run.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One session's place in [`PerIp`], given back on drop.
struct IpSlot(Arc<PerIp>, IpAddr);

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
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
        Self::bind_with(addr, limits, Security::default(), handler).await
    }

    /// [`Server::bind`] with TLS and AUTH.
    pub async fn bind_with(
        addr: &str,
        limits: Limits,
        security: Security,
        handler: Arc<dyn Handler>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let ctx = Arc::new(session::Ctx { limits, security });
        let task = tokio::spawn(accept_loop(listener, ctx, handler, stopped));
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
    ctx: Arc<session::Ctx>,
    handler: Arc<dyn Handler>,
    mut stopped: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(ctx.limits.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::default());
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
        // The address's own limit first, so one flooding address never holds
        // a slot of the total, even for the moment of its refusal.
        let slot = per_ip.take(peer.ip(), ctx.limits.max_connections_per_ip);
        let permit = slot
            .as_ref()
            .and_then(|_| permits.clone().try_acquire_owned().ok());
        let ctx = ctx.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            match (slot, permit) {
                (Some(_slot), Some(_permit)) => {
                    session::run(stream, peer, &ctx, handler.as_ref()).await
                }
                (None, _) => accept::refuse(stream, &ctx, Busy::Address).await,
                (Some(_), None) => accept::refuse(stream, &ctx, Busy::Server).await,
            }
        });
    }
}
