//! A parsed bounce or complaint recorded against the recipient its token
//! names, in one transaction: the recipient's state, its event (and webhook
//! outbox rows), the suppression entry, the message status and the usage
//! counter. A report that names no recipient of ours (no verifying token,
//! no such message, a message-only token of a message with several
//! recipients) changes nothing.

use chrono::Utc;
use diesel::prelude::*;

use super::dsn::{Failure, Kind, Report};
use super::recipients::{self, RecipientRow};
use super::token::{Ref, VerpKeys};
use super::{bounce_json, classify};
use crate::db::schema::{email_events, emails};
use crate::domain::TenantId;
use crate::emails::model::NewEvent;
use crate::suppressions::model::{self as suppressions, NewSuppression};
use crate::usage::model::{self as usage, Counters};

/// What recording a report did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The report named a message of ours (a verified token).
    pub matched: Option<Ref>,
    pub bounced: Vec<String>,
    pub complained: Vec<String>,
}

/// The message and recipient a report is about: a return path among the
/// envelope recipients, else a token quoted in the report (`X-Postline-ID`,
/// or the original return path). The first token that verifies decides,
/// and one in the envelope wins over any in the report; tokens that do not
/// verify are ignored.
pub fn find_target(keys: &VerpKeys, rcpt_to: &[String], report: &Report) -> Option<Ref> {
    rcpt_to
        .iter()
        .find_map(|a| keys.verify_address(a))
        .or_else(|| report.tokens.iter().find_map(|t| keys.verify(t)))
}

/// The recipient a token names: the one at its index (`recipients::ordered`),
/// or for a message-only token the message's only recipient (with several,
/// the token does not say whose copy it was: nobody).
fn named<'a>(rows: &'a [RecipientRow], found: &Ref) -> Option<&'a RecipientRow> {
    match found.recipient {
        Some(i) => {
            let ordered = recipients::ordered(rows.iter().map(|r| r.recipient.as_str()));
            let address = *ordered.get(usize::from(i))?;
            rows.iter().find(|r| r.recipient == address)
        }
        None => match rows {
            [only] => Some(only),
            _ => None,
        },
    }
}

/// The failure a DSN reports for `rcpt`: the one naming it, else the
/// report's only failure (a forwarding hop rewrote the address; the token
/// says whose copy it was). Several failures, none naming it: none.
fn failure_for<'a>(report: &'a Report, rcpt: &str) -> Option<&'a Failure> {
    report
        .failures
        .iter()
        .find(|f| f.recipient.eq_ignore_ascii_case(rcpt))
        .or(match report.failures.as_slice() {
            [only] => Some(only),
            _ => None,
        })
}

/// Records a report against the one recipient its token names, whatever
/// addresses the report itself names (`Original-Rcpt-To`,
/// `Final-Recipient`): a recipient can only ever report about itself.
/// Idempotent per recipient of a message: a complaint applies once (a
/// recipient already `complained` takes none), a bounce report once (one
/// already `bounced` or `complained` takes none); a report that changes
/// nothing suppresses nothing, so replaying an old report never
/// re-suppresses an address the tenant removed since.
pub fn record(
    conn: &mut PgConnection,
    found: Ref,
    report: &Report,
    hard_bounce_days: u32,
) -> QueryResult<Applied> {
    conn.transaction(|conn| {
        let tenant = TenantId(found.tenant_id);
        let mut applied = Applied {
            matched: Some(found),
            ..Applied::default()
        };
        let status: Option<String> = emails::table
            .find((found.tenant_id, found.email_id))
            .select(emails::status)
            .for_update()
            .first(conn)
            .optional()?;
        let Some(status) = status else {
            applied.matched = None;
            return Ok(applied);
        };
        let rows = recipients::of_email(conn, tenant, found.email_id)?;
        let Some(r) = named(&rows, &found) else {
            tracing::debug!(email_id = %found.email_id, "report token names no recipient of the message; ignored");
            return Ok(applied);
        };
        let now = Utc::now();
        let mut events = Vec::new();
        let mut suppress = Vec::new();
        let mut counters = Counters::default();
        let reporter = report.reporting_mta.clone().unwrap_or_else(|| "dsn".into());
        // A DMARC failure report (`auth-failure`) is no complaint (issue 25).
        let complaint = match &report.kind {
            Kind::Complaint { feedback_type } if !super::dsn::is_auth_failure(feedback_type) => {
                Some(feedback_type)
            }
            _ => None,
        };
        let mut hard_bounced = false;
        if let Some(feedback_type) = complaint {
            if recipients::set_reported(conn, found.tenant_id, found.email_id, &r.recipient, "complained", None)? {
                applied.complained.push(r.recipient.clone());
                counters.emails_complained += 1;
                events.push(NewEvent {
                    tenant_id: found.tenant_id,
                    email_id: found.email_id,
                    kind: "email.complained".into(),
                    detail: serde_json::json!({"recipient": r.recipient, "feedback_type": feedback_type, "reported_by": reporter}),
                    at: now,
                });
                suppress.push(NewSuppression {
                    tenant_id: found.tenant_id,
                    email: r.recipient.clone(),
                    reason: "complaint",
                    expires_at: None,
                    source_email_id: Some(found.email_id),
                    detail: Some(format!("{feedback_type} report from {reporter}")),
                });
            }
        }
        if let Some(f) = failure_for(report, &r.recipient) {
            let b = classify::Bounce {
                bounce_type: f.bounce_type,
                status: f.status.clone(),
                diagnostic: f.diagnostic.clone(),
            };
            let json = bounce_json(&b, &reporter);
            if recipients::set_reported(conn, found.tenant_id, found.email_id, &r.recipient, "bounced", Some(&json))? {
                applied.bounced.push(r.recipient.clone());
                events.push(NewEvent {
                    tenant_id: found.tenant_id,
                    email_id: found.email_id,
                    kind: "email.bounced".into(),
                    detail: serde_json::json!({"recipient": r.recipient, "bounce": json, "smtp_response": f.diagnostic}),
                    at: now,
                });
                if f.bounce_type == classify::BounceType::Hard {
                    hard_bounced = true;
                    suppress.push(NewSuppression {
                        tenant_id: found.tenant_id,
                        email: r.recipient.clone(),
                        reason: "hard_bounce",
                        expires_at: crate::suppressions::hard_bounce_expiry(hard_bounce_days),
                        source_email_id: Some(found.email_id),
                        detail: Some(format!("{} {}", f.status, f.diagnostic).trim().to_string()),
                    });
                }
            }
        }
        suppressions::upsert(conn, &suppress)?;
        crate::reputation::track::report(
            conn,
            found.tenant_id,
            found.email_id,
            &r.status,
            hard_bounced,
            !applied.complained.is_empty(),
        )?;
        // A delivered message none of whose recipients is delivered any
        // more has bounced (API.md: `bounced` when all bounced).
        if !applied.bounced.is_empty() && status == "delivered" {
            let now_rows = recipients::of_email(conn, tenant, found.email_id)?;
            if now_rows.iter().all(|r| r.status == "bounced") {
                diesel::update(emails::table.find((found.tenant_id, found.email_id)))
                    .set(emails::status.eq("bounced"))
                    .execute(conn)?;
                counters.emails_bounced += 1;
            }
        }
        if !events.is_empty() {
            diesel::insert_into(email_events::table).values(&events).execute(conn)?;
            crate::webhooks::outbox::enqueue(conn, &events)?;
        }
        if counters.emails_bounced + counters.emails_complained > 0 {
            use crate::usage::streams::{self as usage_streams, Counter};
            let mut items = Vec::new();
            if counters.emails_bounced > 0 {
                items.push((found.tenant_id, found.email_id, Counter::Bounced));
            }
            if counters.emails_complained > 0 {
                items.push((found.tenant_id, found.email_id, Counter::Complained));
            }
            let deltas = std::iter::once((found.tenant_id, counters)).collect();
            let shard = usage::pick_shard();
            usage::add(conn, now.date_naive(), shard, &deltas)?;
            usage_streams::add_for_emails(conn, now.date_naive(), shard, &items)?;
        }
        Ok(applied)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounces::classify::BounceType;
    use uuid::Uuid;

    fn row(addr: &str) -> RecipientRow {
        RecipientRow {
            tenant_id: Uuid::nil(),
            email_id: Uuid::nil(),
            recipient: addr.into(),
            kind: "to".into(),
            status: "delivered".into(),
            smtp_response: None,
            bounce: None,
            updated_at: Utc::now(),
            first_opened_at: None,
            first_clicked_at: None,
        }
    }

    fn token(recipient: Option<u8>) -> Ref {
        Ref {
            tenant_id: Uuid::nil(),
            email_id: Uuid::nil(),
            recipient,
        }
    }

    fn failure(addr: &str) -> Failure {
        Failure {
            recipient: addr.into(),
            status: "5.1.1".into(),
            diagnostic: String::new(),
            bounce_type: BounceType::Hard,
            status_found: true,
        }
    }

    fn dsn(failures: Vec<Failure>) -> Report {
        Report {
            kind: Kind::Dsn,
            failures,
            complained: None,
            reporting_mta: None,
            tokens: Vec::new(),
        }
    }

    #[test]
    fn a_token_names_the_recipient_at_its_index_in_byte_order() {
        let rows = [row("zed@x.test"), row("amy@x.test")];
        let name = |t| named(&rows, &token(t)).map(|r| r.recipient.as_str());
        assert_eq!(name(Some(0)), Some("amy@x.test"));
        assert_eq!(name(Some(1)), Some("zed@x.test"));
        assert_eq!(name(Some(2)), None);
        assert_eq!(name(None), None, "message-only token, two recipients");
        let one = [row("solo@x.test")];
        assert_eq!(
            named(&one, &token(None)).map(|r| r.recipient.as_str()),
            Some("solo@x.test")
        );
    }

    #[test]
    fn a_dsn_counts_for_the_token_recipient_only() {
        let own = dsn(vec![failure("b@x.test"), failure("a@x.test")]);
        assert_eq!(failure_for(&own, "a@x.test").unwrap().recipient, "a@x.test");
        // Forwarded: the only failure names a rewritten address.
        let forwarded = dsn(vec![failure("a@elsewhere.test")]);
        assert!(failure_for(&forwarded, "a@x.test").is_some());
        // Several failures, none of them the token's recipient: nothing.
        let others = dsn(vec![failure("b@x.test"), failure("c@x.test")]);
        assert!(failure_for(&others, "a@x.test").is_none());
    }
}
