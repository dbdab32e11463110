//! `X-Postline-Scheduled-At` (API.md "Message lifecycle additions"): the
//! header is parsed and validated here. Scheduled send is not wired into
//! the send path yet, so a message carrying it is refused (550 5.5.4)
//! rather than sent at once.

use chrono::{DateTime, Utc};
use mail_parser::MessageParser;

pub const HEADER: &str = "X-Postline-Scheduled-At";

/// The header's instant: `Ok(None)` when absent, `Err` with the reason
/// when present but not an RFC 3339 / ISO 8601 timestamp with an offset.
pub fn parse(message: &[u8]) -> Result<Option<DateTime<Utc>>, String> {
    let Some(headers) = MessageParser::default().parse_headers(message) else {
        return Ok(None);
    };
    let Some(value) = headers.header_raw(HEADER) else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| format!("{HEADER} must be an RFC 3339 timestamp with an offset"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_absent_valid_and_invalid() {
        assert_eq!(parse(b"Subject: x\r\n\r\nbody\r\n"), Ok(None));
        let t = parse(b"X-Postline-Scheduled-At: 2030-01-02T03:04:05+01:00\r\n\r\nb\r\n");
        assert_eq!(
            t.unwrap().unwrap().to_rfc3339(),
            "2030-01-02T02:04:05+00:00"
        );
        assert!(parse(b"X-Postline-Scheduled-At: tomorrow\r\n\r\nb\r\n").is_err());
    }
}
