//! `X-Postline-Scheduled-At` (API.md "Message lifecycle additions"): the
//! header is read here and validated by the rule of `scheduled_at` on the
//! API (RFC 3339, in the future, at most 30 days ahead); the send path
//! removes it from the stored message.

use chrono::{DateTime, Utc};
use mail_parser::MessageParser;

pub use crate::emails::raw::SCHEDULE_HEADER as HEADER;

/// The header's instant: `Ok(None)` when absent, `Err` with the reason
/// when present but not a valid `scheduled_at` at `now`.
pub fn parse(message: &[u8], now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
    let Some(headers) = MessageParser::default().parse_headers(message) else {
        return Ok(None);
    };
    let Some(value) = headers.header_raw(HEADER) else {
        return Ok(None);
    };
    crate::emails::schedule::parse_scheduled_at(value.trim(), now)
        .map(Some)
        .map_err(|why| format!("{HEADER} {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_absent_valid_and_invalid() {
        let now = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse(b"Subject: x\r\n\r\nbody\r\n", now), Ok(None));
        let t = parse(
            b"X-Postline-Scheduled-At: 2030-01-02T03:04:05+01:00\r\n\r\nb\r\n",
            now,
        );
        assert_eq!(
            t.unwrap().unwrap().to_rfc3339(),
            "2030-01-02T02:04:05+00:00"
        );
        assert!(parse(b"X-Postline-Scheduled-At: tomorrow\r\n\r\nb\r\n", now).is_err());
        // The API's bounds: in the future, at most 30 days ahead.
        assert!(parse(
            b"X-Postline-Scheduled-At: 2029-12-31T00:00:00Z\r\n\r\nb\r\n",
            now
        )
        .is_err());
        assert!(parse(
            b"X-Postline-Scheduled-At: 2030-01-31T00:00:00Z\r\n\r\nb\r\n",
            now
        )
        .is_ok());
        assert!(parse(
            b"X-Postline-Scheduled-At: 2030-01-31T00:00:01Z\r\n\r\nb\r\n",
            now
        )
        .is_err());
    }
}
