//! Bounces and complaints (issue 13): what happened after the relay.
//! - [`token`]: VERP return paths and the `X-Postline-ID` header (HMAC);
//! - [`classify`]: hard or soft per RFC 3463 and the reply text;
//! - [`dsn`]: DSN (RFC 3464), non-standard bounce and ARF (RFC 5965) parsing;
//! - [`recipients`]: per-recipient delivery state (`email_recipients`);
//! - [`apply`]: a parsed report recorded against its message;
//! - [`inbound`]: the SMTP listener for the bounce domain(s) and the FBL address;
//! - [`known`]: which messages RCPT checks found to exist (bounded cache);
//! - [`return_paths`]: which bounce domain a message goes out with (per
//!   sending domain), and which names the listener serves.

pub mod apply;
pub mod classify;
pub mod dsn;
pub mod inbound;
pub mod known;
pub mod recipients;
pub mod return_paths;
pub mod token;

use classify::Bounce;

/// The `bounce` object of API.md: `{"type", "status", "diagnostic", "reported_by"}`.
pub fn bounce_json(b: &Bounce, reported_by: &str) -> serde_json::Value {
    serde_json::json!({
        "type": b.bounce_type.as_str(),
        "status": b.status,
        "diagnostic": b.diagnostic,
        "reported_by": reported_by,
    })
}
