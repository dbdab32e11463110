//! AUTH PLAIN (RFC 4616) and LOGIN: the exchange up to a user name and a
//! password; checking them is the [`Handler`](super::Handler)'s.

use base64::Engine;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

use super::io::{read_line, send, Io, Read};
use super::{Limits, Reply};
use crate::config::Secret;

/// A SASL line: 12 KB of base64 holds any user name and key we accept.
pub(super) const MAX_SASL_LINE: usize = 12 * 1024;

pub(super) enum Sasl {
    Credentials {
        user: String,
        password: Secret,
    },
    /// Refused or cancelled: the reply to send.
    Refused(Reply),
    /// The connection went away or timed out mid-exchange.
    Gone,
}

fn syntax() -> Sasl {
    Sasl::Refused(Reply::new(501, "5.5.2 cannot decode the response"))
}

fn decode(line: &[u8]) -> Option<Vec<u8>> {
    let text = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line);
    base64::engine::general_purpose::STANDARD
        .decode(text.trim_ascii())
        .ok()
}

/// Reads one client response after a 334 challenge.
async fn response(io: &mut Io, challenge: &str, limits: &Limits) -> Result<Vec<u8>, Sasl> {
    if !send(io, &Reply::new(334, challenge)).await {
        return Err(Sasl::Gone);
    }
    match read_line(io, MAX_SASL_LINE, limits).await {
        Read::Line(l) if l.trim_ascii() == b"*" => Err(Sasl::Refused(Reply::new(
            501,
            "5.0.0 authentication cancelled",
        ))),
        Read::Line(l) => decode(&l).ok_or_else(syntax),
        Read::TooLong => Err(syntax()),
        Read::Eof | Read::TimedOut => Err(Sasl::Gone),
    }
}

fn text(bytes: Vec<u8>) -> Option<String> {
    String::from_utf8(bytes).ok()
}

pub(super) async fn exchange(io: &mut Io, mechanism: u64, initial: &str, limits: &Limits) -> Sasl {
    let run = async {
        if mechanism == AUTH_PLAIN {
            let raw = zeroize::Zeroizing::new(match initial {
                "" => response(io, "", limits).await?,
                "=" => Vec::new(),
                i => decode(i.as_bytes()).ok_or_else(syntax)?,
            });
            // authzid NUL authcid NUL passwd
            let mut parts = raw.split(|b| *b == 0);
            let (_authz, user, pass) = (parts.next(), parts.next(), parts.next());
            let (Some(user), Some(pass), None) = (user, pass, parts.next()) else {
                return Err(syntax());
            };
            let user = text(user.to_vec()).ok_or_else(syntax)?;
            let pass = text(pass.to_vec()).ok_or_else(syntax)?;
            Ok((user, Secret::new(pass)))
        } else if mechanism == AUTH_LOGIN {
            let user = match initial {
                "" => response(io, "VXNlcm5hbWU6", limits).await?,
                i => decode(i.as_bytes()).ok_or_else(syntax)?,
            };
            let user = text(user).ok_or_else(syntax)?;
            let pass = response(io, "UGFzc3dvcmQ6", limits).await?;
            let pass = text(pass).ok_or_else(syntax)?;
            Ok((user, Secret::new(pass)))
        } else {
            Err(Sasl::Refused(Reply::new(
                504,
                "5.5.4 unrecognized authentication type",
            )))
        }
    };
    match run.await {
        Ok((user, password)) => Sasl::Credentials { user, password },
        Err(s) => s,
    }
}
