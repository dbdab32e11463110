//! RFC 8058 one-click unsubscribe (issue 26): signed tokens (`token`), the
//! `List-Unsubscribe` headers added to broadcast mail before DKIM signing
//! (`headers`), the suppression, webhook and usage of an unsubscribe
//! (`service`), `POST`/`GET /u/{token}` (`routes`), and the `mailto:` form's
//! address recognised by the inbound listener ([`mailto_token`]).

pub mod headers;
pub mod routes;
pub mod service;
pub mod token;

pub use token::{UnsubscribeKeys, PREFIX};

/// `[unsubscribe]` settings.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeSettings {
    /// The base URL recipients reach (`https://mail.platform.com`): links
    /// are `{public_url}/u/{token}`. Empty: no one-click link (the
    /// `mailto:` form only, when `bounces.domain` is set).
    pub public_url: String,
}

impl UnsubscribeSettings {
    pub fn validate(&self) -> Result<(), String> {
        let u = self.public_url.trim();
        if u.is_empty() {
            return Ok(());
        }
        let ok = (u.starts_with("https://") || u.starts_with("http://"))
            && !u.contains(['?', '#', ' ', '<', '>', '"'])
            && u.len() <= 200;
        if ok {
            Ok(())
        } else {
            Err("unsubscribe.public_url must be an http(s) URL without query or fragment, at most 200 characters".into())
        }
    }
}

/// The token of an inbound recipient `u+<token>@<bounce domain>`, when the
/// address is one (the domain compared case-insensitively); `None` for any
/// other address. Only recognition: the token is verified by
/// [`service::unsubscribe`].
pub fn mailto_token<'a>(rcpt: &'a str, bounce_domain: &str) -> Option<&'a str> {
    if bounce_domain.is_empty() {
        return None;
    }
    let (local, domain) = rcpt.trim().trim_matches(['<', '>']).rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(bounce_domain) {
        return None;
    }
    let token = local
        .strip_prefix(PREFIX)
        .or_else(|| local.strip_prefix("U+"))?;
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::mailto_token;

    #[test]
    fn mailto_addresses() {
        assert_eq!(
            mailto_token("u+abc@Bounce.Example", "bounce.example"),
            Some("abc")
        );
        assert_eq!(
            mailto_token("<U+abc@bounce.example>", "bounce.example"),
            Some("abc")
        );
        assert_eq!(mailto_token("b+abc@bounce.example", "bounce.example"), None);
        assert_eq!(mailto_token("u+abc@other.example", "bounce.example"), None);
        assert_eq!(mailto_token("u+@bounce.example", "bounce.example"), None);
        assert_eq!(mailto_token("u+abc@bounce.example", ""), None);
    }
}
