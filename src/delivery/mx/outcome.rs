//! Which domain a recipient is at, and whether a site asked us to slow
//! down.

use crate::delivery::RcptResult;

/// A reply asking us to slow down: 421, or an enhanced status 4.7.x.
pub(super) fn slowed(results: &[RcptResult]) -> bool {
    let slow = |text: &str| {
        text.starts_with("421") || (text.starts_with('4') && text.get(4..8) == Some("4.7."))
    };
    results.iter().any(|r| slow(&r.response))
}

/// The domain of an address, lower-cased; `None` when there is none.
pub(super) fn domain_of(rcpt: &str) -> Option<String> {
    let (_, domain) = rcpt.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}
