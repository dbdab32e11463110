//! What happens to a connection before its session: refused at a
//! connection limit, or (implicit TLS, STARTTLS) the TLS handshake.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use super::io::Stream;
use super::session::Ctx;
use super::Busy;

/// A connection limit is reached: say so and close (RFC 5321 §3.8), with
/// no TLS, no handler call and nothing read. On an implicit-TLS port a
/// plaintext reply means nothing: just close.
pub(super) async fn refuse(mut stream: TcpStream, ctx: &Ctx, busy: Busy) {
    if !ctx.security.implicit_tls {
        let host = &ctx.limits.hostname;
        let line = match busy {
            Busy::Address => format!("421 4.7.0 {host} too many connections from your address\r\n"),
            Busy::Server => format!("421 4.3.2 {host} too many connections, try later\r\n"),
        };
        // A peer that reads nothing cannot hold the task: one short write.
        let write = stream.write_all(line.as_bytes());
        let _ = timeout(std::time::Duration::from_secs(5), write).await;
    }
    let _ = stream.shutdown().await;
}

/// The TLS handshake, bounded by the command timeout.
pub(super) async fn handshake(ctx: &Ctx, tcp: TcpStream) -> Option<Stream> {
    let config = ctx.security.tls.clone()?;
    let accept = TlsAcceptor::from(config).accept(tcp);
    match timeout(ctx.limits.command_timeout, accept).await {
        Ok(Ok(tls)) => Some(Stream::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "smtp TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}
