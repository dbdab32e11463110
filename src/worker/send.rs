//! One claimed message, on its own failure path: prepare it (MIME on the
//! blocking pool; an error or a panic fails this message alone, with the
//! reason), pace it, hand it to its transport, and say what the reply means
//! for the message and for each recipient (issue 13: only recipients with
//! work left are sent to; each one's fate is recorded on its own).

use chrono::Utc;
use uuid::Uuid;

use super::relays::TenantDelivery;
use super::Ctx;
use crate::bounces::recipients::{self, Update};
use crate::bounces::token::return_path;
use crate::bounces::{bounce_json, classify};
use crate::delivery::{self, Envelope, Fate, OutgoingMessage};
use crate::domain::TenantId;
use crate::emails::stream::Stream;
use crate::metrics;
use crate::queue::claim::Claimed;
use crate::queue::record::{Outcome, RcptOutcome, Resolution};

/// What the send path keeps of a row once its content went into the MIME
/// build (the row itself is consumed there, so its bodies are not held twice).
struct Meta {
    tenant_id: Uuid,
    id: Uuid,
    attempt: i32,
    expires_at: chrono::DateTime<Utc>,
    from_addr: String,
    envelope_from: String,
    /// The recipients to send to now: those with work left.
    recipients: Vec<String>,
    /// Every recipient address of the message (its `email_recipients`
    /// rows, any status): what return-path indices count in.
    every: Vec<String>,
    /// Some recipient was delivered by an earlier attempt.
    delivered_before: bool,
    /// RFC 8058 headers wanted (broadcast mail, or asked for).
    unsubscribe: bool,
    /// Picks the tenant's egress pool.
    stream: Stream,
}

impl Meta {
    fn of(claimed: &Claimed) -> Self {
        let row = &claimed.row;
        let (recipients, delivered_before) = if claimed.recipients.is_empty() {
            // Queued before per-recipient state existed: everyone.
            let all = row
                .to_addrs
                .iter()
                .chain(&row.cc_addrs)
                .chain(&row.bcc_addrs)
                .map(|r| address_of(r))
                .collect();
            (all, false)
        } else {
            let pending = claimed
                .recipients
                .iter()
                .filter(|r| recipients::PENDING.contains(&r.status.as_str()))
                .map(|r| r.recipient.clone())
                .collect();
            let before = claimed.recipients.iter().any(|r| r.status == "delivered");
            (pending, before)
        };
        let every = claimed
            .recipients
            .iter()
            .map(|r| r.recipient.clone())
            .collect();
        Meta {
            tenant_id: row.tenant_id,
            id: row.id,
            attempt: row.attempts.saturating_add(1),
            expires_at: row.expires_at,
            from_addr: row.from_addr.clone(),
            envelope_from: row.envelope_from.clone(),
            recipients,
            every,
            delivered_before,
            unsubscribe: row.unsubscribe || row.stream == "broadcast",
            stream: Stream::parse(&row.stream).unwrap_or_default(),
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
    let meta = Meta::of(&claimed);
    let outcome = |resolution| Outcome {
        lease,
        attempt: meta.attempt,
        resolution,
        recipients: Vec::new(),
    };
    let prepare = ctx.prepare.clone();
    let row = claimed.row;
    // Tracking (issue 29): links and pixel rewritten before the MIME build,
    // so DKIM signs them; a row with `track` 0 is not touched.
    let tracking = match &ctx.tracking {
        Some(t) => t.plan(&row).await,
        None => None,
    };
    let recipients = meta.recipients.clone();
    let built = tokio::task::spawn_blocking(move || build(&prepare, tracking, row, &recipients));
    let (raw, copies) = match built.await {
        Ok(Ok(built)) => built,
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
    if meta.recipients.is_empty() {
        // Nothing left to send (every recipient already has an outcome).
        return outcome(if meta.delivered_before {
            Resolution::Delivered {
                response: "no recipient left to send to".into(),
            }
        } else {
            Resolution::Failed {
                reason: "no recipient left to send to".into(),
            }
        });
    }
    let per_second = tenant.as_ref().and_then(|t| t.per_second);
    let pool = tenant
        .as_ref()
        .map(|t| t.pools.for_stream(meta.stream).to_string())
        .unwrap_or_else(|| delivery::pools::DEFAULT_POOL.to_string());
    if let Some(at) = ctx.pacer.pace(meta.tenant_id, per_second).await {
        metrics::limited("paced");
        return outcome(Resolution::Requeued { at });
    }
    let relay = match tenant.map(|t| t.relay).unwrap_or(Ok(None)) {
        Ok(r) => r,
        Err(why) => return outcome(deferral(ctx, &meta, why)),
    };
    let mut envelopes = envelopes(ctx, &meta).await;
    let links = ctx
        .unsubscribe
        .as_ref()
        .filter(|_| meta.unsubscribe && !crate::unsubscribe::headers::has_list_unsubscribe(&raw));
    let raw = match links {
        // RFC 8058 (issue 26) or tracked copies (issue 29): each recipient's
        // own List-Unsubscribe and/or content, signed in its own
        // transaction; the shared content stays unsigned.
        links if links.is_some() || !copies.is_empty() => {
            if let Err(why) = sign_each(ctx, &meta, links, &copies, &mut envelopes, &raw).await {
                return outcome(deferral(ctx, &meta, why));
            }
            raw
        }
        // DKIM: sign exactly the bytes sent (issue 12; a key that cannot be loaded defers).
        _ => match ctx.signer.sign(meta.tenant_id, &meta.from_addr, raw).await {
            Ok(signed) => signed,
            Err(why) => return outcome(deferral(ctx, &meta, why)),
        },
    };
    let transport = ctx.transports.for_message(relay, &pool);
    let msg = OutgoingMessage {
        tenant_id: TenantId(meta.tenant_id),
        email_id: meta.id,
        envelopes,
        raw,
    };
    #[cfg(feature = "test-hooks")]
    if let Some(hook) = &ctx.before_send {
        hook(meta.id);
    }
    let started = std::time::Instant::now();
    let sent = transport.send(&msg).await;
    drop(msg);
    if let delivery::Outcome::Throttled { after, .. } = &sent {
        // Direct delivery's site shaping had no slot: not an attempt.
        metrics::limited("mx_site");
        let after = chrono::Duration::from_std(*after).unwrap_or(chrono::Duration::seconds(1));
        return outcome(Resolution::Requeued {
            at: Utc::now() + after,
        });
    }
    let label = match &sent {
        o if o.is_delivered() => "delivered",
        delivery::Outcome::Delivered { .. } => "delivered",
        delivery::Outcome::Bounced { .. } => "bounced",
        delivery::Outcome::Deferred { .. } => "deferred",
        delivery::Outcome::PerRecipient { .. } => "per_recipient",
        delivery::Outcome::Throttled { .. } => "throttled",
    };
    metrics::smtp_send(label, started.elapsed());
    delivery::mx::metrics::pool_sent(&pool, label);
    resolve(ctx, &meta, lease, sent)
}

/// Each recipient's own copy of a tracked message (issue 29).
type Copies = Vec<(String, std::sync::Arc<[u8]>)>;

/// The message's content (MIME on the blocking pool): one for everyone
/// when it is not tracked or has one recipient left (its links name that
/// recipient), else also each recipient's own copy, its links and pixel
/// naming it (`raw` is then the first copy: what a transport that ignores
/// envelopes, the capture directory, keeps). Copies that together would
/// pass `tracking.max_copies_bytes` are not made: one copy naming no one.
fn build(
    prepare: &super::Prepare,
    plan: Option<crate::tracking::rewrite::Plan>,
    row: crate::emails::model::EmailRow,
    recipients: &[String],
) -> anyhow::Result<(Vec<u8>, Copies)> {
    use crate::tracking::host::apply;
    let Some(mut plan) = plan else {
        return Ok((prepare(row)?, Vec::new()));
    };
    if recipients.len() <= 1 {
        let one = plan.for_recipient(recipients.first().map(String::as_str));
        return Ok((prepare(apply(Some(one), row))?, Vec::new()));
    }
    let mut copies: Copies = Vec::with_capacity(recipients.len());
    for r in recipients {
        let copy = prepare(apply(Some(plan.for_recipient(Some(r))), row.clone()))?;
        if copies.is_empty() && !plan.copies_fit(copy.len(), recipients.len()) {
            // `tracking.max_copies_bytes`: one copy for all, naming no one.
            tracing::warn!(email_id = %row.id, bytes = copy.len(), recipients = recipients.len(),
                "tracked message too large for a copy per recipient (tracking.max_copies_bytes): one copy, links name no recipient");
            return Ok((
                prepare(apply(Some(plan.for_recipient(None)), row))?,
                Vec::new(),
            ));
        }
        copies.push((r.clone(), std::sync::Arc::from(copy)));
    }
    let raw = copies.first().map(|c| c.1.to_vec()).unwrap_or_default();
    Ok((raw, copies))
}

/// One envelope per recipient, each with its own DKIM signature over the
/// recipient's RFC 8058 header lines (when `links`) and its content: its
/// own copy (from `copies`, carried in [`Envelope::content`]) or the
/// shared `raw`.
async fn sign_each(
    ctx: &Ctx,
    meta: &Meta,
    links: Option<&crate::unsubscribe::headers::Links>,
    copies: &Copies,
    envelopes: &mut Vec<Envelope>,
    raw: &[u8],
) -> Result<(), String> {
    let mut split = Vec::with_capacity(meta.recipients.len());
    for e in envelopes.drain(..) {
        if e.recipients.len() == 1 {
            split.push(e);
            continue;
        }
        for r in e.recipients {
            split.push(Envelope {
                from: e.from.clone(),
                recipients: vec![r],
                headers: e.headers.clone(),
                content: None,
            });
        }
    }
    for e in &mut split {
        let Some(rcpt) = e.recipients.first() else {
            continue;
        };
        let own = copies
            .iter()
            .find(|(r, _)| r == rcpt)
            .map(|(_, c)| c.clone());
        // An unsubscribe stops broadcast mail, whatever carried the link.
        let lines = links.and_then(|l| {
            l.lines(
                meta.tenant_id,
                crate::emails::stream::Stream::Broadcast,
                rcpt,
            )
        });
        if lines.is_none() && own.is_none() {
            continue;
        }
        let lines = lines.unwrap_or_default();
        let body: &[u8] = own.as_deref().unwrap_or(raw);
        let mut content = Vec::with_capacity(lines.len() + body.len());
        content.extend_from_slice(lines.as_bytes());
        content.extend_from_slice(body);
        let signed = ctx
            .signer
            .sign(meta.tenant_id, &meta.from_addr, content)
            .await?;
        // What signing added before `lines`, then `lines`: all but the body.
        let head = &signed[..signed.len() - body.len()];
        e.headers.push_str(&String::from_utf8_lossy(head));
        e.content = own;
    }
    *envelopes = split;
    Ok(())
}

/// The envelopes of a message. With `bounces.domain` set, one per
/// recipient: its own VERP return path (at the sending domain's verified
/// return-path name if it has one, cached per tenant and From domain) and
/// its own `X-Postline-ID` header, both naming it, so a report about its
/// copy can only ever concern it. Else one envelope from the message's own
/// envelope sender to every recipient (also for mail queued before
/// per-recipient state, which no report could be matched to).
async fn envelopes(ctx: &Ctx, meta: &Meta) -> Vec<Envelope> {
    let single = || {
        vec![Envelope {
            from: meta.envelope_from.clone(),
            recipients: meta.recipients.clone(),
            headers: String::new(),
            content: None,
        }]
    };
    let Some(keys) = ctx.verp.as_ref().filter(|_| !meta.every.is_empty()) else {
        return single();
    };
    let Some(domain) = ctx
        .return_paths
        .domain_for(meta.tenant_id, &meta.from_addr)
        .await
    else {
        return single();
    };
    let ordered = recipients::ordered(meta.every.iter().map(String::as_str));
    meta.recipients
        .iter()
        .map(|rcpt| match recipients::index_of(&ordered, rcpt) {
            Some(i) => {
                let token = keys.token(meta.tenant_id, meta.id, i);
                Envelope {
                    from: return_path(&token, &domain),
                    recipients: vec![rcpt.clone()],
                    headers: format!("X-Postline-ID: {token}\r\n"),
                    content: None,
                }
            }
            // Not one of the message's rows (cannot happen: pending
            // recipients are rows): no token that could name it.
            None => Envelope {
                from: meta.envelope_from.clone(),
                recipients: vec![rcpt.clone()],
                headers: String::new(),
                content: None,
            },
        })
        .collect()
}

/// Each recipient's fate, and the message's: deferred while any recipient
/// is (the retry sends only to those), else delivered when any recipient
/// was, else bounced.
fn resolve(
    ctx: &Ctx,
    meta: &Meta,
    lease: crate::queue::model::Lease,
    sent: delivery::Outcome,
) -> Outcome {
    let fates: Vec<(String, Fate, String)> = match sent {
        delivery::Outcome::PerRecipient { recipients, .. } => recipients
            .into_iter()
            .map(|r| (r.recipient, r.fate, r.response))
            .collect(),
        uniform => {
            let fate = match &uniform {
                delivery::Outcome::Delivered { .. } => Fate::Delivered,
                delivery::Outcome::Deferred { .. } => Fate::Deferred,
                _ => Fate::Bounced,
            };
            let response = uniform.response().to_string();
            meta.recipients
                .iter()
                .map(|r| (r.clone(), fate, response.clone()))
                .collect()
        }
    };
    let first = |f: Fate| fates.iter().find(|x| x.1 == f).map(|x| x.2.clone());
    let resolution = if let Some(response) = first(Fate::Deferred) {
        deferral(ctx, meta, response)
    } else if let Some(response) = first(Fate::Delivered) {
        Resolution::Delivered { response }
    } else if meta.delivered_before {
        Resolution::Delivered {
            response: first(Fate::Bounced).unwrap_or_default(),
        }
    } else {
        Resolution::Bounced {
            response: first(Fate::Bounced).unwrap_or_default(),
        }
    };
    let gave_up = matches!(resolution, Resolution::Failed { .. });
    let days = ctx.settings.suppressions.hard_bounce_days;
    let recipients = fates
        .into_iter()
        .map(|(recipient, fate, response)| {
            let (status, bounce, suppress) = match fate {
                Fate::Delivered => ("delivered", None, None),
                Fate::Deferred if gave_up => ("failed", None, None),
                Fate::Deferred => ("deferred", None, None),
                Fate::Bounced => {
                    let b = classify::of_reply(&response);
                    let hard = b.bounce_type == classify::BounceType::Hard;
                    let expires = crate::suppressions::hard_bounce_expiry(days);
                    (
                        "bounced",
                        Some(bounce_json(&b, "smtp")),
                        hard.then_some(expires),
                    )
                }
            };
            RcptOutcome {
                update: Update {
                    recipient,
                    status,
                    smtp_response: Some(response),
                    bounce,
                },
                suppress,
            }
        })
        .collect();
    Outcome {
        lease,
        attempt: meta.attempt,
        resolution,
        recipients,
    }
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
    let delay = match &ctx.mx_retry {
        Some(schedule) => schedule.delay(meta.attempt),
        None => ctx.retry.delay(meta.attempt),
    };
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
