//! The SMTP handler of `inbound.bind`: a RCPT is taken when a tenant route
//! matches it ([`super::route_of`]), else when the bounce handler serves it
//! (bounce and FBL addresses, and whatever else it learns to serve), else
//! 550 5.1.1: never a relay. A `reject` route answers 550 during the
//! session. At DATA the routed recipients' message goes to
//! [`Inbound::receive`], the others' to the bounce handler.

use std::sync::Arc;

use async_trait::async_trait;

use super::receive::{Inbound, Routed, Session};
use super::RouteDecision;
use crate::bounces::inbound::BounceHandler;
use crate::smtp_server::{Envelope, Handler, Reply};

pub struct Listener {
    bounces: Arc<BounceHandler>,
    inbound: Arc<Inbound>,
}

fn temporary() -> Reply {
    Reply::new(451, "4.3.0 temporary failure, try again later")
}

impl Listener {
    pub fn new(bounces: Arc<BounceHandler>, inbound: Arc<Inbound>) -> Listener {
        Listener { bounces, inbound }
    }
}

#[async_trait]
impl Handler for Listener {
    async fn rcpt(&self, env: &Envelope, to: &str) -> Reply {
        let routed = match self.inbound.route(to).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "inbound RCPT: route lookup failed");
                return temporary();
            }
        };
        match super::route_of(routed.as_ref().map(|r| &r.route)) {
            RouteDecision::Reject => Reply::new(
                550,
                "5.7.1 mailbox unavailable: the recipient refuses this mail",
            ),
            RouteDecision::Accept => match routed {
                Some(r) if !self.inbound.rate.allows(r.route.tenant_id) => Reply::new(
                    451,
                    "4.7.1 too many messages for this recipient, try again later",
                ),
                _ => Reply::new(250, "2.1.5 OK"),
            },
            RouteDecision::NotRouted => {
                let reply = self.bounces.rcpt(env, to).await;
                if reply.code == 550 {
                    Reply::new(550, "5.1.1 no such recipient here (relaying denied)")
                } else {
                    reply
                }
            }
        }
    }

    async fn data(&self, env: Envelope, message: Vec<u8>) -> Reply {
        let mut routed: Vec<Routed> = Vec::new();
        let mut others: Vec<String> = Vec::new();
        for to in &env.rcpt_to {
            match self.inbound.route(to).await {
                Ok(Some(r)) if r.route.action != "reject" => routed.push(r),
                Ok(_) => others.push(to.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, "inbound DATA: route lookup failed");
                    return temporary();
                }
            }
        }
        if routed.is_empty() {
            return self.bounces.data(env, message).await;
        }
        // Shared, not copied, from here on.
        let raw = bytes::Bytes::from(message);
        if !others.is_empty() {
            let (bounces, raw) = (self.bounces.clone(), raw.clone());
            let done =
                tokio::task::spawn_blocking(move || bounces.process(&others, &raw).map(|_| ()))
                    .await;
            match done {
                Ok(Ok(())) => {}
                Ok(Err(reply)) => return reply,
                Err(_) => return temporary(),
            }
        }
        let session = Session {
            peer: env.peer.map(|p| p.ip()),
            helo: &env.helo,
            mail_from: &env.mail_from,
        };
        self.inbound.receive(session, routed, raw).await
    }
}
