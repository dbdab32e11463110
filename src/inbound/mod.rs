//! Inbound mail for tenants (issue 28): routes at a tenant's verified
//! domains, the listener's decision for each RCPT, and what happens to a
//! message once it arrived.
//! - [`model`]: `inbound_routes` and `inbound_messages` SQL;
//! - [`service`] / [`http`]: the routes API and the received-mail reads;
//! - [`listener`]: the SMTP handler of `inbound.bind` (tenant routes, then
//!   the bounce handler's addresses); [`route_of`] is the routing decision;
//! - [`receive`]: verdicts ([`auth`], mail-auth), spam score ([`rspamd`]),
//!   parsing ([`parse`], mail-parser), storage and the `email.received`
//!   webhook, in one transaction;
//! - [`view`]: the received-message object and Postmark's inbound shape;
//! - [`rate`]: messages per tenant per minute.

pub mod auth;
pub mod http;
pub mod listener;
pub mod model;
pub mod parse;
pub mod rate;
pub mod receive;
pub mod rspamd;
pub mod service;
pub mod view;

/// The webhook event of a received message.
pub const EVENT: &str = "email.received";

/// An address split for routing: the local part without its `+hash`
/// (lower-cased), the hash (as written), and the domain (lower-cased). `None` for anything not `local@domain`.
pub fn split_address(address: &str) -> Option<(String, Option<String>, String)> {
    let (local, domain) = address.trim().rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    let (base, hash) = match local.split_once('+') {
        Some((b, h)) if !b.is_empty() => (b, (!h.is_empty()).then(|| h.to_string())),
        _ => (local, None),
    };
    Some((base.to_ascii_lowercase(), hash, domain.to_ascii_lowercase()))
}

/// The routing decision for one RCPT address, given the route lookup: a
/// small pure function so the listener's other addresses (bounces, FBL,
/// unsubscribe) stay the bounce handler's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteDecision {
    /// A tenant route takes it (`webhook` or `hold`).
    Accept,
    /// A tenant route refuses it (`reject`): 550 during the session.
    Reject,
    /// No route: the bounce handler decides (else 550 5.1.1).
    NotRouted,
}

pub fn route_of(route: Option<&model::RouteRow>) -> RouteDecision {
    match route {
        Some(r) if r.action == "reject" => RouteDecision::Reject,
        Some(_) => RouteDecision::Accept,
        None => RouteDecision::NotRouted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_addressing_splits_the_hash() {
        assert_eq!(
            split_address("Support+ABC@Acme.com"),
            Some(("support".into(), Some("ABC".into()), "acme.com".into()))
        );
        assert_eq!(
            split_address("support@acme.com"),
            Some(("support".into(), None, "acme.com".into()))
        );
        assert_eq!(split_address("+x@acme.com").map(|s| s.1), Some(None));
        assert_eq!(split_address("nodomain"), None);
        assert_eq!(split_address("a@"), None);
    }
}
