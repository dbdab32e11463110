//! Opening a session with one MX host: our own socket (TCP_NODELAY, the
//! optional source address), greeting, EHLO with `delivery.mx.ehlo_name`,
//! STARTTLS per `delivery.mx.tls`, and the PIPELINING probe. Each open connection counts in the
//! site's `mx_site_connections` gauge until it is dropped.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use super::metrics;
use super::settings::MxTls;
use crate::delivery::session;

/// How sessions are opened.
#[derive(Clone, Debug)]
pub struct Dialer {
    pub port: u16,
    pub hello: ClientId,
    pub tls: MxTls,
    pub source_v4: Option<IpAddr>,
    pub source_v6: Option<IpAddr>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

/// An open session; leaves the site's connection gauge when dropped.
pub struct Conn {
    pub inner: AsyncSmtpConnection,
    pub encrypted: bool,
    /// The host offers PIPELINING.
    pub pipelining: bool,
    label: String,
}

impl Drop for Conn {
    fn drop(&mut self) {
        metrics::closed(&self.label);
    }
}

impl Conn {
    /// Says QUIT (waiting up to 2 s for the reply) and drops the connection,
    /// before the caller frees its connection slot: a site never sees more
    /// than its `max_connections` at once, closing ones included.
    pub async fn close(mut self) {
        let _ = timeout(Duration::from_secs(2), self.inner.quit()).await;
    }
}

/// Why a host could not be used.
pub enum Failure {
    /// No TCP connection (refused, unreachable, timed out): the host is down.
    Unreachable(String),
    /// Connected, but the session could not be set up (a 4xx/5xx greeting,
    /// TLS required and missing, …). `slow_down` when it was a 421.
    Session { text: String, slow_down: bool },
}

impl Dialer {
    /// A session with `host` at `addr`, ready for MAIL.
    pub async fn open(&self, host: &str, addr: IpAddr, label: &str) -> Result<Conn, Failure> {
        let first = self.session(host, addr, label, true).await;
        match first {
            // Opportunistic TLS that failed mid-handshake: plain, once.
            Err(Failure::Session { text, .. })
                if self.tls == MxTls::Opportunistic && text.starts_with("STARTTLS") =>
            {
                tracing::info!(%host, reason = %text, "STARTTLS failed; retrying without TLS");
                self.session(host, addr, label, false).await
            }
            other => other,
        }
    }

    async fn tcp(&self, addr: IpAddr) -> std::io::Result<TcpStream> {
        let target = SocketAddr::new(addr, self.port);
        let (socket, source) = match addr {
            IpAddr::V4(_) => (TcpSocket::new_v4()?, self.source_v4),
            IpAddr::V6(_) => (TcpSocket::new_v6()?, self.source_v6),
        };
        if let Some(src) = source {
            socket.bind(SocketAddr::new(src, 0))?;
        }
        socket.connect(target).await
    }

    async fn session(
        &self,
        host: &str,
        addr: IpAddr,
        label: &str,
        try_tls: bool,
    ) -> Result<Conn, Failure> {
        let limit = self.connect_timeout;
        let tcp = match timeout(limit, self.tcp(addr)).await {
            Err(_) => {
                return Err(Failure::Unreachable(format!(
                    "connect timed out after {limit:?}"
                )))
            }
            Ok(Err(e)) => {
                return Err(Failure::Unreachable(format!(
                    "connect failed ({})",
                    e.kind()
                )))
            }
            Ok(Ok(tcp)) => tcp,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY; delivery will be slow");
        }
        let cmd = self.command_timeout;
        let greeting = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello);
        let inner = session::within(cmd, "greeting/EHLO", greeting)
            .await
            .map_err(session_failure)?;
        // Counted from here; `Conn`'s drop uncounts it.
        metrics::opened(label);
        let mut conn = Conn {
            inner,
            encrypted: false,
            pipelining: false,
            label: label.to_string(),
        };
        let offered = conn.inner.can_starttls();
        if !offered || !try_tls {
            if self.tls != MxTls::Opportunistic {
                return Err(Failure::Session {
                    text: "STARTTLS required by delivery.mx.tls but not offered".into(),
                    slow_down: false,
                });
            }
            conn.pipelining = session::offers_pipelining(&mut conn.inner, &self.hello, cmd).await;
            return Ok(conn);
        }
        let verify = self.tls == MxTls::RequiredVerify;
        let params = TlsParameters::builder(host.to_string())
            .dangerous_accept_invalid_certs(!verify)
            .dangerous_accept_invalid_hostnames(!verify)
            .build()
            .map_err(|e| Failure::Session {
                text: format!("STARTTLS setup failed: {e}"),
                slow_down: false,
            })?;
        session::within(cmd, "STARTTLS", conn.inner.starttls(params, &self.hello))
            .await
            .map_err(|text| Failure::Session {
                text,
                slow_down: false,
            })?;
        conn.encrypted = conn.inner.is_encrypted();
        conn.pipelining = session::offers_pipelining(&mut conn.inner, &self.hello, cmd).await;
        Ok(conn)
    }
}

fn session_failure(text: String) -> Failure {
    let slow_down = text.contains(": 421");
    Failure::Session { text, slow_down }
}
