//! One claimed message, on its own failure path: prepare it (MIME on the
//! blocking pool; an error or a panic fails this message alone, with the
//! reason), pace it, hand it to its transport, and say what the reply means.

use chrono::Utc;
use uuid::Uuid;

use super::relays::TenantDelivery;
use super::Ctx;
use crate::delivery::{self, OutgoingMessage};
use crate::domain::TenantId;
use crate::emails::model::EmailRow;
use crate::metrics;
use crate::queue::claim::Claimed;
use crate::queue::record::{Outcome, Resolution};

/// What the send path keeps of a row once its content went into the MIME
/// build (the row itself is consumed there, so its bodies are not held twice).
struct Meta {
    tenant_id: Uuid,
    id: Uuid,
    attempt: i32,
    expires_at: chrono::DateTime<Utc>,
    from_addr: String,
    envelope_from: String,
    recipients: Vec<String>,
}

impl Meta {
    fn of(row: &EmailRow) -> Self {
        Meta {
            tenant_id: row.tenant_id,
            id: row.id,
            attempt: row.attempts + 1,
            expires_at: row.expires_at,
            from_addr: row.from_addr.clone(),
            envelope_from: row.envelope_from.clone(),
            recipients: row
                .to_addrs
                .iter()
                .chain(&row.cc_addrs)
                .chain(&row.bcc_addrs)
                .map(|r| address_of(r))
                .collect(),
        }
    }
}

/// Attempts one message; `shutting_down` is read just before the send, so a
/// message not yet on the wire at shutdown goes back to the queue.
pub async fn attempt(
    ctx: &Ctx,
    claimed: Claimed,
    tenant: Option<TenantDelivery>,
    shutting_down: impl Fn() -> bool,
) -> Outcome {
    let lease = claimed.lease;
    let meta = Meta::of(&claimed.row);
    let outcome = |resolution| Outcome {
        lease,
        attempt: meta.attempt,
        resolution,
    };
    let prepare = ctx.prepare.clone();
    let row = claimed.row;
    let raw = match tokio::task::spawn_blocking(move || prepare(row)).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(e)) => {
            tracing::error!(email_id = %meta.id, error = %format!("{e:#}"), "message cannot be built");
            return outcome(Resolution::Failed {
                reason: format!("message cannot be built: {e}"),
            });
        }
        Err(e) => {
            tracing::error!(email_id = %meta.id, error = %e, "message preparation panicked");
            return outcome(Resolution::Failed {
                reason: "message cannot be built: preparing it failed unexpectedly".into(),
            });
        }
    };
    if shutting_down() {
        return outcome(Resolution::Requeued { at: Utc::now() });
    }
    let per_second = tenant.as_ref().and_then(|t| t.per_second);
    if let Some(at) = ctx.pacer.admit(meta.tenant_id, per_second) {
        metrics::limited("paced");
        return outcome(Resolution::Requeued { at });
    }
    let relay = match tenant.map(|t| t.relay).unwrap_or(Ok(None)) {
        Ok(r) => r,
        Err(why) => return outcome(deferral(ctx, &meta, why)),
    };
    // DKIM: sign exactly the bytes sent (issue 12; a key that cannot be loaded defers).
    let raw = match ctx.signer.sign(meta.tenant_id, &meta.from_addr, raw).await {
        Ok(signed) => signed,
        Err(why) => return outcome(deferral(ctx, &meta, why)),
    };
    let transport = ctx.transports.for_tenant(relay);
    let msg = OutgoingMessage {
        tenant_id: TenantId(meta.tenant_id),
        email_id: meta.id,
        envelope_from: meta.envelope_from.clone(),
        recipients: meta.recipients.clone(),
        raw,
    };
    let started = std::time::Instant::now();
    let sent = transport.send(&msg).await;
    drop(msg);
    let label = match &sent {
        delivery::Outcome::Delivered { .. } => "delivered",
        delivery::Outcome::Bounced { .. } => "bounced",
        delivery::Outcome::Deferred { .. } => "deferred",
    };
    metrics::smtp_send(label, started.elapsed());
    outcome(match sent {
        delivery::Outcome::Delivered { response } => Resolution::Delivered { response },
        delivery::Outcome::Bounced { response } => Resolution::Bounced { response },
        delivery::Outcome::Deferred { response } => deferral(ctx, &meta, response),
    })
}

/// The bare address of a stored mailbox (`Name <a@b>` → `a@b`).
fn address_of(mailbox: &str) -> String {
    mailbox
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.to_string())
        .unwrap_or_else(|_| mailbox.to_string())
}

/// Deferred with backoff, or failed once the next try would pass the
/// message's lifetime.
fn deferral(ctx: &Ctx, meta: &Meta, response: String) -> Resolution {
    let delay = ctx.retry.delay(meta.attempt);
    let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
    if next > meta.expires_at {
        Resolution::Failed {
            reason: format!("gave up after {} attempts: {response}", meta.attempt),
        }
    } else {
        Resolution::Deferred {
            response,
            next_attempt_at: next,
        }
    }
}
