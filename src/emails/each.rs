//! Sending a list of messages where each one stands or falls on its own
//! (Postmark's batch): every message is validated alone, a refused one is
//! answered in its place, and the valid ones are queued together as one
//! submission — the same ingest path, daily-quota check and idempotency
//! transaction as `POST /v1/emails/batch`. What concerns the whole request
//! (the key, the tenant, the quota, the rate, a bad Idempotency-Key) still
//! refuses it whole, and then nothing is queued.
//!
//! Unlike `/v1`, a message whose every recipient is on the tenant's
//! suppression list is refused here ([`RECIPIENTS_SUPPRESSED`]) instead of
//! being stored as `suppressed`. The list is read before the ingest
//! transaction: an entry added in between still makes the message
//! `suppressed` at ingest (it is then answered as queued but never sent).

use std::collections::{HashMap, HashSet};

use actix_web::http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use super::input::SendRequest;
use super::model::NewEmail;
use super::service::{self, Accumulated};
use super::view::Accepted;
use crate::auth::Principal;
use crate::bounces::recipients;
use crate::db;
use crate::domain::Permission;
use crate::error::{AppError, AppResult, FieldError};
use crate::queue::ingest::Submission;
use crate::state::AppState;
use crate::suppressions::model as suppressions;

/// One message's answer: queued (or scheduled), or why it was refused.
pub type Outcome = Result<Accepted, AppError>;

/// The validation code of a message whose every recipient is suppressed;
/// its field errors name the addresses (field `recipients`).
pub const RECIPIENTS_SUPPRESSED: &str = "recipients_suppressed";

/// An Idempotency-Key and the hash of the request it came with.
pub struct Idempotent {
    key: String,
    hash: Vec<u8>,
}

impl Idempotent {
    /// `kind` names the API: the same key and bytes on two APIs are two
    /// different requests.
    pub fn new(key: String, kind: &str, body: &[u8]) -> Idempotent {
        Idempotent {
            key,
            hash: service::request_hash(kind, body),
        }
    }
}

/// Whether a refusal concerns only its own message (else the whole request).
pub fn is_per_message(e: &AppError) -> bool {
    matches!(e, AppError::Validation { .. } | AppError::MalformedJson(_))
}

/// Sends 1 to `max` messages, each a `/v1` single-send body or the caller's
/// own refusal of it. `reply` turns the outcomes, in order, into the answer;
/// that answer is stored with the Idempotency-Key and replayed for it. With
/// no valid message nothing is queued and no key is stored.
pub async fn send_each<F>(
    state: &AppState,
    who: &Principal,
    messages: Vec<AppResult<Vec<u8>>>,
    max: usize,
    idem: Option<Idempotent>,
    reply: F,
) -> AppResult<Value>
where
    F: FnOnce(Vec<Outcome>) -> AppResult<Value>,
{
    who.require(Permission::Send)?;
    if messages.is_empty() || messages.len() > max {
        return Err(AppError::invalid(
            "",
            format!("must hold 1 to {max} messages"),
        ));
    }
    if let Some(i) = &idem {
        service::check_idempotency_key(&i.key)?;
    }
    let mut acc = Accumulated::default();
    // Per message: the index of its prepared row, or its refusal.
    let mut slots: Vec<Result<usize, AppError>> = Vec::with_capacity(messages.len());
    let mut rows: Vec<NewEmail> = Vec::new();
    for m in messages {
        let prepared = match m.and_then(|b| crate::body::parse_json::<SendRequest>(&b)) {
            Ok(req) => service::prepare(state, who, None, req, "", &mut acc).await,
            Err(e) => Err(e),
        };
        match prepared {
            Ok(row) => {
                slots.push(Ok(rows.len()));
                rows.push(row);
            }
            Err(e) if is_per_message(&e) => slots.push(Err(e)),
            Err(e) => return Err(e),
        }
    }
    let mut suppressed = all_suppressed(state, &rows).await?;
    let refused: HashSet<usize> = suppressed.keys().copied().collect();
    let outcomes: Vec<Outcome> = slots
        .into_iter()
        .map(|s| match s {
            Ok(i) => match suppressed.remove(&i) {
                Some(addresses) => Err(refusal(addresses)),
                None => Ok(Accepted::of(&rows[i])),
            },
            Err(e) => Err(e),
        })
        .collect();
    let kept: Vec<NewEmail> = rows
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !refused.contains(i))
        .map(|(_, r)| r)
        .collect();
    let body = reply(outcomes)?;
    if kept.is_empty() {
        return Ok(body);
    }
    let idem = idem.map(|i| {
        let first = kept[0].tenant_id;
        // One tenant: scope by tenant; across tenants: by the (admin) key.
        let scope = if kept.iter().all(|r| r.tenant_id == first) {
            super::idempotency::Scope::Tenant(first)
        } else {
            super::idempotency::Scope::Platform(who.0.api_key_id)
        };
        (scope, i.key, i.hash)
    });
    let submission = Submission {
        rows: kept,
        quotas: acc.quotas,
    };
    let (_, v) = service::enqueue(state, submission, (StatusCode::OK, body), idem).await?;
    Ok(v)
}

fn refusal(addresses: Vec<String>) -> AppError {
    AppError::Validation {
        code: RECIPIENTS_SUPPRESSED,
        detail: format!(
            "Every recipient of this message is on the suppression list: {}.",
            addresses.join(", ")
        ),
        errors: addresses
            .into_iter()
            .map(|a| FieldError::new("recipients", a))
            .collect(),
    }
}

/// The rows (by index) whose every recipient is on their tenant's live
/// suppression list, with those addresses. One query for all of them.
async fn all_suppressed(
    state: &AppState,
    rows: &[NewEmail],
) -> AppResult<HashMap<usize, Vec<String>>> {
    let refs: Vec<&NewEmail> = rows.iter().collect();
    let all = recipients::of_new(&refs);
    if all.is_empty() {
        return Ok(HashMap::new());
    }
    let streams: HashMap<Uuid, &str> = rows.iter().map(|r| (r.id, r.stream.as_str())).collect();
    let stream_of = |e: &Uuid| {
        streams
            .get(e)
            .copied()
            .unwrap_or("transactional")
            .to_string()
    };
    let pairs: Vec<(Uuid, String, String)> = all
        .iter()
        .map(|r| (r.0, r.2.clone(), stream_of(&r.1)))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let live: HashSet<(Uuid, String, String)> = db::run(&state.pool, move |conn| {
        Ok(suppressions::live_among(conn, &pairs)?)
    })
    .await?
    .into_iter()
    .collect();
    if live.is_empty() {
        return Ok(HashMap::new());
    }
    let mut per_email: HashMap<Uuid, (bool, Vec<String>)> = HashMap::new();
    for (tenant, email, address, _) in all {
        let hit = live.contains(&(tenant, address.clone(), stream_of(&email)));
        let e = per_email.entry(email).or_insert((true, Vec::new()));
        e.0 &= hit;
        e.1.push(address);
    }
    Ok(rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match per_email.remove(&r.id) {
            Some((true, addresses)) => Some((i, addresses)),
            _ => None,
        })
        .collect())
}
