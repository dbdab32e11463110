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

use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::relay_pool::{Conn, IdleList, Pool};
use super::run;
use super::session::{self, Parsed};
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

pub struct SmtpTransport {
    relay: RelayConfig,
    options: SmtpOptions,
    hello: ClientId,
    idle: IdleList,
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
            idle: IdleList::new(options.idle_timeout),
            options,
            hello,
            permits,
        }
    }

    pub fn relay(&self) -> &RelayConfig {
        &self.relay
    }

    /// Connections open and waiting for the next message.
    pub fn idle_connections(&self) -> usize {
        self.idle.len()
    }

    /// Opens a session ready for `MAIL`: greeting, EHLO, STARTTLS, the
    /// PIPELINING probe and AUTH as configured. The error's `public` text is
    /// stored with the deferral (the tenant reads it: no relay address);
    /// `detail` is for the log.
    async fn connect(&self) -> Result<Conn, SessionError> {
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

    /// Greeting, EHLO, STARTTLS, the PIPELINING probe and AUTH on an open
    /// socket.
    async fn session(&self, tcp: TcpStream) -> Result<Conn, SessionError> {
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
        let pipelining = session::offers_pipelining(&mut conn, &self.hello, cmd).await;
        if let Some(user) = &self.relay.username {
            session::check_auth_allowed(&self.relay, self.options.allow_plaintext_auth)?;
            let password = self.relay.password.as_ref().map(|p| p.expose().to_owned());
            let credentials = Credentials::new(user.clone(), password.unwrap_or_default());
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            session::within(cmd, "AUTH", conn.auth(&mechanisms, &credentials))
                .await
                .map_err(SessionError::same)?;
        }
        Ok(Conn {
            smtp: conn,
            pipelining,
        })
    }

    /// Connects, logging the operator's detail (relay address included) at
    /// warn; the tenant-visible text goes into the outcome.
    pub(super) async fn connect_logged(&self, email_id: uuid::Uuid) -> Result<Conn, Outcome> {
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
        let mut results = Vec::new();
        let mut envs = Vec::with_capacity(msg.envelopes.len());
        for env in &msg.envelopes {
            match Parsed::parse(env) {
                Ok(parsed) => envs.push(parsed),
                Err(outcome) => results.extend(run::per_recipient(&env.recipients, outcome)),
            }
        }
        if !envs.is_empty() {
            let Ok(_permit) = self.permits.acquire().await else {
                return Outcome::deferred("smtp transport closed");
            };
            let pool = Pool {
                idle: &self.idle,
                transport: self,
                email_id: msg.email_id,
            };
            results.extend(run::deliver(&pool, &envs, &msg.raw, &self.options).await);
        }
        let outcome = run::combine(results);
        tracing::debug!(outcome = ?outcome, "smtp attempt done");
        outcome
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
