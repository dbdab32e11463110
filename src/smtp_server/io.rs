//! The session's byte stream (plain TCP, or TLS after STARTTLS or from the
//! first byte) and bounded reads of lines and message text.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::server::TlsStream;

use super::{Limits, Reply};

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    pub(super) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub(super) type Io = BufReader<Stream>;

pub(super) enum Read {
    Line(Vec<u8>),
    /// Longer than allowed: consumed up to its LF and dropped.
    TooLong,
    Eof,
    TimedOut,
}

/// One line, LF included, at most `max` bytes kept; the whole line within
/// the command timeout (not each read: a line trickled a byte at a time
/// gets no longer). Replies written so far are flushed before the read can
/// block, so pipelined commands get their replies in one TLS record.
pub(super) async fn read_line(io: &mut Io, max: usize, limits: &Limits) -> Read {
    let deadline = Instant::now() + limits.command_timeout;
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        if io.buffer().is_empty() && io.get_mut().flush().await.is_err() {
            return Read::Eof;
        }
        let buf = match timeout_at(deadline, io.fill_buf()).await {
            Err(_) => return Read::TimedOut,
            Ok(Err(_)) => return Read::Eof,
            Ok(Ok(b)) => b,
        };
        if buf.is_empty() {
            return Read::Eof;
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let n = chunk.len();
        if !too_long {
            if line.len() + n > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        io.consume(n);
        if done {
            return if too_long {
                Read::TooLong
            } else {
                Read::Line(line)
            };
        }
    }
}

/// Writes a reply (flushed before the next read that could block).
pub(super) async fn send(io: &mut Io, reply: &Reply) -> bool {
    let line = format!(
        "{} {}\r\n",
        reply.code,
        reply.text.replace(['\r', '\n'], " ")
    );
    io.get_mut().write_all(line.as_bytes()).await.is_ok()
}

/// Writes, flushes and closes: the last words of a session.
pub(super) async fn send_last(io: &mut Io, reply: &Reply) {
    if send(io, reply).await {
        let _ = io.get_mut().flush().await;
        let _ = io.get_mut().shutdown().await;
    }
}

pub(super) enum Data {
    Message(Vec<u8>),
    TooLarge,
    LineTooLong,
    Gone,
    /// A read waited past the command timeout.
    TimedOut,
    /// The transfer went on past [`Limits::data_timeout`].
    TooSlow,
}

/// Message text up to the lone dot: dot-unstuffed, line endings made CRLF.
/// Over the size or line limit it reads on to the dot (so the session stays
/// in sync) and keeps nothing. The whole transfer is bounded by
/// [`Limits::data_timeout`], each line by the command timeout.
pub(super) async fn read_data(io: &mut Io, limits: &Limits) -> Data {
    let deadline = Instant::now() + limits.data_timeout;
    match timeout_at(deadline, read_text(io, limits)).await {
        Ok(data) => data,
        Err(_) => Data::TooSlow,
    }
}

async fn read_text(io: &mut Io, limits: &Limits) -> Data {
    let mut out = Vec::new();
    let (mut too_large, mut too_long) = (false, false);
    loop {
        let line = match read_line(io, limits.max_line + 2, limits).await {
            Read::Line(l) => l,
            Read::TooLong => {
                too_long = true;
                out = Vec::new();
                continue;
            }
            Read::Eof => return Data::Gone,
            Read::TimedOut => return Data::TimedOut,
        };
        let body = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(&line);
        if body == b"." {
            break;
        }
        if too_large || too_long {
            continue;
        }
        let body = body.strip_prefix(b".").unwrap_or(body);
        if out.len() + body.len() + 2 > limits.max_message_bytes {
            too_large = true;
            out = Vec::new();
            continue;
        }
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    if too_large {
        Data::TooLarge
    } else if too_long {
        Data::LineTooLong
    } else {
        Data::Message(out)
    }
}
