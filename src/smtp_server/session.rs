//! One SMTP session: greeting, then commands until QUIT, EOF, a timeout or
//! too many errors. Every read is bounded in length and time.

use std::net::SocketAddr;

use smtp_proto::{Error as ParseError, Request};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{Envelope, Handler, Limits, Reply};

/// RFC 5321 §4.5.3.1.4 (command line, CRLF included).
const MAX_COMMAND: usize = 512;

enum Read {
    Line(Vec<u8>),
    /// Longer than allowed: consumed up to its LF and dropped.
    TooLong,
    Eof,
    TimedOut,
}

/// One line, LF included, at most `max` bytes kept; bounded in time.
async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R, max: usize, limits: &Limits) -> Read {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = match timeout(limits.command_timeout, r.fill_buf()).await {
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
        r.consume(n);
        if done {
            return if too_long {
                Read::TooLong
            } else {
                Read::Line(line)
            };
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, reply: &Reply) -> bool {
    let line = format!(
        "{} {}\r\n",
        reply.code,
        reply.text.replace(['\r', '\n'], " ")
    );
    w.write_all(line.as_bytes()).await.is_ok()
}

/// The connection limit is reached: say so and close (RFC 5321 §3.8).
pub(super) async fn refuse_busy(mut stream: TcpStream, limits: &Limits) {
    let reply = Reply::new(
        421,
        format!("4.3.2 {} too many connections, try later", limits.hostname),
    );
    let _ = send(&mut stream, &reply).await;
    let _ = stream.shutdown().await;
}

pub(super) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    limits: &Limits,
    handler: &dyn Handler,
) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(16 * 1024, r);
    let host = &limits.hostname;
    if !send(&mut w, &Reply::new(220, format!("{host} ESMTP Postline"))).await {
        return;
    }
    let mut env = Envelope {
        peer: Some(peer),
        ..Envelope::default()
    };
    let mut in_mail = false;
    let mut errors = 0usize;
    loop {
        let line = match read_line(&mut r, MAX_COMMAND, limits).await {
            Read::Line(l) => l,
            Read::TooLong => {
                errors += 1;
                if !send(&mut w, &Reply::new(500, "5.5.2 line too long")).await
                    || errors >= limits.max_errors
                {
                    return;
                }
                continue;
            }
            Read::Eof => return,
            Read::TimedOut => {
                let _ = send(&mut w, &Reply::new(421, "4.4.2 timeout, closing")).await;
                return;
            }
        };
        let reply = match Request::parse(&mut line.iter()) {
            Err(e) => {
                errors += 1;
                match e {
                    ParseError::UnknownCommand => Reply::new(500, "5.5.1 command unrecognized"),
                    ParseError::NeedsMoreData { .. } => {
                        Reply::new(500, "5.5.2 line not terminated")
                    }
                    ParseError::InvalidSenderAddress => {
                        Reply::new(501, "5.1.7 bad sender address syntax")
                    }
                    ParseError::InvalidRecipientAddress => {
                        Reply::new(501, "5.1.3 bad recipient address syntax")
                    }
                    ParseError::UnsupportedParameter { .. } => {
                        Reply::new(555, "5.5.4 parameter not supported")
                    }
                    _ => Reply::new(501, "5.5.4 syntax error"),
                }
            }
            Ok(Request::Ehlo { host: name }) | Ok(Request::Lhlo { host: name }) => {
                env = fresh(&env, name.as_ref());
                in_mail = false;
                let lines = [
                    host.to_string(),
                    "PIPELINING".into(),
                    format!("SIZE {}", limits.max_message_bytes),
                    "8BITMIME".into(),
                    "ENHANCEDSTATUSCODES".into(),
                ];
                let n = lines.len();
                let mut text = String::new();
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i + 1 == n { ' ' } else { '-' };
                    text.push_str(&format!("250{sep}{l}\r\n"));
                }
                if w.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Request::Helo { host: name }) => {
                env = fresh(&env, name.as_ref());
                in_mail = false;
                Reply::new(250, host.to_string())
            }
            Ok(Request::Mail { from }) => {
                if env.helo.is_empty() {
                    Reply::new(503, "5.5.1 EHLO first")
                } else if in_mail {
                    Reply::new(503, "5.5.1 nested MAIL")
                } else if from.size > limits.max_message_bytes {
                    Reply::new(552, "5.3.4 message size exceeds fixed maximum message size")
                } else {
                    let reply = handler.mail(&env, from.address.as_ref()).await;
                    if reply.is_positive() {
                        env.mail_from = from.address.to_string();
                        env.rcpt_to.clear();
                        in_mail = true;
                    }
                    reply
                }
            }
            Ok(Request::Rcpt { to }) => {
                if !in_mail {
                    Reply::new(503, "5.5.1 MAIL first")
                } else if env.rcpt_to.len() >= limits.max_recipients {
                    Reply::new(452, "4.5.3 too many recipients")
                } else {
                    let reply = handler.rcpt(&env, to.address.as_ref()).await;
                    if reply.is_positive() {
                        env.rcpt_to.push(to.address.to_string());
                    }
                    reply
                }
            }
            Ok(Request::Data) => {
                if !in_mail || env.rcpt_to.is_empty() {
                    Reply::new(503, "5.5.1 RCPT first")
                } else {
                    if !send(&mut w, &Reply::new(354, "end data with <CR><LF>.<CR><LF>")).await {
                        return;
                    }
                    let reply = match read_data(&mut r, limits).await {
                        Data::Message(m) => {
                            let next = fresh_keep(&env);
                            let done = std::mem::replace(&mut env, next);
                            handler.data(done, m).await
                        }
                        Data::TooLarge => {
                            Reply::new(552, "5.3.4 message size exceeds fixed maximum message size")
                        }
                        Data::LineTooLong => Reply::new(500, "5.5.2 line too long"),
                        Data::Gone => return,
                        Data::TimedOut => {
                            let _ = send(&mut w, &Reply::new(421, "4.4.2 timeout, closing")).await;
                            return;
                        }
                    };
                    in_mail = false;
                    env = fresh_keep(&env);
                    reply
                }
            }
            Ok(Request::Rset) => {
                in_mail = false;
                env = fresh_keep(&env);
                Reply::ok()
            }
            Ok(Request::Noop { .. }) => Reply::ok(),
            Ok(Request::Vrfy { .. }) => Reply::new(252, "2.1.5 cannot verify, send some mail"),
            Ok(Request::Help { .. }) => Reply::new(214, "2.0.0 see RFC 5321"),
            Ok(Request::Quit) => {
                let _ = send(&mut w, &Reply::new(221, "2.0.0 bye")).await;
                return;
            }
            Ok(_) => Reply::new(502, "5.5.1 command not implemented"),
        };
        if reply.code >= 500 && reply.code != 550 && reply.code != 552 {
            errors += 1;
        }
        if !send(&mut w, &reply).await {
            return;
        }
        if errors >= limits.max_errors {
            let _ = send(&mut w, &Reply::new(421, "4.7.0 too many errors, closing")).await;
            return;
        }
    }
}

/// A new session state after EHLO/HELO.
fn fresh(env: &Envelope, helo: &str) -> Envelope {
    Envelope {
        peer: env.peer,
        helo: helo.chars().take(255).collect(),
        ..Envelope::default()
    }
}

/// The state after a transaction ends: HELO kept, envelope cleared.
fn fresh_keep(env: &Envelope) -> Envelope {
    Envelope {
        peer: env.peer,
        helo: env.helo.clone(),
        ..Envelope::default()
    }
}

enum Data {
    Message(Vec<u8>),
    TooLarge,
    LineTooLong,
    Gone,
    TimedOut,
}

/// Message text up to the lone dot: dot-unstuffed, line endings made CRLF.
/// Over the size or line limit it reads on to the dot (so the session stays
/// in sync) and keeps nothing.
async fn read_data<R: AsyncBufReadExt + Unpin>(r: &mut R, limits: &Limits) -> Data {
    let mut out = Vec::new();
    let (mut too_large, mut too_long) = (false, false);
    loop {
        let line = match read_line(r, limits.max_line + 2, limits).await {
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
