//! One SMTP session: greeting, then commands until QUIT, EOF, a timeout or
//! too many errors. Every read is bounded in length and time.

use std::net::SocketAddr;

use smtp_proto::{Error as ParseError, Request};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::accept::handshake;
use super::io::{read_data, read_line, send, send_last, Data, Io, Read, Stream};
use super::sasl::{self, Sasl};
use super::{Envelope, Handler, Limits, Reply, Security};

/// RFC 5321 §4.5.3.1.4 (command line, CRLF included).
const MAX_COMMAND: usize = 512;

/// Whether a line read with the SASL bound may stand: any command within
/// [`MAX_COMMAND`], and AUTH with an initial response up to the SASL line
/// bound (clients such as lettre send a long credential, e.g. an OAuth
/// access token, in the AUTH line itself instead of after a 334).
fn within_bound(line: &[u8]) -> bool {
    line.len() <= MAX_COMMAND
        || line
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"AUTH "))
}
const BUFFER: usize = 16 * 1024;
/// Errors answered at once; each later one waits [`Limits::error_delay`].
const SOFT_ERRORS: usize = 3;

pub(super) struct Ctx {
    pub limits: Limits,
    pub security: Security,
}

fn ehlo_lines(ctx: &Ctx, tls: bool) -> Vec<String> {
    let (limits, sec) = (&ctx.limits, &ctx.security);
    let mut lines = vec![
        limits.hostname.clone(),
        "PIPELINING".into(),
        format!("SIZE {}", limits.max_message_bytes),
        "8BITMIME".into(),
        "ENHANCEDSTATUSCODES".into(),
    ];
    if sec.smtputf8 {
        lines.push("SMTPUTF8".into());
    }
    if sec.tls.is_some() && !tls {
        lines.push("STARTTLS".into());
    }
    if sec.auth_offered(tls) {
        lines.push("AUTH PLAIN LOGIN".into());
    }
    lines
}

fn parse_error(e: ParseError) -> Reply {
    match e {
        ParseError::UnknownCommand => Reply::new(500, "5.5.1 command unrecognized"),
        ParseError::NeedsMoreData { .. } => Reply::new(500, "5.5.2 line not terminated"),
        ParseError::InvalidSenderAddress => Reply::new(501, "5.1.7 bad sender address syntax"),
        ParseError::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3 bad recipient address syntax")
        }
        ParseError::UnsupportedParameter { .. } => Reply::new(555, "5.5.4 parameter not supported"),
        _ => Reply::new(501, "5.5.4 syntax error"),
    }
}

/// What a command asks of the loop beyond its reply.
enum Next {
    /// Counted as an error when it is a 5xx other than 550/552 (a policy
    /// refusal or a size limit is the client's right to try).
    Reply(Reply),
    /// A refused recipient: counted as an error whatever its code, so a
    /// client guessing addresses is closed at the budget.
    Refused(Reply),
    /// The reply is already written.
    Continue,
    StartTls,
    Close,
}

pub(super) async fn run(tcp: TcpStream, peer: SocketAddr, ctx: &Ctx, handler: &dyn Handler) {
    let stream = if ctx.security.implicit_tls {
        match handshake(ctx, tcp).await {
            Some(s) => s,
            None => return,
        }
    } else {
        Stream::Plain(tcp)
    };
    let mut io = BufReader::with_capacity(BUFFER, stream);
    let host = &ctx.limits.hostname;
    if !send(&mut io, &Reply::new(220, format!("{host} ESMTP Postline"))).await {
        return;
    }
    let mut s = State {
        env: Envelope {
            peer: Some(peer),
            tls: io.get_ref().is_tls(),
            ..Envelope::default()
        },
        in_mail: false,
        errors: 0,
    };
    loop {
        let line = match read_line(&mut io, sasl::MAX_SASL_LINE, &ctx.limits).await {
            Read::Line(l) if within_bound(&l) => l,
            Read::Line(_) => Vec::new(),
            Read::TooLong => Vec::new(),
            Read::Eof => return,
            Read::TimedOut => {
                send_last(&mut io, &Reply::new(421, "4.4.2 timeout, closing")).await;
                return;
            }
        };
        let next = if line.is_empty() {
            Next::Reply(Reply::new(500, "5.5.2 line too long"))
        } else {
            match Request::parse(&mut line.iter()) {
                Err(e) => Next::Reply(parse_error(e)),
                Ok(req) => command(&mut io, &mut s, ctx, handler, req).await,
            }
        };
        let (reply, error) = match next {
            Next::Reply(r) => {
                let error = r.code >= 500 && r.code != 550 && r.code != 552;
                (r, error)
            }
            Next::Refused(r) => (r, true),
            Next::Continue => continue,
            Next::Close => return,
            Next::StartTls => {
                // RFC 3207 §4.2 (and CVE-2011-0411): anything pipelined
                // after STARTTLS is discarded, never read as if encrypted.
                let Stream::Plain(tcp) = io.into_inner() else {
                    return;
                };
                let Some(tls) = handshake(ctx, tcp).await else {
                    return;
                };
                io = BufReader::with_capacity(BUFFER, tls);
                s.env = Envelope {
                    peer: Some(peer),
                    tls: true,
                    ..Envelope::default()
                };
                s.in_mail = false;
                continue;
            }
        };
        if error {
            s.errors += 1;
            // Postfix's smtpd_error_sleep_time: past a few errors each reply
            // waits, so a session spends its budget slowly, not at line rate.
            if s.errors > SOFT_ERRORS {
                tokio::time::sleep(ctx.limits.error_delay).await;
            }
        }
        if !send(&mut io, &reply).await {
            return;
        }
        if s.errors >= ctx.limits.max_errors {
            send_last(&mut io, &Reply::new(421, "4.7.0 too many errors, closing")).await;
            return;
        }
    }
}

struct State {
    env: Envelope,
    in_mail: bool,
    errors: usize,
}

async fn command(
    io: &mut Io,
    s: &mut State,
    ctx: &Ctx,
    handler: &dyn Handler,
    req: Request<std::borrow::Cow<'_, str>>,
) -> Next {
    let limits = &ctx.limits;
    let reply = match req {
        Request::Ehlo { host: name } | Request::Lhlo { host: name } => {
            s.env = fresh(&s.env, Some(name.as_ref()));
            s.in_mail = false;
            let lines = ehlo_lines(ctx, s.env.tls);
            let n = lines.len();
            let mut text = String::new();
            for (i, l) in lines.iter().enumerate() {
                let sep = if i + 1 == n { ' ' } else { '-' };
                text.push_str(&format!("250{sep}{l}\r\n"));
            }
            if io.get_mut().write_all(text.as_bytes()).await.is_err() {
                return Next::Close;
            }
            return Next::Continue;
        }
        Request::Helo { host: name } => {
            s.env = fresh(&s.env, Some(name.as_ref()));
            s.in_mail = false;
            Reply::new(250, limits.hostname.clone())
        }
        Request::StartTls => {
            if ctx.security.tls.is_none() || s.env.tls {
                Reply::new(502, "5.5.1 STARTTLS not available")
            } else {
                if !send(io, &Reply::new(220, "2.0.0 ready to start TLS")).await
                    || io.get_mut().flush().await.is_err()
                {
                    return Next::Close;
                }
                return Next::StartTls;
            }
        }
        Request::Auth {
            mechanism,
            initial_response,
        } => {
            if !ctx.security.auth {
                Reply::new(502, "5.5.1 AUTH not available")
            } else if !ctx.security.auth_offered(s.env.tls) {
                Reply::new(538, "5.7.11 encryption required: STARTTLS first")
            } else if s.env.helo.is_empty() {
                Reply::new(503, "5.5.1 EHLO first")
            } else if s.env.auth.is_some() {
                Reply::new(503, "5.5.1 already authenticated")
            } else if s.in_mail {
                Reply::new(503, "5.5.1 AUTH not allowed during a transaction")
            } else {
                match sasl::exchange(io, mechanism, initial_response.as_ref(), limits).await {
                    Sasl::Gone => return Next::Close,
                    Sasl::Refused(r) => r,
                    Sasl::Credentials { user, password } => {
                        match handler.auth(s.env.peer, &user, password.expose()).await {
                            Ok(id) => {
                                s.env.auth = Some(id);
                                Reply::new(235, "2.7.0 authentication successful")
                            }
                            Err(r) => r,
                        }
                    }
                }
            }
        }
        Request::Mail { from } => {
            if s.env.helo.is_empty() {
                Reply::new(503, "5.5.1 EHLO first")
            } else if s.in_mail {
                Reply::new(503, "5.5.1 nested MAIL")
            } else if ctx.security.auth && s.env.auth.is_none() {
                Reply::new(530, "5.7.0 authentication required")
            } else if from.size > limits.max_message_bytes {
                Reply::new(552, "5.3.4 message size exceeds fixed maximum message size")
            } else {
                let reply = handler.mail(&s.env, from.address.as_ref()).await;
                if reply.is_positive() {
                    s.env.mail_from = from.address.to_string();
                    s.env.rcpt_to.clear();
                    s.in_mail = true;
                }
                reply
            }
        }
        Request::Rcpt { to } => {
            if !s.in_mail {
                Reply::new(503, "5.5.1 MAIL first")
            } else if s.env.rcpt_to.len() >= limits.max_recipients {
                Reply::new(452, "4.5.3 too many recipients")
            } else {
                let reply = handler.rcpt(&s.env, to.address.as_ref()).await;
                if reply.code >= 500 {
                    return Next::Refused(reply);
                }
                if reply.is_positive() {
                    s.env.rcpt_to.push(to.address.to_string());
                }
                reply
            }
        }
        Request::Data => {
            if !s.in_mail || s.env.rcpt_to.is_empty() {
                Reply::new(503, "5.5.1 RCPT first")
            } else {
                // Held until the handler is done with the message.
                let _reserved = match &limits.data_budget {
                    None => None,
                    Some(b) => match b.reserve(limits.command_timeout / 2).await {
                        Some(r) => Some(r),
                        None => {
                            s.in_mail = false;
                            s.env = fresh(&s.env, None);
                            return Next::Reply(Reply::new(
                                452,
                                "4.3.1 too many messages in transit, try again later",
                            ));
                        }
                    },
                };
                if !send(io, &Reply::new(354, "end data with <CR><LF>.<CR><LF>")).await {
                    return Next::Close;
                }
                let reply = match read_data(io, limits).await {
                    Data::Message(m) => {
                        let next = fresh(&s.env, None);
                        let done = std::mem::replace(&mut s.env, next);
                        handler.data(done, m).await
                    }
                    Data::TooLarge => {
                        Reply::new(552, "5.3.4 message size exceeds fixed maximum message size")
                    }
                    Data::LineTooLong => Reply::new(500, "5.5.2 line too long"),
                    Data::Gone => return Next::Close,
                    Data::TimedOut => {
                        send_last(io, &Reply::new(421, "4.4.2 timeout, closing")).await;
                        return Next::Close;
                    }
                    Data::TooSlow => {
                        let text = "4.4.2 message transfer took too long, closing";
                        send_last(io, &Reply::new(421, text)).await;
                        return Next::Close;
                    }
                };
                s.in_mail = false;
                s.env = fresh(&s.env, None);
                reply
            }
        }
        Request::Rset => {
            s.in_mail = false;
            s.env = fresh(&s.env, None);
            Reply::ok()
        }
        Request::Noop { .. } => Reply::ok(),
        Request::Vrfy { .. } => Reply::new(252, "2.1.5 cannot verify, send some mail"),
        Request::Help { .. } => Reply::new(214, "2.0.0 see RFC 5321"),
        Request::Quit => {
            send_last(io, &Reply::new(221, "2.0.0 bye")).await;
            return Next::Close;
        }
        _ => Reply::new(502, "5.5.1 command not implemented"),
    };
    Next::Reply(reply)
}

/// The state after EHLO/HELO (`Some(name)`: a new session greeting, the
/// transaction cleared) or after a transaction ends (`None`: HELO kept).
/// Peer, TLS and the authenticated identity are the session's and stay.
fn fresh(env: &Envelope, helo: Option<&str>) -> Envelope {
    Envelope {
        peer: env.peer,
        helo: match helo {
            Some(h) => h.chars().take(255).collect(),
            None => env.helo.clone(),
        },
        auth: env.auth.clone(),
        tls: env.tls,
        ..Envelope::default()
    }
}
