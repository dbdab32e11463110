//! `postline tenants reputation|reinstate`: the tenant named on the command
//! line, and the reputation object as plain text.

use std::fmt::Write;

use diesel::PgConnection;

use super::view::ReputationView;
use crate::domain::TenantId;
use crate::tenants::model::{self, TenantRef};

/// A live tenant by id or external_id; an unknown or deleted one is an error
/// naming what was asked.
pub fn resolve(conn: &mut PgConnection, asked: &str) -> anyhow::Result<TenantId> {
    let asked = asked.trim();
    if asked.is_empty() || asked.len() > 200 {
        anyhow::bail!("tenant: give a tenant id or external_id");
    }
    model::find(conn, &TenantRef::parse(asked), false)?
        .map(|t| TenantId(t.id))
        .ok_or_else(|| anyhow::anyhow!("tenant {asked}: not found"))
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

/// Status, reason, policy, the windows and the sending domains, one fact a
/// line (`key: value`), so scripts can grep it.
pub fn describe(v: &ReputationView) -> String {
    let mut out = String::new();
    let p = &v.policy;
    let _ = writeln!(out, "tenant: {}", v.tenant_id);
    let _ = writeln!(out, "status: {}", v.status);
    let _ = writeln!(out, "reason: {}", v.reason.as_deref().unwrap_or("-"));
    if let Some(t) = v.paused_at {
        let _ = writeln!(out, "paused_at: {}", t.to_rfc3339());
    }
    if let Some(t) = v.reinstated_at {
        let _ = writeln!(out, "reinstated_at: {}", t.to_rfc3339());
    }
    let _ = writeln!(
        out,
        "policy: {} window {} h, min volume {}, bounce warning {} pause {}, complaint warning {} pause {}",
        serde_json::to_value(p.mode)
            .ok()
            .and_then(|m| m.as_str().map(str::to_string))
            .unwrap_or_default(),
        p.window_hours,
        p.min_volume,
        pct(p.bounce_rate_warning),
        pct(p.bounce_rate_pause),
        pct(p.complaint_rate_warning),
        pct(p.complaint_rate_pause)
    );
    for w in &v.windows {
        let _ = writeln!(
            out,
            "window {} h: delivered {}, hard-bounced {}, complained {}, bounce rate {}, complaint rate {}",
            w.hours,
            w.delivered,
            w.hard_bounced,
            w.complained,
            pct(w.bounce_rate),
            pct(w.complaint_rate)
        );
    }
    for d in &v.domains {
        let _ = writeln!(
            out,
            "domain {}: delivered {}, hard-bounced {}, complained {}, bounce rate {}, complaint rate {}",
            if d.name.is_empty() { "(none)" } else { &d.name },
            d.delivered,
            d.hard_bounced,
            d.complained,
            pct(d.bounce_rate),
            pct(d.complaint_rate)
        );
    }
    out
}
