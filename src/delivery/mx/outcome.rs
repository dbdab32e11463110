//! What a domain's transaction means for its recipients, and for the
//! message as a whole.

use crate::delivery::{Fate, Outcome, RcptResult};

/// A reply asking us to slow down: 421, or an enhanced status 4.7.x.
pub(super) fn slowed(outcome: &Outcome) -> bool {
    let slow = |text: &str| {
        text.starts_with("421") || (text.starts_with('4') && text.get(4..8) == Some("4.7."))
    };
    match outcome {
        Outcome::PerRecipient { recipients, .. } => recipients.iter().any(|r| slow(&r.response)),
        other => slow(other.response()),
    }
}

/// Each recipient's fate from the outcome of its domain's transaction.
pub(super) fn per_recipient(rcpts: &[String], outcome: Outcome) -> Vec<RcptResult> {
    let fate = match &outcome {
        Outcome::PerRecipient { recipients, .. } => return recipients.clone(),
        Outcome::Delivered { .. } => Fate::Delivered,
        Outcome::Bounced { .. } => Fate::Bounced,
        Outcome::Deferred { .. } | Outcome::Throttled { .. } => Fate::Deferred,
    };
    rcpts
        .iter()
        .map(|r| RcptResult {
            recipient: r.clone(),
            fate,
            response: outcome.response().to_string(),
        })
        .collect()
}

/// The domain of an address, lower-cased; `None` when there is none.
pub(super) fn domain_of(rcpt: &str) -> Option<String> {
    let (_, domain) = rcpt.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// One plain outcome when every recipient fared alike, else per recipient.
pub(super) fn combine(results: Vec<RcptResult>) -> Outcome {
    let Some(first) = results.first() else {
        return Outcome::bounced("no valid recipient (not sent)");
    };
    if results
        .iter()
        .all(|r| r.fate == first.fate && r.response == first.response)
    {
        let response = first.response.clone();
        return match first.fate {
            Fate::Delivered => Outcome::Delivered { response },
            Fate::Deferred => Outcome::Deferred { response },
            Fate::Bounced => Outcome::Bounced { response },
        };
    }
    let response = [Fate::Deferred, Fate::Delivered, Fate::Bounced]
        .iter()
        .find_map(|f| results.iter().find(|r| r.fate == *f))
        .map(|r| r.response.clone())
        .unwrap_or_default();
    Outcome::PerRecipient {
        response,
        recipients: results,
    }
}
