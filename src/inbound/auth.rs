//! SPF, DKIM and DMARC verdicts of a received message with `mail-auth`,
//! through the process's resolver (`dns.nameservers`, so tests answer from
//! a loopback DNS server). A verdict is one word: `pass`, `fail`,
//! `softfail`, `neutral`, `temperror`, `permerror` or `none`.

use std::net::{IpAddr, Ipv4Addr};

use mail_auth::{AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfResult};
use serde::{Deserialize, Serialize};

use crate::dns::Dns;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verdicts {
    pub spf: String,
    pub dkim: String,
    pub dmarc: String,
}

impl Verdicts {
    pub fn unknown() -> Verdicts {
        Verdicts {
            spf: "temperror".into(),
            dkim: "temperror".into(),
            dmarc: "temperror".into(),
        }
    }
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_word(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_word(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

/// The best DKIM result among the signatures (any pass passes).
fn dkim_overall(results: &[mail_auth::DkimOutput<'_>]) -> &'static str {
    const ORDER: [&str; 6] = ["pass", "fail", "permerror", "temperror", "neutral", "none"];
    let words: Vec<&str> = results.iter().map(|o| dkim_word(o.result())).collect();
    ORDER
        .iter()
        .find(|w| words.contains(w))
        .copied()
        .unwrap_or("none")
}

pub struct Checker {
    auth: Option<MessageAuthenticator>,
    dns: Dns,
    host: String,
}

impl Checker {
    pub fn new(dns: &Dns, host: &str) -> Checker {
        let auth = dns.resolver().ok().map(|r| MessageAuthenticator(r.clone()));
        Checker {
            auth,
            dns: dns.clone(),
            host: host.to_string(),
        }
    }

    async fn publishes_dmarc(&self, domain: &str) -> bool {
        match self.dns.txt(&format!("_dmarc.{domain}")).await {
            Ok(crate::dns::Answer::Found(v)) => v.iter().any(|t| t.starts_with("v=DMARC1")),
            _ => false,
        }
    }

    /// The verdicts of one message from `peer` (HELO `helo`, envelope
    /// sender `mail_from`, empty for `<>`).
    pub async fn check(
        &self,
        raw: &[u8],
        peer: Option<IpAddr>,
        helo: &str,
        mail_from: &str,
    ) -> Verdicts {
        let Some(auth) = &self.auth else {
            return Verdicts::unknown();
        };
        let Some(msg) = AuthenticatedMessage::parse(raw) else {
            return Verdicts {
                spf: "none".into(),
                dkim: "permerror".into(),
                dmarc: "none".into(),
            };
        };
        let ip = peer.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let helo = if helo.is_empty() { "unknown" } else { helo };
        let sender = if mail_from.is_empty() {
            format!("postmaster@{helo}")
        } else {
            mail_from.to_string()
        };
        let sender_domain = sender
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(helo)
            .to_string();
        let dkim = auth.verify_dkim(&msg).await;
        let spf = auth
            .verify_spf(mail_auth::spf::verify::SpfParameters::verify_mail_from(
                ip, helo, &self.host, &sender,
            ))
            .await;
        let dmarc = auth
            .verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(
                &msg,
                &dkim,
                &sender_domain,
                &spf,
            ))
            .await;
        let dmarc_word = if dmarc.dkim_result() == &DmarcResult::Pass
            || dmarc.spf_result() == &DmarcResult::Pass
        {
            "pass"
        } else if matches!(dmarc.dkim_result(), DmarcResult::Fail(_))
            || matches!(dmarc.spf_result(), DmarcResult::Fail(_))
        {
            "fail"
        } else if dmarc.dkim_result() == &DmarcResult::None
            && dmarc.spf_result() == &DmarcResult::None
            && !dmarc.domain().is_empty()
        {
            // Neither aligned nor passed: a fail when the author domain
            // publishes a policy (mail-auth reports p=none and "no record"
            // alike, so a record at `_dmarc.<domain>` decides).
            if dmarc.policy() != mail_auth::dmarc::Policy::None
                || self.publishes_dmarc(dmarc.domain()).await
            {
                "fail"
            } else {
                "none"
            }
        } else {
            dmarc_word(dmarc.dkim_result())
        };
        Verdicts {
            spf: spf_word(spf.result()).into(),
            dkim: dkim_overall(&dkim).into(),
            dmarc: dmarc_word.into(),
        }
    }
}
