//! Exponential, capped, jittered backoff: how long to wait after a run of
//! failures. One policy type shared by whatever retries: the client's
//! reconnects, the balancer's retries, the registry backends' watches and
//! heartbeats.

use std::time::Duration;

/// Backoff between failed attempts: exponential, capped, jittered.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Largest wait.
    pub max: Duration,
    /// Each wait is this many times the previous.
    pub multiplier: f64,
    /// Each wait is randomised by up to this share either way (0.2 = ±20%),
    /// so clients that failed together do not retry together.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(5), 2.0, 0.2)
    }
}

__setters!(Backoff { initial: Duration, max: Duration, multiplier: f64, jitter: f64 });

impl Backoff {
    /// Waits from `initial`, each `multiplier` times the last, capped at
    /// `max`, each randomised by `jitter` (a share, either way). A `const
    /// fn`, for policies kept in constants.
    pub const fn new(initial: Duration, max: Duration, multiplier: f64, jitter: f64) -> Backoff {
        Backoff { initial, max, multiplier, jitter }
    }

    /// The wait after `failures` consecutive failures (1 or more).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = self.multiplier.powi(failures.saturating_sub(1).min(63) as i32);
        let base = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        Duration::from_secs_f64((base * spread).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let b = Backoff::default();
        let first = b.delay(1);
        assert!(first >= Duration::from_millis(40) && first <= Duration::from_millis(60), "{first:?}");
        let fourth = b.delay(4);
        assert!(fourth >= Duration::from_millis(320) && fourth <= Duration::from_millis(480), "{fourth:?}");
        for n in [20, 100, u32::MAX] {
            assert!(b.delay(n) <= Duration::from_secs(6), "{n}");
        }
    }
}
