//! One pooled SMTP transport per relay. Connections are opened here, not by
//! lettre's pool, for two reasons measured on this hardware (DESIGN §13):
//! lettre's sockets lack TCP_NODELAY, which costs ~40 ms per message on a
//! reused connection, and its `PoolConfig::max_size` caps idle connections,
//! not concurrency. So: our own socket with `set_nodelay(true)` handed to
//! `AsyncSmtpConnection::connect_with_transport`, our own idle list, and a
//! semaphore bounding connections per relay.
//!
//! lettre's `tracing` feature must stay off: it logs every line written,
//! AUTH included.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::session::{self, Envelope};
use super::{tls, Outcome, OutgoingMessage, RelayConfig, Transport};
use crate::config::TlsMode;
use crate::net_guard::{Guard, Refusal};

/// Timeouts and limits of SMTP transports.
#[derive(Clone, Debug)]
pub struct SmtpOptions {
    /// TCP connect (and, for `tls` mode, the TLS handshake).
    pub connect_timeout: Duration,
    /// Each command reply, greeting and EHLO/STARTTLS/AUTH included.
    pub command_timeout: Duration,
    /// Sending the message body and reading the final reply.
    pub data_timeout: Duration,
    /// One whole attempt (`delivery.attempt_timeout_secs`): connecting and
    /// the transaction, from the moment a connection slot is held. Past it
    /// the attempt defers, whatever step it was at.
    pub attempt_timeout: Duration,
    /// Idle connections older than this are closed instead of reused.
    pub idle_timeout: Duration,
    /// Connections (and so messages in flight) per relay at most.
    pub max_connections: usize,
    /// The EHLO name; the host name when `None`.
    pub hello_name: Option<String>,
    /// The SSRF guard for relays a tenant chose: only addresses it allows
    /// (after DNS) are connected to. `None` for the operator's default relay.
    pub guard: Option<Guard>,
    /// `delivery.allow_plaintext_auth`: AUTH without TLS to any relay, not
    /// only to a loopback IP literal.
    pub allow_plaintext_auth: bool,
}

impl Default for SmtpOptions {
    fn default() -> Self {
        SmtpOptions {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(900),
            idle_timeout: Duration::from_secs(30),
            max_connections: 16,
            hello_name: None,
            guard: None,
            allow_plaintext_auth: false,
        }
    }
}

struct IdleConnection {
    conn: AsyncSmtpConnection,
    since: Instant,
}

pub struct SmtpTransport {
    relay: RelayConfig,
    options: SmtpOptions,
    hello: ClientId,
    idle: Mutex<Vec<IdleConnection>>,
    permits: Semaphore,
}

impl SmtpTransport {
    pub fn new(relay: RelayConfig, options: SmtpOptions) -> Self {
        let hello = match &options.hello_name {
            Some(name) => ClientId::Domain(name.clone()),
            None => ClientId::default(),
        };
        let permits = Semaphore::new(options.max_connections.max(1));
        SmtpTransport {
            relay,
            options,
            hello,
            idle: Mutex::new(Vec::new()),
            permits,
        }
    }

    pub fn relay(&self) -> &RelayConfig {
        &self.relay
    }

    /// Connections open and waiting for the next message.
    pub fn idle_connections(&self) -> usize {
        self.idle_list().len()
    }

    /// A poisoned lock only means a panic elsewhere; the list is still whole.
    fn idle_list(&self) -> MutexGuard<'_, Vec<IdleConnection>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used live connection, so surplus ones age out.
    fn checkout(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle_list();
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() <= self.options.idle_timeout && !entry.conn.has_broken() {
                return Some(entry.conn);
            }
            close_politely(entry.conn);
        }
        None
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        let idle_timeout = self.options.idle_timeout;
        let mut idle = self.idle_list();
        let (fresh, expired): (Vec<_>, Vec<_>) = std::mem::take(&mut *idle)
            .into_iter()
            .partition(|e| e.since.elapsed() <= idle_timeout);
        *idle = fresh;
        idle.push(IdleConnection {
            conn,
            since: Instant::now(),
        });
        drop(idle);
        expired.into_iter().for_each(|e| close_politely(e.conn));
    }

    /// Opens a session ready for `MAIL`: greeting, EHLO, STARTTLS and AUTH
    /// as configured. The error's `public` text is stored with the deferral
    /// (the tenant reads it: no relay address); `detail` is for the log.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SessionError> {
        let RelayConfig { host, port, .. } = &self.relay;
        let limit = self.options.connect_timeout;
        let tcp = match timeout(limit, self.open_tcp(host, *port)).await {
            Err(_) => {
                return Err(SessionError::same(format!(
                    "connection to the relay timed out after {limit:?}"
                )))
            }
            Ok(Err(Opened::Refused(r))) => {
                return Err(SessionError {
                    public: "relay address refused by the SSRF guard".into(),
                    detail: format!("refused by the SSRF guard: {r}"),
                })
            }
            Ok(Err(Opened::Io(e))) => return Err(connect_error(&e)),
            Ok(Ok(tcp)) => tcp,
        };
        self.session(tcp).await
    }

    /// The TCP connection: straight to `host` for the default relay; for a
    /// tenant's relay, only to the resolved addresses the guard allows.
    async fn open_tcp(&self, host: &str, port: u16) -> Result<TcpStream, Opened> {
        let Some(guard) = self.options.guard else {
            return TcpStream::connect((host, port)).await.map_err(Opened::Io);
        };
        let addrs = guard.resolve(host, port).await.map_err(Opened::Refused)?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = Some(e),
            }
        }
        Err(Opened::Io(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
        })))
    }

    /// Greeting, EHLO, STARTTLS and AUTH on an open socket.
    async fn session(&self, tcp: TcpStream) -> Result<AsyncSmtpConnection, SessionError> {
        let RelayConfig { host, .. } = &self.relay;
        let limit = self.options.connect_timeout;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY; delivery will be slow");
        }
        let stream: Box<dyn AsyncTokioStream> = if self.relay.tls == TlsMode::Tls {
            match timeout(limit, tls::connect(tcp, host)).await {
                Err(_) => {
                    return Err(SessionError::same(format!(
                        "tls handshake with the relay timed out after {limit:?}"
                    )))
                }
                Ok(result) => Box::new(result.map_err(|e| SessionError {
                    public: "tls handshake with the relay failed".into(),
                    detail: e.to_string(),
                })?),
            }
        } else {
            Box::new(tcp)
        };

        let cmd = self.options.command_timeout;
        let mut conn = session::within(
            cmd,
            "greeting/EHLO",
            AsyncSmtpConnection::connect_with_transport(stream, &self.hello),
        )
        .await
        .map_err(SessionError::same)?;
        if self.relay.tls == TlsMode::Starttls {
            if !conn.can_starttls() {
                return Err(SessionError::same("the relay does not offer STARTTLS"));
            }
            let params = TlsParameters::new(host.clone()).map_err(|e| SessionError {
                public: "TLS setup for the relay failed".into(),
                detail: e.to_string(),
            })?;
            session::within(cmd, "STARTTLS", conn.starttls(params, &self.hello))
                .await
                .map_err(SessionError::same)?;
        }
        if let Some(user) = &self.relay.username {
            session::check_auth_allowed(&self.relay, self.options.allow_plaintext_auth)?;
            let password = self.relay.password.as_ref().map(|p| p.expose().to_owned());
            let credentials = Credentials::new(user.clone(), password.unwrap_or_default());
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            session::within(cmd, "AUTH", conn.auth(&mechanisms, &credentials))
                .await
                .map_err(SessionError::same)?;
        }
        Ok(conn)
    }

    /// Connects, logging the operator's detail (relay address included) at
    /// warn; the tenant-visible text goes into the outcome.
    async fn connect_logged(&self, email_id: uuid::Uuid) -> Result<AsyncSmtpConnection, Outcome> {
        self.connect().await.map_err(|e| {
            tracing::warn!(
                %email_id,
                relay = %format_args!("{}:{}", self.relay.host, self.relay.port),
                detail = %e.detail,
                "relay session failed"
            );
            Outcome::deferred(e.public)
        })
    }
}

/// Why a session could not be opened: `public` is stored and shown to the
/// tenant (never the relay's address, a file path or a DNS name of ours),
/// `detail` goes to the operator's log.
pub(super) struct SessionError {
    pub public: String,
    pub detail: String,
}

impl SessionError {
    /// Text that names nothing of the infrastructure (a relay reply, a
    /// timeout): stored and logged alike.
    pub(super) fn same(text: impl Into<String>) -> Self {
        let text = text.into();
        SessionError {
            public: text.clone(),
            detail: text,
        }
    }
}

#[async_trait]
impl Transport for SmtpTransport {
    #[tracing::instrument(skip_all, fields(
        tenant_id = %msg.tenant_id,
        email_id = %msg.email_id,
        relay = %format_args!("{}:{}", self.relay.host, self.relay.port),
    ))]
    async fn send(&self, msg: &OutgoingMessage) -> Outcome {
        let envelope = match Envelope::parse(msg) {
            Ok(envelope) => envelope,
            Err(outcome) => return outcome,
        };
        let Ok(_permit) = self.permits.acquire().await else {
            return Outcome::deferred("smtp transport closed");
        };
        let limit = self.options.attempt_timeout;
        match tokio::time::timeout(limit, self.attempt(msg, &envelope)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::info!(email_id = %msg.email_id, "delivery attempt timed out");
                Outcome::timed_out(limit)
            }
        }
    }
}

impl SmtpTransport {
    /// Connecting (or a pooled connection) and the transaction.
    async fn attempt(&self, msg: &OutgoingMessage, envelope: &Envelope) -> Outcome {
        let (mut conn, reused) = match self.checkout() {
            Some(conn) => (conn, true),
            None => match self.connect_logged(msg.email_id).await {
                Ok(conn) => (conn, false),
                Err(outcome) => return outcome,
            },
        };
        let mut attempt = session::transact(&mut conn, envelope, &msg.raw, &self.options).await;
        if reused && attempt.stale {
            // The relay dropped the idle connection before accepting
            // anything: nothing was sent, so one fresh try is safe.
            tracing::debug!(response = %attempt.outcome.response(), "stale pooled connection");
            conn = match self.connect_logged(msg.email_id).await {
                Ok(conn) => conn,
                Err(outcome) => return outcome,
            };
            attempt = session::transact(&mut conn, envelope, &msg.raw, &self.options).await;
        }
        if attempt.reusable {
            self.checkin(conn);
        }
        tracing::debug!(outcome = ?attempt.outcome, "smtp attempt done");
        attempt.outcome
    }
}

enum Opened {
    Refused(Refusal),
    Io(std::io::Error),
}

/// The tenant sees what kind of failure it was; the log also gets the OS
/// error (which may name an address).
fn connect_error(e: &std::io::Error) -> SessionError {
    let public = if e.kind() == std::io::ErrorKind::ConnectionRefused {
        "connection refused by the relay".to_string()
    } else {
        format!("connection to the relay failed ({})", e.kind())
    };
    SessionError {
        public,
        detail: e.to_string(),
    }
}

/// Says QUIT in the background; the connection is dropped either way.
fn close_politely(mut conn: AsyncSmtpConnection) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = timeout(Duration::from_secs(5), conn.quit()).await;
        });
    }
}
