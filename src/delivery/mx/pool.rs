//! A site's idle sessions as one message's transactions
//! ([`crate::delivery::run`]) see them: taken newest first while within
//! `idle_timeout` and unbroken, given back while under the site's messages
//! (transactions) per connection, else closed.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use lettre::transport::smtp::client::AsyncSmtpConnection;

use super::connect::Dialer;
use super::shaping::{Idle, Site};
use super::MxTransport;
use crate::delivery::run::Connections;
use crate::delivery::Outcome;

pub(super) struct SitePool<'a> {
    pub mx: &'a MxTransport,
    pub dialer: &'a Dialer,
    pub site: &'a Site,
    pub hosts: &'a [String],
    pub email_id: uuid::Uuid,
    /// The cluster-wide connection slot taken for a new session (issue 27).
    pub slot: Mutex<Option<crate::cluster::slots::Slot>>,
    /// A session taken before the transactions began (shared limits).
    pub first: Mutex<Option<Idle>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Connections for SitePool<'_> {
    type Conn = Idle;

    async fn checkout(&self) -> Option<Idle> {
        loop {
            let first = lock(&self.first).take();
            let idle = match first {
                Some(idle) => idle,
                None => self.site.idle_list().pop()?,
            };
            if idle.since.elapsed() <= self.mx.smtp.idle_timeout && !idle.conn.inner.has_broken() {
                return Some(idle);
            }
            idle.conn.close().await;
        }
    }

    async fn connect(&self) -> Result<Idle, Outcome> {
        let slot = lock(&self.slot).take();
        self.mx
            .connect(self.dialer, self.site, self.hosts, self.email_id, slot)
            .await
    }

    async fn release(&self, mut idle: Idle, reusable: bool) {
        if reusable && idle.sent < self.site.limits.messages_per_connection {
            idle.since = Instant::now();
            self.site.idle_list().push(idle);
        } else {
            idle.conn.close().await;
        }
    }

    fn smtp<'c>(&self, idle: &'c mut Idle) -> (&'c mut AsyncSmtpConnection, bool) {
        (&mut idle.conn.inner, idle.conn.pipelining)
    }

    fn carried(&self, idle: &mut Idle) -> bool {
        idle.sent += 1;
        idle.sent < self.site.limits.messages_per_connection
    }
}
