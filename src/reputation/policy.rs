//! The reputation policy: the platform's `[reputation]` defaults, a tenant's
//! override (`reputation_policy`), and the pure decision a policy takes on a
//! window's figures.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::FieldError;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Warn and pause.
    Enforce,
    /// Warn only.
    Monitor,
    /// No decisions.
    Off,
}

/// `[reputation]`. Validated by [`ReputationSettings::validate`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReputationSettings {
    pub mode: Mode,
    pub window_hours: u32,
    pub min_volume: u64,
    pub bounce_rate_warning: f64,
    pub bounce_rate_pause: f64,
    pub complaint_rate_warning: f64,
    pub complaint_rate_pause: f64,
    /// Seconds between two decisions (platform-wide only).
    pub check_secs: u64,
}

/// The longest window a policy may take (the 7-day figures' span).
pub const MAX_WINDOW_HOURS: u32 = 168;
/// The largest `min_volume` a policy may take.
pub const MAX_MIN_VOLUME: u64 = 1_000_000_000;

impl ReputationSettings {
    /// `Err((key, why))` for the first bad value.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !(1..=3600).contains(&self.check_secs) {
            return Err((
                "reputation.check_secs".into(),
                "must be between 1 and 3600".into(),
            ));
        }
        let errors = check_policy(&self.policy(), "reputation.");
        match errors.into_iter().next() {
            Some(e) => Err((e.field, e.message)),
            None => Ok(()),
        }
    }

    /// The platform's default policy.
    pub fn policy(&self) -> Policy {
        Policy {
            mode: self.mode,
            window_hours: self.window_hours,
            min_volume: self.min_volume,
            bounce_rate_warning: self.bounce_rate_warning,
            bounce_rate_pause: self.bounce_rate_pause,
            complaint_rate_warning: self.complaint_rate_warning,
            complaint_rate_pause: self.complaint_rate_pause,
        }
    }
}

/// An effective policy (the defaults with a tenant's override on top).
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Policy {
    pub mode: Mode,
    pub window_hours: u32,
    pub min_volume: u64,
    pub bounce_rate_warning: f64,
    pub bounce_rate_pause: f64,
    pub complaint_rate_warning: f64,
    pub complaint_rate_pause: f64,
}

const RATES: [&str; 4] = [
    "bounce_rate_warning",
    "bounce_rate_pause",
    "complaint_rate_warning",
    "complaint_rate_pause",
];

impl Policy {
    /// The defaults with `over` (a validated override) on top; keys that do
    /// not parse keep the default.
    pub fn effective(defaults: &ReputationSettings, over: Option<&Value>) -> Policy {
        let mut p = defaults.policy();
        let Some(Value::Object(o)) = over else {
            return p;
        };
        if let Some(m) = o
            .get("mode")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
        {
            p.mode = m;
        }
        if let Some(h) = o.get("window_hours").and_then(Value::as_u64) {
            p.window_hours = u32::try_from(h).unwrap_or(p.window_hours);
        }
        if let Some(v) = o.get("min_volume").and_then(Value::as_u64) {
            p.min_volume = v;
        }
        for key in RATES {
            if let Some(v) = o.get(key).and_then(Value::as_f64) {
                *p.rate_mut(key) = v;
            }
        }
        p
    }

    fn rate_mut(&mut self, key: &str) -> &mut f64 {
        match key {
            "bounce_rate_warning" => &mut self.bounce_rate_warning,
            "bounce_rate_pause" => &mut self.bounce_rate_pause,
            "complaint_rate_warning" => &mut self.complaint_rate_warning,
            _ => &mut self.complaint_rate_pause,
        }
    }
}

fn check_policy(p: &Policy, prefix: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !(1..=MAX_WINDOW_HOURS).contains(&p.window_hours) {
        errors.push(FieldError::new(
            format!("{prefix}window_hours"),
            format!("must be an integer between 1 and {MAX_WINDOW_HOURS}"),
        ));
    }
    if p.min_volume > MAX_MIN_VOLUME {
        errors.push(FieldError::new(
            format!("{prefix}min_volume"),
            format!("must be an integer between 0 and {MAX_MIN_VOLUME}"),
        ));
    }
    let mut rates = p.clone();
    for key in RATES {
        let v = *rates.rate_mut(key);
        if !(v.is_finite() && v > 0.0 && v <= 1.0) {
            errors.push(FieldError::new(
                format!("{prefix}{key}"),
                "must be a number above 0 and at most 1",
            ));
        }
    }
    if p.bounce_rate_warning > p.bounce_rate_pause {
        errors.push(FieldError::new(
            format!("{prefix}bounce_rate_warning"),
            "must not exceed bounce_rate_pause",
        ));
    }
    if p.complaint_rate_warning > p.complaint_rate_pause {
        errors.push(FieldError::new(
            format!("{prefix}complaint_rate_warning"),
            "must not exceed complaint_rate_pause",
        ));
    }
    errors
}

/// Validates a tenant's `reputation_policy` override (an object of any of
/// the policy's keys) and returns it as stored. The warning ≤ pause rule is
/// checked on the override's own keys (the defaults may change later).
pub fn check_override(v: &Value) -> Result<Value, Vec<FieldError>> {
    const FIELD: &str = "reputation_policy";
    let Value::Object(o) = v else {
        return Err(vec![FieldError::new(FIELD, "must be an object or null")]);
    };
    let mut errors = Vec::new();
    let mut clean = Map::new();
    for (key, value) in o {
        let field = format!("{FIELD}.{key}");
        match key.as_str() {
            "mode" => match serde_json::from_value::<Mode>(value.clone()) {
                Ok(_) => {
                    clean.insert(key.clone(), value.clone());
                }
                Err(_) => errors.push(FieldError::new(field, "must be one of enforce, monitor, off")),
            },
            "window_hours" => match value.as_u64() {
                Some(h) if (1..=u64::from(MAX_WINDOW_HOURS)).contains(&h) => {
                    clean.insert(key.clone(), value.clone());
                }
                _ => errors.push(FieldError::new(
                    field,
                    format!("must be an integer between 1 and {MAX_WINDOW_HOURS}"),
                )),
            },
            "min_volume" => match value.as_u64() {
                Some(n) if n <= MAX_MIN_VOLUME => {
                    clean.insert(key.clone(), value.clone());
                }
                _ => errors.push(FieldError::new(
                    field,
                    format!("must be an integer between 0 and {MAX_MIN_VOLUME}"),
                )),
            },
            k if RATES.contains(&k) => match value.as_f64() {
                Some(r) if r.is_finite() && r > 0.0 && r <= 1.0 => {
                    clean.insert(key.clone(), value.clone());
                }
                _ => errors.push(FieldError::new(field, "must be a number above 0 and at most 1")),
            },
            "check_secs" => errors.push(FieldError::new(
                field,
                "is platform-wide (reputation.check_secs); not a tenant setting",
            )),
            _ => errors.push(FieldError::new(
                field,
                "is not a policy key (mode, window_hours, min_volume, bounce_rate_warning, bounce_rate_pause, complaint_rate_warning, complaint_rate_pause)",
            )),
        }
    }
    for (w, p) in [
        ("bounce_rate_warning", "bounce_rate_pause"),
        ("complaint_rate_warning", "complaint_rate_pause"),
    ] {
        if let (Some(a), Some(b)) = (
            clean.get(w).and_then(Value::as_f64),
            clean.get(p).and_then(Value::as_f64),
        ) {
            if a > b {
                errors.push(FieldError::new(
                    format!("{FIELD}.{w}"),
                    format!("must not exceed {p}"),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(clean))
    } else {
        Err(errors)
    }
}

/// A window's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub delivered: i64,
    pub hard_bounced: i64,
    pub complained: i64,
}

impl Counts {
    /// hard_bounced / (delivered + hard_bounced); 0 without volume.
    pub fn bounce_rate(&self) -> f64 {
        let d = self.delivered.max(0) + self.hard_bounced.max(0);
        if d == 0 {
            0.0
        } else {
            self.hard_bounced.max(0) as f64 / d as f64
        }
    }

    /// complained / delivered; 0 without deliveries.
    pub fn complaint_rate(&self) -> f64 {
        if self.delivered <= 0 {
            0.0
        } else {
            self.complained.max(0) as f64 / self.delivered as f64
        }
    }
}

/// What a policy says about a window.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Below `min_volume`, or mode `off`: no decision.
    Undecided,
    Healthy,
    Warning(String),
    Pause(String),
}

/// The decision on `c` (the window's figures) under `p`.
pub fn decide(p: &Policy, c: &Counts) -> Verdict {
    if p.mode == Mode::Off || u64::try_from(c.delivered.max(0)).unwrap_or(0) < p.min_volume {
        return Verdict::Undecided;
    }
    let (b, k) = (c.bounce_rate(), c.complaint_rate());
    let say = |what: &str, rate: f64, level: &str, limit: f64| {
        format!(
            "{what} rate {:.2}% over {}h is at or above the {level} threshold {:.2}% ({} delivered, {} hard bounced, {} complained)",
            rate * 100.0,
            p.window_hours,
            limit * 100.0,
            c.delivered,
            c.hard_bounced,
            c.complained
        )
    };
    let pause = if b >= p.bounce_rate_pause {
        Some(say("bounce", b, "pause", p.bounce_rate_pause))
    } else if k >= p.complaint_rate_pause {
        Some(say("complaint", k, "pause", p.complaint_rate_pause))
    } else {
        None
    };
    match (pause, p.mode) {
        (Some(why), Mode::Enforce) => return Verdict::Pause(why),
        (Some(why), _) => return Verdict::Warning(why),
        (None, _) => {}
    }
    if b >= p.bounce_rate_warning {
        Verdict::Warning(say("bounce", b, "warning", p.bounce_rate_warning))
    } else if k >= p.complaint_rate_warning {
        Verdict::Warning(say("complaint", k, "warning", p.complaint_rate_warning))
    } else {
        Verdict::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> ReputationSettings {
        ReputationSettings {
            mode: Mode::Enforce,
            window_hours: 24,
            min_volume: 200,
            bounce_rate_warning: 0.04,
            bounce_rate_pause: 0.08,
            complaint_rate_warning: 0.001,
            complaint_rate_pause: 0.003,
            check_secs: 10,
        }
    }

    fn counts(d: i64, b: i64, c: i64) -> Counts {
        Counts {
            delivered: d,
            hard_bounced: b,
            complained: c,
        }
    }

    #[test]
    fn rates_follow_the_contract_and_are_zero_without_volume() {
        assert_eq!(counts(0, 0, 0).bounce_rate(), 0.0);
        assert_eq!(counts(0, 0, 3).complaint_rate(), 0.0);
        assert!((counts(90, 10, 0).bounce_rate() - 0.1).abs() < 1e-12);
        assert!((counts(1000, 0, 3).complaint_rate() - 0.003).abs() < 1e-12);
    }

    #[test]
    fn thresholds_min_volume_and_modes_decide() {
        let mut p = defaults().policy();
        assert_eq!(decide(&p, &counts(199, 100, 100)), Verdict::Undecided);
        assert_eq!(decide(&p, &counts(200, 0, 0)), Verdict::Healthy);
        assert!(matches!(
            decide(&p, &counts(960, 40, 0)),
            Verdict::Warning(_)
        ));
        assert!(matches!(decide(&p, &counts(920, 80, 0)), Verdict::Pause(_)));
        assert!(matches!(
            decide(&p, &counts(1000, 0, 1)),
            Verdict::Warning(_)
        ));
        let Verdict::Pause(why) = decide(&p, &counts(1000, 0, 3)) else {
            panic!()
        };
        assert!(why.contains("0.30%") && why.contains("complaint"), "{why}");
        p.mode = Mode::Monitor;
        assert!(matches!(
            decide(&p, &counts(920, 80, 0)),
            Verdict::Warning(_)
        ));
        p.mode = Mode::Off;
        assert_eq!(decide(&p, &counts(920, 80, 0)), Verdict::Undecided);
    }

    #[test]
    fn an_override_is_checked_key_by_key_and_applied() {
        let ok =
            check_override(&json!({"mode": "monitor", "min_volume": 0, "bounce_rate_pause": 0.5}))
                .unwrap();
        let p = Policy::effective(&defaults(), Some(&ok));
        assert_eq!(
            (p.mode, p.min_volume, p.bounce_rate_pause),
            (Mode::Monitor, 0, 0.5)
        );
        assert_eq!(p.window_hours, 24);
        let bad = check_override(&json!({
            "mode": "loud", "window_hours": 169, "min_volume": -1, "bounce_rate_pause": 1.5,
            "check_secs": 5, "colour": 1
        }))
        .unwrap_err();
        let fields: Vec<&str> = bad.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "mode",
            "window_hours",
            "min_volume",
            "bounce_rate_pause",
            "check_secs",
            "colour",
        ] {
            assert!(
                fields.contains(&format!("reputation_policy.{f}").as_str()),
                "{fields:?}"
            );
        }
        // At the bounds.
        assert!(check_override(
            &json!({"window_hours": 168, "min_volume": MAX_MIN_VOLUME, "complaint_rate_pause": 1})
        )
        .is_ok());
        assert!(check_override(&json!({"window_hours": 0})).is_err());
        assert!(
            check_override(&json!({"bounce_rate_warning": 0.5, "bounce_rate_pause": 0.4})).is_err()
        );
        assert!(check_override(&json!([1])).is_err());
    }

    #[test]
    fn the_defaults_validate() {
        assert!(defaults().validate().is_ok());
        let mut s = defaults();
        s.check_secs = 0;
        assert!(s.validate().is_err());
        let mut s = defaults();
        s.bounce_rate_warning = 0.5;
        assert_eq!(
            s.validate().unwrap_err().0,
            "reputation.bounce_rate_warning"
        );
    }
}
