//! Fail modes and retry rules: what a [`Balanced`](super::Balanced) channel
//! does when an attempt fails, or is slow.
//!
//! | mode | on a failed attempt | use it for |
//! |------|---------------------|------------|
//! | [`FailMode::FailFast`] | return the error | calls whose caller has its own retry logic, or that must not be delayed |
//! | [`FailMode::Failover`] (default, 3 attempts) | try another instance | most calls |
//! | [`FailMode::FailTry`] | try the same instance again | sticky, stateful back ends where another instance cannot help |
//! | [`FailMode::Backup`] | like failover; and if the first attempt has not answered within a delay, send a copy to a second instance and take whichever answers first | idempotent reads where tail latency matters |
//!
//! Whatever the mode, a call is repeated only when the error allows it
//! ([`Error::retry`](crate::Error::retry)):
//!
//! - **Never sent** (`Connect`, `Refused`, no instance): always safe. The
//!   next instance is tried at once, without backoff and without spending
//!   retry budget, like gRPC's *transparent retry*: nothing reached a
//!   server, so nothing was added to any server's load.
//! - **May have run** (`ConnectionLost`, `Unavailable`): repeated only for
//!   calls marked idempotent (`#[switchboard(idempotent)]` on the method, or
//!   [`CallOptions::idempotent`](crate::CallOptions::idempotent)), after an
//!   exponential backoff with jitter, and only if the retry budget allows.
//! - **Anything else** (application errors, deadline, codec): never.
//!
//! The caller's deadline covers all attempts and backoff waits together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::backoff::Backoff;

/// What to do when an attempt fails (see the [`balance`](crate::balance) docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailMode {
    /// One attempt; its error is the call's.
    FailFast,
    /// Up to `attempts` attempts in all, each on an instance not tried yet
    /// for this call.
    Failover {
        /// Attempts in all (1 = no retry).
        attempts: u32,
    },
    /// Up to `attempts` attempts in all, on the same instance.
    FailTry {
        /// Attempts in all (1 = no retry).
        attempts: u32,
    },
    /// Failover, plus a hedged copy: if the first attempt has not answered
    /// after `delay`, a second is sent to another instance (idempotent calls
    /// only, within the retry budget); the first answer wins and the other
    /// attempt is cancelled.
    Backup {
        /// When to send the copy.
        delay: BackupDelay,
        /// Attempts in all, for failover after errors (the copy included).
        attempts: u32,
    },
}

impl Default for FailMode {
    fn default() -> FailMode {
        FailMode::Failover { attempts: 3 }
    }
}

impl FailMode {
    /// Failover with `attempts` attempts in all.
    pub fn failover(attempts: u32) -> FailMode {
        FailMode::Failover { attempts: attempts.max(1) }
    }

    /// Backup requests after the observed 95th-percentile latency, with
    /// failover over 3 attempts.
    pub fn backup() -> FailMode {
        FailMode::Backup { delay: BackupDelay::Percentile(0.95), attempts: 3 }
    }

    pub(super) fn attempts(self) -> u32 {
        match self {
            FailMode::FailFast => 1,
            FailMode::Failover { attempts } | FailMode::FailTry { attempts } | FailMode::Backup { attempts, .. } => {
                attempts.max(1)
            }
        }
    }

    /// Parse `failfast`, `failover`, `failover:N`, `failtry`, `failtry:N`,
    /// `backup` (after p95), `backup:50ms` (fixed delay).
    pub fn parse(s: &str) -> Result<FailMode, String> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let count = |a: Option<&str>| -> Result<u32, String> {
            match a {
                None => Ok(3),
                Some(a) => a.parse::<u32>().map(|n| n.max(1)).map_err(|_| format!("bad attempt count {a:?} in {s:?}")),
            }
        };
        match name {
            "failfast" if arg.is_none() => Ok(FailMode::FailFast),
            "failover" => Ok(FailMode::Failover { attempts: count(arg)? }),
            "failtry" => Ok(FailMode::FailTry { attempts: count(arg)? }),
            "backup" => {
                let delay = match arg {
                    None => BackupDelay::Percentile(0.95),
                    Some(a) => BackupDelay::Fixed(parse_millis(a).ok_or_else(|| format!("bad delay {a:?} in {s:?}"))?),
                };
                Ok(FailMode::Backup { delay, attempts: 3 })
            }
            _ => Err(format!("unknown fail mode {s:?} (failfast, failover[:N], failtry[:N], backup[:DELAY])")),
        }
    }
}

fn parse_millis(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        ms.parse::<u64>().ok().map(Duration::from_millis)
    } else if let Some(secs) = s.strip_suffix('s') {
        secs.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).map(Duration::from_secs_f64)
    } else {
        None
    }
}

/// When a backup request is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BackupDelay {
    /// After a fixed delay.
    Fixed(Duration),
    /// After this quantile (0–1) of the latencies this channel observed
    /// recently (the last 1,024 answers). Until 64 answers were seen, after
    /// [`BACKUP_DELAY_BEFORE_SAMPLES`].
    Percentile(f64),
}

/// The backup delay used before a channel has seen enough answers to know
/// its latency percentiles.
pub const BACKUP_DELAY_BEFORE_SAMPLES: Duration = Duration::from_millis(50);

/// Retry timing and limits shared by every call of a channel.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Wait before the n-th retry of a call that may have run:
    /// `initial × multiplier^(n-1)`, capped at `max`, randomised by
    /// `jitter`. Default 10 ms, ×2, at most 1 s, ±50%.
    pub backoff: Backoff,
    /// Share of the original calls that retries and backup requests may add
    /// (default 0.2: at most 20% more load).
    pub budget_ratio: f64,
    /// Retries allowed per second regardless of traffic (default 10), so a
    /// quiet client can still retry.
    pub budget_min_per_sec: u32,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_secs(1),
                multiplier: 2.0,
                jitter: 0.5,
            },
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
        }
    }
}

__setters!(RetryPolicy { backoff: Backoff, budget_ratio: f64, budget_min_per_sec: u32 });

/// Recent answer latencies of a channel, for percentile backup delays.
pub(super) struct LatencyWindow {
    /// Microseconds, a ring of the last `WINDOW` answers.
    samples: Mutex<(Vec<u32>, usize)>,
    seen: AtomicU64,
    /// Cached quantile answers, in microseconds, refreshed every `REFRESH`
    /// samples: (quantile × 1000, value).
    cached: Mutex<Vec<(u32, u64)>>,
}

const WINDOW: usize = 1024;
const REFRESH: u64 = 64;

impl LatencyWindow {
    pub(super) fn new() -> LatencyWindow {
        LatencyWindow {
            samples: Mutex::new((Vec::with_capacity(WINDOW), 0)),
            seen: AtomicU64::new(0),
            cached: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn record(&self, rtt: Duration) {
        let us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (ring, next) = &mut *s;
        if ring.len() < WINDOW {
            ring.push(us);
        } else {
            ring[*next] = us;
        }
        *next = (*next + 1) % WINDOW;
        drop(s);
        if self.seen.fetch_add(1, Ordering::Relaxed) % REFRESH == REFRESH - 1 {
            self.cached.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// The `q` quantile of the recent latencies; `None` before 64 answers.
    pub(super) fn quantile(&self, q: f64) -> Option<Duration> {
        if self.seen.load(Ordering::Relaxed) < REFRESH {
            return None;
        }
        let key = (q.clamp(0.0, 1.0) * 1000.0) as u32;
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&(_, us)) = cached.iter().find(|(k, _)| *k == key) {
            return Some(Duration::from_micros(us));
        }
        let mut sorted = self.samples.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        sorted.sort_unstable();
        let idx = ((sorted.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
        let us = u64::from(*sorted.get(idx)?);
        cached.push((key, us));
        Some(Duration::from_micros(us))
    }

    pub(super) fn backup_delay(&self, delay: BackupDelay) -> Duration {
        match delay {
            BackupDelay::Fixed(d) => d,
            BackupDelay::Percentile(q) => {
                self.quantile(q).unwrap_or(BACKUP_DELAY_BEFORE_SAMPLES).max(Duration::from_micros(100))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_modes_parse() {
        assert_eq!(FailMode::parse("failfast"), Ok(FailMode::FailFast));
        assert_eq!(FailMode::parse("failover"), Ok(FailMode::Failover { attempts: 3 }));
        assert_eq!(FailMode::parse("failover:5"), Ok(FailMode::Failover { attempts: 5 }));
        assert_eq!(FailMode::parse("failtry:2"), Ok(FailMode::FailTry { attempts: 2 }));
        assert_eq!(FailMode::parse("backup"), Ok(FailMode::backup()));
        assert_eq!(
            FailMode::parse("backup:20ms"),
            Ok(FailMode::Backup { delay: BackupDelay::Fixed(Duration::from_millis(20)), attempts: 3 })
        );
        for bad in ["", "failover:x", "backup:soon", "failfast:2", "retry"] {
            assert!(FailMode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn latency_window_quantiles() {
        let w = LatencyWindow::new();
        assert_eq!(w.quantile(0.95), None);
        assert_eq!(w.backup_delay(BackupDelay::Percentile(0.95)), BACKUP_DELAY_BEFORE_SAMPLES);
        for i in 1..=1000u64 {
            w.record(Duration::from_micros(i * 10));
        }
        let p95 = w.quantile(0.95).expect("p95").as_micros();
        assert!((9400..=9600).contains(&p95), "{p95}");
        let p50 = w.quantile(0.5).expect("p50").as_micros();
        assert!((4900..=5100).contains(&p50), "{p50}");
        // The window keeps the last 1,024: a slower regime takes over.
        for _ in 0..1024 {
            w.record(Duration::from_millis(100));
        }
        assert_eq!(w.quantile(0.5), Some(Duration::from_millis(100)));
    }
}
