//! Validated domain types. Input becomes one of these at the edge; ids are
//! newtypes so one kind of id can never be passed where another is expected.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

macro_rules! id_newtype {
    ($name:ident) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_newtype!(TenantId);
id_newtype!(ApiKeyId);
id_newtype!(TemplateId);
id_newtype!(WebhookId);
id_newtype!(DomainId);

/// What an API key may do (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    Send,
    EmailsRead,
    TemplatesRead,
    TemplatesWrite,
    WebhooksRead,
    WebhooksWrite,
    UsageRead,
    DomainsRead,
    DomainsWrite,
    AuditRead,
    TenantsRead,
    TenantsWrite,
    KeysWrite,
    SuppressionsRead,
    SuppressionsWrite,
    InboundRead,
    InboundWrite,
    All,
}

impl Permission {
    pub const ALL: [Permission; 18] = [
        Permission::Send,
        Permission::EmailsRead,
        Permission::TemplatesRead,
        Permission::TemplatesWrite,
        Permission::WebhooksRead,
        Permission::WebhooksWrite,
        Permission::UsageRead,
        Permission::DomainsRead,
        Permission::DomainsWrite,
        Permission::AuditRead,
        Permission::TenantsRead,
        Permission::TenantsWrite,
        Permission::KeysWrite,
        Permission::SuppressionsRead,
        Permission::SuppressionsWrite,
        Permission::InboundRead,
        Permission::InboundWrite,
        Permission::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Send => "send",
            Permission::EmailsRead => "emails:read",
            Permission::TemplatesRead => "templates:read",
            Permission::TemplatesWrite => "templates:write",
            Permission::WebhooksRead => "webhooks:read",
            Permission::WebhooksWrite => "webhooks:write",
            Permission::UsageRead => "usage:read",
            Permission::DomainsRead => "domains:read",
            Permission::DomainsWrite => "domains:write",
            Permission::AuditRead => "audit:read",
            Permission::TenantsRead => "tenants:read",
            Permission::TenantsWrite => "tenants:write",
            Permission::KeysWrite => "keys:write",
            Permission::SuppressionsRead => "suppressions:read",
            Permission::SuppressionsWrite => "suppressions:write",
            Permission::InboundRead => "inbound:read",
            Permission::InboundWrite => "inbound:write",
            Permission::All => "*",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Permissions a tenant key may carry; the rest are admin-only.
    pub fn allowed_for_tenant_keys(self) -> bool {
        matches!(
            self,
            Permission::Send
                | Permission::EmailsRead
                | Permission::TemplatesRead
                | Permission::TemplatesWrite
                | Permission::WebhooksRead
                | Permission::WebhooksWrite
                | Permission::UsageRead
                | Permission::DomainsRead
                | Permission::DomainsWrite
                | Permission::SuppressionsRead
                | Permission::SuppressionsWrite
                | Permission::InboundRead
                | Permission::InboundWrite
                | Permission::AuditRead
        )
    }
}

/// A de-duplicated, sorted set of permissions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions(Vec<Permission>);

impl Permissions {
    pub fn new(mut list: Vec<Permission>) -> Self {
        list.sort();
        list.dedup();
        Self(list)
    }

    /// Parses stored or requested permission names; unknown names fail with
    /// the index of the offending entry.
    pub fn parse_list(field: &str, names: &[String]) -> AppResult<Self> {
        let mut out = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let p = Permission::parse(name).ok_or_else(|| {
                AppError::invalid(
                    format!("{field}[{i}]"),
                    format!("unknown permission '{name}'"),
                )
            })?;
            out.push(p);
        }
        Ok(Self::new(out))
    }

    /// Reads permissions from the database, ignoring names this build does not know.
    pub fn from_stored(names: &[String]) -> Self {
        Self::new(names.iter().filter_map(|n| Permission::parse(n)).collect())
    }

    pub fn has(&self, p: Permission) -> bool {
        self.0.contains(&Permission::All) || self.0.contains(&p)
    }

    /// True when every permission of `other` is held here (a key can never
    /// grant more than it has).
    pub fn covers(&self, other: &Permissions) -> bool {
        other.0.iter().all(|p| self.has(*p))
    }

    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|p| p.as_str().to_string()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Admin keys manage the platform; live keys belong to one tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Admin,
    Live,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Admin => "admin",
            KeyKind::Live => "live",
        }
    }
    pub fn parse(s: &str) -> Option<KeyKind> {
        match s {
            "admin" => Some(KeyKind::Admin),
            "live" => Some(KeyKind::Live),
            _ => None,
        }
    }
}

/// True when `s` holds CR, LF or NUL, which would let a value break out of a
/// header line.
pub fn has_line_break_or_nul(s: &str) -> bool {
    s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// A lower-cased DNS name (e.g. a tenant's sending domain or a relay host).
pub fn parse_hostname(field: &str, raw: &str) -> AppResult<String> {
    let host = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(AppError::invalid(field, "must be a valid host name"));
    }
    Ok(host)
}

/// An `addr-spec` e-mail address, checked with the `email_address` crate and
/// refused when it holds anything that could break a header.
pub fn parse_email(field: &str, raw: &str) -> AppResult<String> {
    let addr = raw.trim();
    if has_line_break_or_nul(raw) {
        return Err(AppError::invalid(field, "must not contain CR, LF or NUL"));
    }
    if addr.len() > 254
        || !email_address::EmailAddress::is_valid(addr)
        || addr.contains(['<', '>', ' '])
    {
        return Err(AppError::invalid(field, "is not a valid e-mail address"));
    }
    Ok(addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_cover() {
        let all = Permissions::new(vec![Permission::All]);
        let send = Permissions::new(vec![Permission::Send]);
        assert!(all.covers(&send));
        assert!(!send.covers(&all));
        assert!(send.covers(&Permissions::default()));
    }

    #[test]
    fn hostnames_and_emails() {
        assert_eq!(
            parse_hostname("d", "Mail.Acme.COM.").unwrap(),
            "mail.acme.com"
        );
        assert!(parse_hostname("d", "bad_host").is_err());
        assert!(parse_hostname("d", "-a.com").is_err());
        assert!(parse_email("e", "a@b.com").is_ok());
        assert!(parse_email("e", "a@b.com\r\nBcc: x@y.z").is_err());
        assert!(parse_email("e", "not an address").is_err());
    }
}
