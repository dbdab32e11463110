//! The console's template filters: times as people read them and statuses
//! as badges.
//!
//! `when`: an RFC 3339 time as `<time datetime title>` with "3 min ago" or
//! "in 2 h" (a date past a week), the full UTC time on hover; the vendored
//! `time.js` rewrites the hover text into the viewer's own zone.
//! `badge`: a status as a coloured label that keeps its word, so colour is
//! never the only signal.

use chrono::{DateTime, Utc};
use minijinja::Value;

/// `{{ t|when }}`: empty for none (so `{{ t|when or "never" }}` works).
pub fn when(v: Value) -> Value {
    let Some(s) = v.as_str() else {
        return Value::from("");
    };
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => Value::from_safe_string(time_html(t.with_timezone(&Utc), Utc::now())),
        // Not a time after all: shown as it is (escaped by the page).
        Err(_) => Value::from(s),
    }
}

pub fn time_html(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        t.format("%Y-%m-%d %H:%M:%S UTC"),
        relative(t, now)
    )
}

/// "just now", "3 min ago", "5 h ago", "2 days ago", "in 10 min"; past a
/// week either way, the date ("6 Dec 2026").
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (ahead, s) = (secs < 0, secs.unsigned_abs());
    let span = match s {
        0..=44 => return "just now".into(),
        45..=3_569 => format!("{} min", (s + 30) / 60),
        3_570..=86_399 => format!("{} h", (s + 1_800) / 3_600),
        86_400..=604_799 => match s / 86_400 {
            1 => "1 day".into(),
            d => format!("{d} days"),
        },
        _ => return t.format("%-d %b %Y").to_string(),
    };
    if ahead {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// `{{ status|badge }}`: `<span class="badge tone-…">status</span>`.
pub fn badge(v: Value) -> Value {
    let s = v
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string());
    let label = crate::console::charts::escape(&s);
    Value::from_safe_string(format!(
        "<span class=\"badge tone-{}\">{label}</span>",
        tone(&s)
    ))
}

/// Good, under way, bad or neutral, for the badge's colour.
pub fn tone(status: &str) -> &'static str {
    match status {
        "delivered" | "active" | "succeeded" | "verified" | "ok" | "enabled" | "on" | "healthy"
        | "up" => "good",
        "queued" | "sending" | "deferred" | "scheduled" | "pending" | "held" | "retrying"
        | "invited" | "warning" => "busy",
        "bounced" | "failed" | "complained" | "suppressed" | "revoked" | "disabled"
        | "suspended" | "paused" | "missing" | "mismatch" | "deleted" | "expired" | "gone" => "bad",
        _ => "plain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_796_000_000 + s, 0).unwrap()
    }

    #[test]
    fn relative_times_read_like_speech() {
        let now = at(0);
        assert_eq!(relative(at(-10), now), "just now");
        assert_eq!(relative(at(-180), now), "3 min ago");
        assert_eq!(relative(at(-3_600 * 5), now), "5 h ago");
        assert_eq!(relative(at(-86_400), now), "1 day ago");
        assert_eq!(relative(at(-86_400 * 3), now), "3 days ago");
        assert_eq!(relative(at(600), now), "in 10 min");
        assert_eq!(
            relative(at(-86_400 * 30), now),
            at(-86_400 * 30).format("%-d %b %Y").to_string()
        );
    }

    #[test]
    fn when_gives_a_time_element_with_the_full_time_on_hover() {
        let v = when(Value::from("2026-12-06T06:20:59.413528Z"));
        let s = v.to_string();
        assert!(
            s.starts_with(
                "<time datetime=\"2026-12-06T06:20:59Z\" title=\"2026-12-06 06:20:59 UTC\">"
            ),
            "{s}"
        );
        assert_eq!(when(Value::from(())).to_string(), "");
        assert_eq!(when(Value::from("soon")).to_string(), "soon");
    }

    #[test]
    fn badges_keep_their_word_and_escape_it() {
        assert_eq!(
            badge(Value::from("delivered")).to_string(),
            "<span class=\"badge tone-good\">delivered</span>"
        );
        assert!(badge(Value::from("<b>")).to_string().contains("&lt;b&gt;"));
        assert_eq!(tone("bounced"), "bad");
        assert_eq!(tone("deferred"), "busy");
    }
}
