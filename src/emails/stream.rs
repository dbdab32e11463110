//! Message streams (issue 26): `transactional` (the default) and
//! `broadcast`. A tenant's transactional mail is claimed before its
//! broadcast mail (`queue::claim`), each stream may leave through its own
//! egress pool (`delivery::pools`), and broadcast mail carries RFC 8058
//! one-click unsubscribe headers (`unsubscribe`).

use serde::{Deserialize, Serialize};

/// The SMTP and Resend form of a message's stream; never sent on.
pub const HEADER: &str = "X-Postline-Stream";

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    #[default]
    Transactional,
    Broadcast,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Transactional => "transactional",
            Stream::Broadcast => "broadcast",
        }
    }

    /// The stored or header form (case-insensitive, trimmed).
    pub fn parse(s: &str) -> Option<Stream> {
        match s.trim().to_ascii_lowercase().as_str() {
            "transactional" => Some(Stream::Transactional),
            "broadcast" => Some(Stream::Broadcast),
            _ => None,
        }
    }

    /// Postmark's `MessageStream`: `outbound` (its default transactional
    /// stream) and `broadcast` (its default broadcast stream).
    pub fn from_postmark(s: &str) -> Option<Stream> {
        match s {
            "outbound" => Some(Stream::Transactional),
            "broadcast" => Some(Stream::Broadcast),
            _ => None,
        }
    }

    /// What a refused header value is told.
    pub const EXPECTED: &'static str = "must be \"transactional\" or \"broadcast\"";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(Stream::parse(" Broadcast "), Some(Stream::Broadcast));
        assert_eq!(Stream::parse("bulk"), None);
        assert_eq!(
            Stream::from_postmark("outbound"),
            Some(Stream::Transactional)
        );
        assert_eq!(Stream::from_postmark("broadcasts"), None);
        assert_eq!(Stream::default().as_str(), "transactional");
    }
}
