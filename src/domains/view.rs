//! Domains as the API shows them (never a private key).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::checks::{self, Record};
use super::model::{DkimKeyRow, DomainRow};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainView {
    pub id: Uuid,
    pub name: String,
    /// `pending`, `verified` or `failed`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub dkim: Vec<DkimView>,
    pub records: Vec<RecordView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DkimView {
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
    /// `pending`, `active` or `retiring`.
    pub status: String,
    /// The `p=` value of its DNS record.
    pub public_key: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordView {
    /// `dkim`, `return_path`, `tracking`, `spf` or `dmarc`.
    pub purpose: String,
    /// `TXT` or `CNAME`.
    #[serde(rename = "type")]
    pub rtype: String,
    pub name: String,
    pub value: String,
    pub required: bool,
    /// `missing`, `ok` or `mismatch` at the last check.
    pub status: String,
}

impl DomainView {
    /// `bounce_domain`: `bounces.domain` (the return-path record's target);
    /// `tracking_domain`: `tracking.domain` (the tracking record's).
    pub fn new(
        d: DomainRow,
        keys: &[DkimKeyRow],
        bounce_domain: &str,
        tracking_domain: &str,
    ) -> DomainView {
        let records: Vec<Record> = checks::records(&d, keys, bounce_domain, tracking_domain);
        DomainView {
            records: records
                .iter()
                .map(|r| RecordView {
                    purpose: r.purpose.into(),
                    rtype: r.rtype.into(),
                    name: r.name.clone(),
                    value: r.value.clone(),
                    required: r.required,
                    status: checks::last_status(&d.checks, r).into(),
                })
                .collect(),
            dkim: keys
                .iter()
                .map(|k| DkimView {
                    selector: k.selector.clone(),
                    algorithm: k.algorithm.clone(),
                    status: k.status.clone(),
                    public_key: k.public_key.clone(),
                })
                .collect(),
            id: d.id,
            name: d.name,
            status: d.status,
            created_at: d.created_at,
            verified_at: d.verified_at,
            last_checked_at: d.last_checked_at,
        }
    }
}
