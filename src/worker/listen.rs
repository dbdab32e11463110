//! The LISTEN thread: wakes the claim loop when another node commits mail.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::Secret;

/// Starts the thread; it ends by itself once every receiver of `wake` is gone.
pub fn start(url: Secret, wake: watch::Sender<u64>) {
    if let Err(e) = std::thread::Builder::new()
        .name("postline-listen".into())
        .spawn(move || listen(url, wake))
    {
        tracing::error!(error = %e, "LISTEN thread not started; the claim loop polls");
    }
}

/// How often the LISTEN thread reads its socket for notifications.
const LISTEN_POLL: Duration = Duration::from_millis(5);

/// LISTENs on the queue channel and bumps the wake counter on every NOTIFY;
/// reconnects with backoff; ends once every receiver of `wake` is gone.
///
/// The connection is libpq's (diesel), opened from `database.url` exactly as
/// the pool's are, so every `sslmode` (`require`, `verify-full` with
/// `sslrootcert`, …) and libpq parameter works here too. libpq has no
/// blocking wait for notifications without a query, so a dedicated thread
/// reads what has arrived every [`LISTEN_POLL`] (a non-blocking read: one
/// syscall, ~200 a second), adding at most that to a wake-up.
fn listen(url: Secret, wake: watch::Sender<u64>) {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let mut backoff = Duration::from_millis(200);
    while !wake.is_closed() {
        match PgConnection::establish(url.expose()) {
            Ok(mut conn) => {
                backoff = Duration::from_millis(200);
                match diesel::sql_query(format!("LISTEN {}", crate::queue::CHANNEL))
                    .execute(&mut conn)
                {
                    Ok(_) => {
                        // Wake everyone once: mail may have arrived while we were not listening.
                        wake.send_modify(|n| *n = n.wrapping_add(1));
                        if let Err(e) = relay_notifications(&mut conn, &wake) {
                            tracing::warn!(error = %e, "LISTEN connection lost");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
                }
            }
            Err(e) => tracing::debug!(error = %e, "LISTEN connect failed"),
        }
        // Sleep in small steps, so a stopped worker does not wait for it.
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until && !wake.is_closed() {
            std::thread::sleep(LISTEN_POLL);
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Turns the notifications arriving on `conn` into wake-ups until the
/// connection fails (`Err`) or the worker is gone (`Ok`).
fn relay_notifications(
    conn: &mut diesel::PgConnection,
    wake: &watch::Sender<u64>,
) -> diesel::QueryResult<()> {
    while !wake.is_closed() {
        let mut woken = false;
        for n in conn.notifications_iter() {
            n?;
            woken = true;
        }
        if woken {
            wake.send_modify(|n| *n = n.wrapping_add(1));
        }
        std::thread::sleep(LISTEN_POLL);
    }
    Ok(())
}
