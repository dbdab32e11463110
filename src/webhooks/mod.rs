//! Webhooks: tenant endpoints and platform-wide admin endpoints, an outbox
//! written in the transaction of each status change, and a dispatcher that
//! delivers it signed per Standard Webhooks, retrying with backoff.

pub mod deliveries;
pub mod dispatcher;
pub mod input;
pub mod model;
pub mod outbox;
pub mod retry;
pub mod routes;
pub mod sender;
pub mod service;
pub mod shared;
pub mod signing;
pub mod view;

/// The events an endpoint can subscribe to (`"*"` means all of them).
pub const EVENTS: [&str; 18] = [
    "email.queued",
    "email.scheduled",
    "email.canceled",
    "email.delivered",
    "email.deferred",
    "email.bounced",
    "email.failed",
    "domain.verified",
    "domain.failed",
    "email.suppressed",
    "email.complained",
    "tenant.reputation_warning",
    "tenant.paused",
    "tenant.reinstated",
    "email.unsubscribed",
    "email.received",
    // issue 29: opens and clicks (data gains url, user_agent, ip, machine, machine_reason).
    "email.opened",
    "email.clicked",
];

/// The event type of `POST …/test`.
pub const PING_EVENT: &str = "webhook.test";
