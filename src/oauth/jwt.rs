//! Access tokens: RFC 9068 JWTs, EdDSA by `jsonwebtoken`. Verification pins
//! the algorithm (the header must say EdDSA: `none`, HS256 with the public
//! key as a secret and the like fail), requires `typ: at+jwt`, a known
//! `kid`, and checks `iss`, `aud`, `exp`, `nbf`.

use chrono::Utc;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::signing::Ring;
use crate::config::OAuthSettings;

/// RFC 9068 §2.1: the media type of an access token.
pub const TOKEN_TYPE: &str = "at+jwt";
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew accepted on `exp` and `nbf` between nodes.
const LEEWAY_SECS: u64 = 5;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub scope: String,
    pub client_id: String,
    /// Tenant clients only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
}

impl Claims {
    /// The claims of a token issued now to `client_id` for `scope`.
    pub fn new(
        settings: &OAuthSettings,
        client_id: &str,
        tenant_id: Option<Uuid>,
        scope: String,
    ) -> Self {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(settings.token_ttl_secs).unwrap_or(900);
        Claims {
            iss: settings.issuer.clone(),
            sub: client_id.to_string(),
            aud: settings.audience.clone(),
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: Uuid::new_v4().to_string(),
            scope,
            client_id: client_id.to_string(),
            tenant_id,
        }
    }
}

/// Why a token was refused. All of these answer the same 401.
#[derive(Debug, PartialEq, Eq)]
pub enum Reject {
    Malformed,
    UnknownKid,
    Invalid,
}

/// Three dot-separated base64url parts (the signature may be empty, as in an
/// `alg: none` token, which is then refused by verification): a JWT, as
/// opposed to a `pl_…` key, which holds no dot.
pub fn looks_like_jwt(token: &str) -> bool {
    let b64url = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => {
            !h.is_empty() && !p.is_empty() && b64url(h) && b64url(p) && b64url(s)
        }
        _ => false,
    }
}

/// The validation every token goes through.
pub fn validation(settings: &OAuthSettings) -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&[settings.issuer.as_str()]);
    v.set_audience(&[settings.audience.as_str()]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v.validate_exp = true;
    v.validate_nbf = true;
    v.leeway = LEEWAY_SECS;
    v
}

/// Signs `claims` with the ring's current key; `None` when it has none.
pub fn sign(ring: &Ring, claims: &Claims) -> Option<Result<String, jsonwebtoken::errors::Error>> {
    let signer = ring.signer.as_ref()?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(TOKEN_TYPE.into());
    header.kid = Some(signer.kid.clone());
    Some(jsonwebtoken::encode(&header, claims, &signer.key))
}

/// Verifies a token against the ring: signature, algorithm, type, claims.
pub fn verify(ring: &Ring, token: &str, validation: &Validation) -> Result<Claims, Reject> {
    if token.len() > MAX_TOKEN_BYTES || !looks_like_jwt(token) {
        return Err(Reject::Malformed);
    }
    // Fails for any `alg` this library does not implement, `none` included.
    let header = jsonwebtoken::decode_header(token).map_err(|_| Reject::Malformed)?;
    if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(TOKEN_TYPE) {
        return Err(Reject::Invalid);
    }
    let kid = header.kid.ok_or(Reject::Invalid)?;
    let verifier = ring.verifiers.get(&kid).ok_or(Reject::UnknownKid)?;
    // A retired key verifies nothing, even before this node rereads the keys.
    if verifier.retires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(Reject::Invalid);
    }
    jsonwebtoken::decode::<Claims>(token, &verifier.key, validation)
        .map(|data| data.claims)
        .map_err(|_| Reject::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_tells_jwts_from_keys() {
        assert!(looks_like_jwt("eyJh.eyJi.c2ln"));
        assert!(looks_like_jwt("eyJh.eyJi."));
        assert!(!looks_like_jwt("pl_live_aaaaaaaaaaaaaaaa_bbbb"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt(".b.c"));
        assert!(!looks_like_jwt("a+/.b.c"));
    }
}
