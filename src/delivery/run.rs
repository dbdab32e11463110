//! A message's transactions, one per envelope, in order over pooled
//! connections ([`Connections`]: the relay's pool, or an MX site's), and
//! what they come to for each recipient and for the message.
//!
//! A connection carries transactions until one leaves it unusable. One
//! found dead at MAIL with nothing accepted (a pooled connection the server
//! had dropped, or a 421 after the connection's earlier transactions) is
//! replaced and that transaction tried again on the fresh one; a fresh
//! connection failing so at its first transaction is not retried. After any
//! other break the envelopes not yet tried are deferred, so one attempt
//! never opens more connections than it has envelopes.
//!
//! The whole attempt (connecting, every transaction) ends by one deadline,
//! `delivery.attempt_timeout_secs` from its start: the transaction in
//! flight then and those not yet tried are deferred, and that connection is
//! closed; recipients whose transactions already ended keep their fate, so
//! a retry never sends them a second copy.

use async_trait::async_trait;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use tokio::time::{timeout_at, Instant};

use super::session::Parsed;
use super::transaction::transact;
use super::{Fate, Outcome, RcptResult, SmtpOptions};

/// Where a message's connections come from and go back to.
#[async_trait]
pub(super) trait Connections: Sync {
    type Conn: Send;
    /// An idle connection, if any.
    async fn checkout(&self) -> Option<Self::Conn>;
    /// A new session, ready for MAIL; the outcome for what it could not
    /// carry when there is none.
    async fn connect(&self) -> Result<Self::Conn, Outcome>;
    /// Back to the idle list when `reusable` (and the pool wants it), else
    /// closed.
    async fn release(&self, conn: Self::Conn, reusable: bool);
    /// The session and whether it pipelines.
    fn smtp<'c>(&self, conn: &'c mut Self::Conn) -> (&'c mut AsyncSmtpConnection, bool);
    /// Counts one transaction; false when the connection takes no more.
    fn carried(&self, conn: &mut Self::Conn) -> bool;
}

/// Every envelope's transaction; each recipient's fate.
pub(super) async fn deliver<C: Connections>(
    pool: &C,
    envs: &[Parsed],
    raw: &[u8],
    opts: &SmtpOptions,
) -> Vec<RcptResult> {
    let mut results = Vec::new();
    let deadline = Instant::now() + opts.attempt_timeout;
    let late = || Outcome::timed_out(opts.attempt_timeout);
    let (mut conn, mut fresh) = match pool.checkout().await {
        Some(conn) => (conn, false),
        None => match timeout_at(deadline, pool.connect()).await {
            Ok(Ok(conn)) => (conn, true),
            Ok(Err(outcome)) => return not_tried(envs, outcome),
            Err(_) => return not_tried(envs, late()),
        },
    };
    // Transactions done on `conn` so far.
    let mut done_here = 0;
    let mut next = 0;
    while let Some(env) = envs.get(next) {
        let attempt = {
            let (smtp, pipelining) = pool.smtp(&mut conn);
            timeout_at(deadline, transact(smtp, pipelining, env, raw, opts)).await
        };
        let Ok(attempt) = attempt else {
            tracing::info!("delivery attempt timed out (delivery.attempt_timeout_secs)");
            pool.release(conn, false).await;
            results.extend(not_tried(&envs[next..], late()));
            return results;
        };
        if attempt.stale && !(fresh && done_here == 0) {
            tracing::debug!(response = %attempt.outcome.response(), "connection gone before MAIL; a fresh one");
            pool.release(conn, false).await;
            match timeout_at(deadline, pool.connect()).await {
                Ok(Ok(c)) => (conn, fresh, done_here) = (c, true, 0),
                Ok(Err(outcome)) => {
                    results.extend(not_tried(&envs[next..], outcome));
                    return results;
                }
                Err(_) => {
                    results.extend(not_tried(&envs[next..], late()));
                    return results;
                }
            }
            continue;
        }
        next += 1;
        done_here += 1;
        let room = pool.carried(&mut conn);
        let broke = !attempt.reusable;
        results.extend(per_recipient(&env.all, attempt.outcome));
        if next == envs.len() {
            pool.release(conn, !broke).await;
            break;
        }
        if broke {
            pool.release(conn, false).await;
            let why = Outcome::deferred(
                "not sent: the SMTP session ended during an earlier transaction of this message \
                 (will retry)",
            );
            results.extend(not_tried(&envs[next..], why));
            break;
        }
        if !room {
            pool.release(conn, false).await;
            match timeout_at(deadline, pool.connect()).await {
                Ok(Ok(c)) => (conn, fresh, done_here) = (c, true, 0),
                Ok(Err(outcome)) => {
                    results.extend(not_tried(&envs[next..], outcome));
                    break;
                }
                Err(_) => {
                    results.extend(not_tried(&envs[next..], late()));
                    break;
                }
            }
        }
    }
    results
}

/// The same outcome for every recipient of `envs`.
fn not_tried(envs: &[Parsed], outcome: Outcome) -> Vec<RcptResult> {
    envs.iter()
        .flat_map(|e| per_recipient(&e.all, outcome.clone()))
        .collect()
}

/// Each recipient's fate from the outcome of their transaction.
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

/// One plain outcome when every recipient fared alike, else per recipient
/// (its `response` the first deferral's, else a delivery's, else a
/// bounce's).
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
