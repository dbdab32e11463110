//! The DNS records a domain needs and their check against DNS: DKIM (one TXT
//! per key), the return path (a CNAME to `bounces.domain`, issue 13), SPF
//! guidance and a DMARC recommendation. `records` lists them with the
//! statuses of the last check; `check` looks them up now.

use serde_json::{Map, Value};

use super::keys;
use super::model::{DkimKeyRow, DomainRow};
use crate::dns::{Answer, Dns};

/// The SPF policy suggested to tenants. Postline cannot know the addresses
/// of the relay that sends for it, so `mx` stands in; the check accepts any
/// SPF policy (`v=spf1 …`).
pub const SPF_VALUE: &str = "v=spf1 mx ~all";
/// A monitoring-only DMARC policy; the check accepts any DMARC record.
pub const DMARC_VALUE: &str = "v=DMARC1; p=none; adkim=r; aspf=r";
/// The return-path record of a domain is `pl-bounces.<domain>`: a CNAME to
/// the bounce domain. Once it checks `ok`, mail from the domain goes out
/// with `MAIL FROM:<b+TOKEN@pl-bounces.<domain>>` (SPF and DMARC alignment)
/// and the inbound listener accepts DSNs for that name.
pub const RETURN_PATH_LABEL: &str = "pl-bounces";

/// The name of `domain`'s return-path record.
pub fn return_path_name(domain: &str) -> String {
    format!("{RETURN_PATH_LABEL}.{domain}")
}

/// Key of the return-path record's status in `domains.checks`.
pub fn return_path_check_key(domain: &str) -> String {
    format!("return_path:{}", return_path_name(domain))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub purpose: &'static str,
    pub rtype: &'static str,
    pub name: String,
    pub value: String,
    pub required: bool,
    /// The DKIM key this record publishes.
    pub key: Option<uuid::Uuid>,
}

impl Record {
    /// Key of this record's status in `domains.checks`.
    pub fn check_key(&self) -> String {
        format!("{}:{}", self.purpose, self.name)
    }
}

/// A key's record is required when the key signs (active), or while no key
/// signs yet (a new domain's first keys). Pending keys of a rotation and
/// retiring keys are listed but not required. The return-path record is
/// listed when there is a bounce domain (`bounces.domain`, else empty) and
/// is never required.
/// The tracking record (issue 29) likewise with `tracking.domain`.
pub fn records(
    domain: &DomainRow,
    dkim: &[DkimKeyRow],
    bounce_domain: &str,
    tracking_domain: &str,
) -> Vec<Record> {
    let any_active = dkim.iter().any(|k| k.status == "active");
    let mut out: Vec<Record> = dkim
        .iter()
        .map(|k| Record {
            purpose: "dkim",
            rtype: "TXT",
            name: keys::record_name(k, &domain.name),
            value: keys::record_value(k),
            required: k.status == "active" || (!any_active && k.status == "pending"),
            key: Some(k.id),
        })
        .collect();
    if !bounce_domain.is_empty() {
        out.push(Record {
            purpose: "return_path",
            rtype: "CNAME",
            name: return_path_name(&domain.name),
            value: bounce_domain.to_ascii_lowercase(),
            required: false,
            key: None,
        });
    }
    if !tracking_domain.is_empty() {
        out.push(Record {
            purpose: "tracking",
            rtype: "CNAME",
            name: crate::tracking::host::record_name(&domain.name),
            value: tracking_domain.to_ascii_lowercase(),
            required: false,
            key: None,
        });
    }
    out.push(Record {
        purpose: "spf",
        rtype: "TXT",
        name: domain.name.clone(),
        value: SPF_VALUE.into(),
        required: false,
        key: None,
    });
    out.push(Record {
        purpose: "dmarc",
        rtype: "TXT",
        name: format!("_dmarc.{}", domain.name),
        value: DMARC_VALUE.into(),
        required: false,
        key: None,
    });
    out
}

/// The status of `r` in the last check (`missing` when never checked).
pub fn last_status<'a>(checks: &'a Value, r: &Record) -> &'a str {
    checks
        .get(r.check_key())
        .and_then(Value::as_str)
        .unwrap_or("missing")
}

/// Looks every record up now; `Err` when the resolver fails (a timeout is
/// no evidence that a record is gone). Returns the statuses by check key.
pub async fn check(
    dns: &Dns,
    dkim: &[DkimKeyRow],
    list: &[Record],
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for r in list {
        let answer = match r.rtype {
            "CNAME" => dns.cname(&r.name).await?,
            _ => dns.txt(&r.name).await?,
        };
        let status = match (&answer, r.purpose, r.key) {
            (Answer::Missing, _, _) => "missing",
            (Answer::Found(targets), "return_path" | "tracking", _) => {
                if targets.iter().any(|t| t.eq_ignore_ascii_case(&r.value)) {
                    "ok"
                } else {
                    "mismatch"
                }
            }
            (Answer::Found(values), "dkim", Some(id)) => match dkim.iter().find(|k| k.id == id) {
                Some(k) if values.iter().any(|v| keys::record_matches(k, v)) => "ok",
                _ => "mismatch",
            },
            (Answer::Found(values), "spf", _) => policy(values, "v=spf1"),
            (Answer::Found(values), "dmarc", _) => policy(values, "v=DMARC1"),
            (Answer::Found(_), _, _) => "mismatch",
        };
        out.insert(r.check_key(), Value::String(status.into()));
    }
    Ok(out)
}

/// `ok` when one of the TXT values is a policy of this kind; other TXT
/// records at the name (site verifications, …) are no policy: `missing`.
fn policy(values: &[String], prefix: &str) -> &'static str {
    let is = |v: &String| {
        let v = v.trim_start();
        v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    if values.iter().any(is) {
        "ok"
    } else {
        "missing"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> DomainRow {
        let now = chrono::Utc::now();
        DomainRow {
            tenant_id: uuid::Uuid::new_v4(),
            id: uuid::Uuid::new_v4(),
            name: "acme.test".into(),
            status: "verified".into(),
            created_at: now,
            verified_at: None,
            last_checked_at: None,
            failing_since: None,
            next_check_at: now,
            checks: serde_json::json!({"return_path:pl-bounces.acme.test": "ok"}),
        }
    }

    #[test]
    fn the_return_path_record_is_listed_only_with_a_bounce_domain_and_never_required() {
        let d = domain();
        assert!(!records(&d, &[], "", "")
            .iter()
            .any(|r| r.purpose == "return_path"));
        let list = records(&d, &[], "Bounces.Example.com", "");
        let rp = list.iter().find(|r| r.purpose == "return_path").unwrap();
        assert_eq!(
            (rp.rtype, rp.name.as_str(), rp.value.as_str(), rp.required),
            (
                "CNAME",
                "pl-bounces.acme.test",
                "bounces.example.com",
                false
            )
        );
        assert_eq!(rp.check_key(), return_path_check_key("acme.test"));
        assert_eq!(last_status(&d.checks, rp), "ok");
    }
}
