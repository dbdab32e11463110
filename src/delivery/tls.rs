//! Implicit TLS (`tls` mode, port 465 style) over a socket we opened
//! ourselves. lettre can only wrap its own sockets in TLS before the
//! greeting, and its own sockets lack TCP_NODELAY (DESIGN §13), so we do the
//! handshake with the same rustls stack (ring provider, webpki roots) and
//! hand lettre the encrypted stream.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A TLS client stream lettre can drive (it needs `peer_addr`).
#[derive(Debug)]
pub(super) struct ImplicitTls(TlsStream<TcpStream>);

/// Verifies the relay's certificate against the webpki roots for `host`.
pub(super) async fn connect(tcp: TcpStream, host: &str) -> Result<ImplicitTls, String> {
    let config = client_config()?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("tls error: {host} is not a valid TLS server name"))?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map(ImplicitTls)
        .map_err(|e| format!("tls error: {e}"))
}

/// Built once: loading the roots is the costly part.
fn client_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| format!("tls error: {e}"))
        })
        .clone()
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
