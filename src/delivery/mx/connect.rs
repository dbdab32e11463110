//! Opening a session with one MX host: our own socket (TCP_NODELAY, the
//! egress pool's source addresses in turn), greeting, EHLO with the pool's
//! name (`delivery.mx.ehlo_name` for `default`),
//! STARTTLS per `delivery.mx.tls`, and the PIPELINING probe. Each open connection counts in the
//! site's `mx_site_connections` gauge until it is dropped.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use super::metrics;
use super::settings::MxTls;
use crate::delivery::session;

/// How one egress pool's sessions are opened.
#[derive(Clone, Debug)]
pub struct Dialer {
    /// The egress pool (`default` or a `[[delivery.pools]]` name).
    pub pool: Arc<str>,
    pub port: u16,
    pub hello: ClientId,
    pub tls: MxTls,
    pub sources: Sources,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

/// A pool's source addresses per family, bound in turn (round robin).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    v4: Arc<[IpAddr]>,
    v6: Arc<[IpAddr]>,
    next: Arc<AtomicUsize>,
    /// A configured pool's mail never leaves from an address not its own;
    /// `default` (`delivery.mx.source_ipv4/6`) binds only the families set.
    strict: bool,
}

impl Sources {
    pub fn new(addrs: &[IpAddr], strict: bool) -> Sources {
        let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = addrs.iter().partition(|a| a.is_ipv4());
        Sources {
            v4: v4.into(),
            v6: v6.into(),
            next: Arc::default(),
            strict,
        }
    }

    /// The address to bind for a connection to `to`: the next of its family;
    /// `Ok(None)` when the pool binds none at all (or, not strict, none of
    /// this family); `Err` when a strict pool binds only addresses of the
    /// other family (its mail never leaves from another).
    pub fn pick(&self, to: IpAddr) -> Result<Option<IpAddr>, &'static str> {
        let list = if to.is_ipv4() { &self.v4 } else { &self.v6 };
        if list.is_empty() {
            if !self.strict || (self.v4.is_empty() && self.v6.is_empty()) {
                return Ok(None);
            }
            return Err("the egress pool has no source address of this family");
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(Some(list[i % list.len()]))
    }
}

/// An open session; leaves the site's connection gauge when dropped.
pub struct Conn {
    pub inner: AsyncSmtpConnection,
    pub encrypted: bool,
    /// The host offers PIPELINING.
    pub pipelining: bool,
    label: String,
    pool: Arc<str>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        metrics::closed(&self.pool, &self.label);
        metrics::pool_closed(&self.pool);
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
        let source = self
            .sources
            .pick(addr)
            .map_err(|why| std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, why))?;
        let socket = match addr {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
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
        metrics::opened(&self.pool, label);
        metrics::pool_opened(&self.pool);
        let mut conn = Conn {
            inner,
            encrypted: false,
            pipelining: false,
            label: label.to_string(),
            pool: self.pool.clone(),
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
