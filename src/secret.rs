//! [`Secret`], the one type every secret of the process lives in (it is
//! re-exported as `config::Secret`). Rotation of sealed columns is
//! `secrets.rs`, not this.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// A string that never prints and is wiped from memory when dropped
/// (`secrecy::SecretString`): `Debug` shows `[redacted]`, there is no
/// `Display` or `Serialize`; reading it takes an explicit [`Secret::expose`].
/// Every secret of the process is one of these: SMTP passwords (config and
/// tenant input), API tokens and their secrets, webhook secrets, the master
/// key's text, the database URL.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// For the one response that shows a secret once (a created key's
    /// token, a new webhook's signing secret): `#[serde(serialize_with =
    /// "Secret::serialize_exposed")]` makes the exposure explicit at the field.
    pub fn serialize_exposed<S: serde::Serializer>(
        secret: &Secret,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(secret.expose())
    }

    /// [`Secret::serialize_exposed`] for an optional field.
    pub fn serialize_exposed_opt<S: serde::Serializer>(
        secret: &Option<Secret>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match secret {
            Some(s) => serializer.serialize_some(s.expose()),
            None => serializer.serialize_none(),
        }
    }
}

impl Default for Secret {
    fn default() -> Self {
        Secret::new(String::new())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
