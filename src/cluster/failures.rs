//! Failure counters shared by the nodes (issue 27): the failed-authentication
//! throttle per client address (API keys, OAuth clients) and the console's
//! sign-in throttles (per e-mail address, client address, device cookie),
//! each a cluster-wide rate on window budgets ([`super::rate::Rates`]): a
//! budget per (kind, subject) and minute, named `<kind>:60:<minute>`, whose
//! subject is a UUID made from a SHA-256 of the kind and the key (no address
//! or e-mail is written to the database).
//!
//! No query on the hot path: whether a subject is locked out is a look-up in
//! memory ([`SharedFailures::blocked`]). Only a failure costs a grant now and
//! then (the share is `limit / (50 × nodes)`, at least 1, so with small
//! limits one short transaction per failure, next to the failure's own key
//! lookup). A failure the cluster refuses (the minute's budget is spent on
//! any node) locks the subject out on this node until the minute ends; the
//! other nodes learn it at their next failure of that subject, so an
//! attacker spreading failures over N nodes gets at most the limit, plus one
//! per node that had not yet seen the lock-out.
//!
//! A failure is counted before its reply ([`SharedFailures::failed_now`]:
//! the API keys', OAuth clients' and console sign-ins' paths), so the
//! node's next attempt already sees a lock-out; [`SharedFailures::failed`]
//! counts in a task of its own (TOTP codes on the account page). Bounded: at most
//! [`MAX_SUBJECTS`] subjects per kind and minute go to the cluster; past it
//! (a spray of addresses) a node counts the rest only in its own window,
//! as before, and says so in the log once a minute.

use std::collections::HashSet;
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::rate::Rates;

/// Subjects per kind and minute counted cluster-wide.
pub const MAX_SUBJECTS: usize = 10_000;

/// One kind of failure counted cluster-wide.
#[derive(Clone)]
pub struct SharedFailures {
    rates: Rates,
    kind: &'static str,
    per_minute: i64,
    locked: moka::sync::Cache<Uuid, Instant>,
    tracked: Arc<Mutex<Tracked>>,
}

/// The subjects sent to the cluster in the current minute.
#[derive(Default)]
pub(crate) struct Tracked {
    minute: u64,
    subjects: HashSet<Uuid>,
    warned: bool,
}

impl Tracked {
    /// Whether `subject`'s failure in `minute` goes to the cluster: it does
    /// while fewer than `cap` subjects did this minute, or it is one of them.
    pub(crate) fn admit(&mut self, minute: u64, subject: Uuid, cap: usize) -> bool {
        if self.minute != minute {
            self.minute = minute;
            self.subjects.clear();
            self.warned = false;
        }
        if self.subjects.contains(&subject) {
            return true;
        }
        if self.subjects.len() >= cap {
            return false;
        }
        self.subjects.insert(subject);
        true
    }
}

fn minute_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 60
}

/// The budget subject of `key` for `kind`.
pub fn subject(kind: &str, key: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

impl SharedFailures {
    /// `kind` names the budget (`auth_failed_ip`, `console_failed_email`, …);
    /// `per_minute` is the limit across every node.
    pub fn new(rates: Rates, kind: &'static str, per_minute: u32) -> SharedFailures {
        SharedFailures {
            rates,
            kind,
            per_minute: i64::from(per_minute),
            locked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(61))
                .build(),
            tracked: Arc::default(),
        }
    }

    /// Seconds until `key` may try again, when the cluster locked it out.
    pub fn blocked(&self, key: &impl Display) -> Option<u64> {
        let until = self.locked.get(&subject(self.kind, &key.to_string()))?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| left.as_secs().max(1))
    }

    /// Counts one failure of `key` across the nodes, in a task of its own.
    pub fn failed(&self, key: &impl Display) {
        let Some(subject) = self.subject(key) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.clone();
        runtime.spawn(async move { me.count(subject).await });
    }

    /// Counts one failure of `key` across the nodes before returning (a
    /// grant now and then; the failure's reply waits for it, so the next
    /// attempt on this node already sees a lock-out).
    pub async fn failed_now(&self, key: &impl Display) {
        if let Some(subject) = self.subject(key) {
            self.count(subject).await;
        }
    }

    /// The subject of `key`, when its failures go to the cluster.
    fn subject(&self, key: &impl Display) -> Option<Uuid> {
        if self.per_minute == 0 {
            return None;
        }
        let subject = subject(self.kind, &key.to_string());
        let mut t = super::lease::lock(&self.tracked);
        if t.admit(minute_now(), subject, MAX_SUBJECTS) {
            return Some(subject);
        }
        if !t.warned {
            t.warned = true;
            tracing::warn!(
                kind = self.kind,
                "more than {MAX_SUBJECTS} subjects failed this minute; the rest count on this node only"
            );
        }
        None
    }

    async fn count(&self, subject: Uuid) {
        let a = self
            .rates
            .admit(subject, self.kind, self.per_minute, 60)
            .await;
        if !a.admitted {
            crate::metrics::limited("failed_auth_cluster");
            self.locked
                .insert(subject, Instant::now() + Duration::from_secs(a.reset_secs));
        }
    }
}

/// Shares every failure throttle of an API process with the other nodes:
/// API keys' and OAuth clients' failures per client address, the console's
/// sign-ins per e-mail address, client address and device cookie.
pub fn share_all(state: &crate::state::AppState) {
    let share = |l: &crate::auth::failures::FailedAuthLimiter<_>, kind| {
        l.share(SharedFailures::new(
            state.rates.clone(),
            kind,
            l.per_minute(),
        ))
    };
    share(state.auth.failed_limiter(), "auth_failed_ip");
    share(&state.oauth.inner().failed, "oauth_failed_ip");
    share(&state.console.by_ip, "console_failed_ip");
    let share_s = |l: &crate::auth::failures::FailedAuthLimiter<String>, kind| {
        l.share(SharedFailures::new(
            state.rates.clone(),
            kind,
            l.per_minute(),
        ))
    };
    share_s(&state.console.by_email, "console_failed_email");
    share_s(&state.console.by_device, "console_failed_device");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_differ_by_kind_and_key() {
        assert_ne!(subject("a", "1.2.3.4"), subject("b", "1.2.3.4"));
        assert_ne!(subject("a", "1.2.3.4"), subject("a", "1.2.3.5"));
        assert_eq!(subject("a", "x"), subject("a", "x"));
    }

    #[test]
    fn at_most_the_cap_of_subjects_go_to_the_cluster_per_minute() {
        let mut t = Tracked::default();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(t.admit(1, a, 2));
        assert!(t.admit(1, b, 2));
        assert!(!t.admit(1, c, 2), "a third subject is past the cap");
        assert!(t.admit(1, a, 2), "a subject already counted stays counted");
        assert!(t.admit(2, c, 2), "a new minute starts afresh");
    }
}
