//! A relay transport's idle sessions: the most recently used is taken
//! first, so surplus ones age out after `idle_timeout`; a broken or expired
//! one is closed (QUIT in the background) instead of reused. [`Pool`] is
//! how one message's transactions ([`super::run`]) see them.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use tokio::time::timeout;

use super::run::Connections;
use super::smtp::SmtpTransport;
use super::Outcome;

/// A session ready for MAIL, and whether it pipelines.
pub(super) struct Conn {
    pub smtp: AsyncSmtpConnection,
    pub pipelining: bool,
}

struct Entry {
    conn: Conn,
    since: Instant,
}

pub(super) struct IdleList {
    list: Mutex<Vec<Entry>>,
    idle_timeout: Duration,
}

impl IdleList {
    pub fn new(idle_timeout: Duration) -> Self {
        IdleList {
            list: Mutex::new(Vec::new()),
            idle_timeout,
        }
    }

    /// A poisoned lock only means a panic elsewhere; the list is still whole.
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// The most recently used live connection.
    pub fn checkout(&self) -> Option<Conn> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() <= self.idle_timeout && !entry.conn.smtp.has_broken() {
                return Some(entry.conn);
            }
            close_politely(entry.conn.smtp);
        }
        None
    }

    /// Back for the next message; expired ones are closed on the way.
    pub fn checkin(&self, conn: Conn) {
        let idle_timeout = self.idle_timeout;
        let mut idle = self.lock();
        let (fresh, expired): (Vec<_>, Vec<_>) = std::mem::take(&mut *idle)
            .into_iter()
            .partition(|e| e.since.elapsed() <= idle_timeout);
        *idle = fresh;
        idle.push(Entry {
            conn,
            since: Instant::now(),
        });
        drop(idle);
        expired
            .into_iter()
            .for_each(|e| close_politely(e.conn.smtp));
    }
}

/// The relay's sessions as one message's transactions see them.
pub(super) struct Pool<'a> {
    pub idle: &'a IdleList,
    pub transport: &'a SmtpTransport,
    pub email_id: uuid::Uuid,
}

#[async_trait]
impl Connections for Pool<'_> {
    type Conn = Conn;

    async fn checkout(&self) -> Option<Conn> {
        self.idle.checkout()
    }

    async fn connect(&self) -> Result<Conn, Outcome> {
        self.transport.connect_logged(self.email_id).await
    }

    async fn release(&self, conn: Conn, reusable: bool) {
        if reusable {
            self.idle.checkin(conn);
        } else {
            close_politely(conn.smtp);
        }
    }

    fn smtp<'c>(&self, conn: &'c mut Conn) -> (&'c mut AsyncSmtpConnection, bool) {
        (&mut conn.smtp, conn.pipelining)
    }

    fn carried(&self, _conn: &mut Conn) -> bool {
        true
    }
}

/// Says QUIT in the background; the connection is dropped either way.
fn close_politely(mut conn: AsyncSmtpConnection) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = timeout(Duration::from_secs(5), conn.quit()).await;
        });
    }
}
