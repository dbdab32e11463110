//! Backoff for deferred mail: exponential from `retry_initial_ms`, capped at
//! `retry_max_ms`, with ±20 % jitter so a relay that comes back is not hit by
//! every deferred message at the same instant.

use std::time::Duration;

use rand::Rng;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The wait before the next try, after `attempts` tries so far (≥ 1).
    pub fn delay(&self, attempts: i32) -> Duration {
        let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let base = self
            .initial
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.max);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        base.mul_f64(jitter)
    }
}

/// Direct delivery's waits (`delivery.mx.retry_schedule_secs`, RFC 5321
/// §4.5.4.1): the n-th wait after the n-th try, the last repeating, ±20 %
/// jitter. The give-up time stays the message's `expires_at`.
#[derive(Clone, Debug)]
pub struct Schedule(pub Vec<Duration>);

impl Schedule {
    pub fn from_secs(secs: &[u64]) -> Self {
        Schedule(secs.iter().map(|s| Duration::from_secs(*s)).collect())
    }

    pub fn delay(&self, attempts: i32) -> Duration {
        let i = usize::try_from(attempts.saturating_sub(1)).unwrap_or(0);
        let base = self
            .0
            .get(i)
            .or(self.0.last())
            .copied()
            .unwrap_or(Duration::from_secs(1800));
        base.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_steps_then_repeats_its_last_wait() {
        let s = Schedule::from_secs(&[300, 1800, 3600]);
        let d1 = s.delay(1).as_secs_f64();
        assert!((240.0..=360.0).contains(&d1), "{d1}");
        let d2 = s.delay(2).as_secs_f64();
        assert!((1440.0..=2160.0).contains(&d2), "{d2}");
        let d9 = s.delay(9).as_secs_f64();
        assert!((2880.0..=4320.0).contains(&d9), "{d9}");
    }

    #[test]
    fn doubles_and_caps_with_jitter() {
        let p = RetryPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        };
        let d1 = p.delay(1).as_secs_f64();
        assert!((48.0..=72.0).contains(&d1), "{d1}");
        let d3 = p.delay(3).as_secs_f64();
        assert!((192.0..=288.0).contains(&d3), "{d3}");
        let d20 = p.delay(20).as_secs_f64();
        assert!((2880.0..=4320.0).contains(&d20), "{d20}");
    }
}
