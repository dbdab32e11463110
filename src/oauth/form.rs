//! The request of `POST /oauth/token` (RFC 6749 §4.4.2): the form body,
//! HTTP Basic client authentication (§2.3.1), and the §5.2 error codes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The most a token request body may hold.
pub const MAX_BODY_BYTES: usize = 8192;

/// An RFC 6749 §5.2 error (plus 429 and 503, which the RFC leaves to HTTP).
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    InvalidRequest(&'static str),
    /// `basic`: the client tried HTTP Basic (the 401 then names the scheme).
    InvalidClient {
        basic: bool,
    },
    InvalidGrant(&'static str),
    InvalidScope(String),
    UnsupportedGrantType,
    SlowDown {
        retry_after_secs: u64,
    },
    Unavailable,
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::InvalidRequest(_) => "invalid_request",
            TokenError::InvalidClient { .. } => "invalid_client",
            TokenError::InvalidGrant(_) => "invalid_grant",
            TokenError::InvalidScope(_) => "invalid_scope",
            TokenError::UnsupportedGrantType => "unsupported_grant_type",
            TokenError::SlowDown { .. } => "slow_down",
            TokenError::Unavailable => "temporarily_unavailable",
        }
    }

    pub fn description(&self) -> String {
        match self {
            TokenError::InvalidRequest(why) | TokenError::InvalidGrant(why) => (*why).into(),
            TokenError::InvalidClient { .. } => "Client authentication failed.".into(),
            TokenError::InvalidScope(why) => why.clone(),
            TokenError::UnsupportedGrantType => {
                "Only grant_type=client_credentials is supported.".into()
            }
            TokenError::SlowDown { .. } => "Too many token requests for this client.".into(),
            TokenError::Unavailable => "The service is temporarily unavailable.".into(),
        }
    }
}

/// How the client authenticated. `Debug` never shows the secret.
#[derive(PartialEq, Eq)]
pub struct Credentials {
    pub client_id: String,
    pub secret: String,
    pub basic: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("secret", &"[redacted]")
            .field("basic", &self.basic)
            .finish()
    }
}

/// A parsed token request.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub grant_type: String,
    pub scope: Option<String>,
    pub credentials: Credentials,
}

fn form_decode(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn basic(value: &str) -> Result<Option<Credentials>, TokenError> {
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Err(TokenError::InvalidClient { basic: false });
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let bad = TokenError::InvalidClient { basic: true };
    let bytes = STANDARD
        .decode(encoded.trim())
        .map_err(|_| TokenError::InvalidClient { basic: true })?;
    let text = String::from_utf8(bytes).map_err(|_| TokenError::InvalidClient { basic: true })?;
    let (id, secret) = text
        .split_once(':')
        .ok_or(TokenError::InvalidClient { basic: true })?;
    match (form_decode(id), form_decode(secret)) {
        (Some(client_id), Some(secret)) => Ok(Some(Credentials {
            client_id,
            secret,
            basic: true,
        })),
        _ => Err(bad),
    }
}

/// Parses a token request: the `Content-Type`, the `Authorization` header
/// and the form body (at most [`MAX_BODY_BYTES`], checked by the caller).
pub fn parse(
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<TokenRequest, TokenError> {
    let form_type = content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(TokenError::InvalidRequest(
            "The body must be application/x-www-form-urlencoded.",
        ));
    }
    let (mut grant_type, mut scope, mut form_id, mut form_secret) = (None, None, None, None);
    for (name, value) in url::form_urlencoded::parse(body) {
        let slot = match name.as_ref() {
            "grant_type" => &mut grant_type,
            "scope" => &mut scope,
            "client_id" => &mut form_id,
            "client_secret" => &mut form_secret,
            _ => continue, // RFC 6749 §3.2: unknown parameters are ignored.
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(TokenError::InvalidRequest("A parameter is repeated."));
        }
    }
    let header = match authorization {
        Some(v) => basic(v)?,
        None => None,
    };
    let credentials = match (header, form_id, form_secret) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(TokenError::InvalidRequest(
                "Use one client authentication method, not both.",
            ))
        }
        (Some(c), None, None) => c,
        (None, Some(client_id), Some(secret)) => Credentials {
            client_id,
            secret,
            basic: false,
        },
        (None, _, _) => return Err(TokenError::InvalidClient { basic: false }),
    };
    let grant_type = grant_type.ok_or(TokenError::InvalidRequest("grant_type is required."))?;
    Ok(TokenRequest {
        grant_type,
        scope,
        credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn basic_and_form_credentials() {
        let auth = format!("Basic {}", STANDARD.encode("plc_a%3Ab:s+1"));
        let r = parse(FORM, Some(&auth), b"grant_type=client_credentials").unwrap();
        assert_eq!(r.credentials.client_id, "plc_a:b");
        assert_eq!(r.credentials.secret, "s 1");
        assert!(r.credentials.basic);
        let r = parse(
            FORM,
            None,
            b"grant_type=client_credentials&client_id=a&client_secret=b",
        )
        .unwrap();
        assert!(!r.credentials.basic);
        assert_eq!(
            parse(FORM, Some(&auth), b"grant_type=x&client_id=a"),
            Err(TokenError::InvalidRequest(
                "Use one client authentication method, not both."
            ))
        );
    }

    #[test]
    fn malformed_requests() {
        assert!(matches!(
            parse(Some("application/json"), None, b"{}"),
            Err(TokenError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse(
                FORM,
                None,
                b"grant_type=a&grant_type=b&client_id=a&client_secret=b"
            ),
            Err(TokenError::InvalidRequest(_))
        ));
        assert_eq!(
            parse(FORM, None, b"grant_type=client_credentials"),
            Err(TokenError::InvalidClient { basic: false })
        );
        assert_eq!(
            parse(FORM, Some("Basic !!!"), b"grant_type=client_credentials"),
            Err(TokenError::InvalidClient { basic: true })
        );
        assert!(matches!(
            parse(FORM, None, b"client_id=a&client_secret=b"),
            Err(TokenError::InvalidRequest(_))
        ));
    }
}
