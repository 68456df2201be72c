//! Open-loop load: calls issued on a schedule, N per second, whether or not
//! earlier ones have answered (a closed loop would slow down exactly when
//! an instance dies and hide the failover from the numbers).
//!
//! A 1 ms ticker issues the calls that are due as spawned tasks; at most
//! `max_in_flight` run at once, and a call due while that many are running
//! is *shed* (counted, never sent) instead of queueing behind them. Every
//! outcome goes into a shared [`Tally`], which a progress reporter can read
//! while the load runs (`arith_client --rate`, `switchboard demo`).
//!
//! ```no_run
//! # async fn run() {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use switchboard_cli::load::{OpenLoop, Tally};
//!
//! let tally = Arc::new(Tally::new());
//! let plan = OpenLoop { rate: 1000, duration: Duration::from_secs(5), max_in_flight: 1000 };
//! plan.run(Arc::clone(&tally), |i| async move { if i < u64::MAX { Ok(()) } else { Err("never".to_owned()) } }).await;
//! println!("{}", tally.summary_line());
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};

/// Distinct error messages kept by a [`Tally`]; the rest count under "other".
const MAX_ERROR_KINDS: usize = 32;

/// How a load run went, updated as calls end.
#[derive(Debug)]
pub struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    shed: AtomicU64,
    /// Latencies (µs) since the last [`Tally::take_window`].
    window: Mutex<Histogram<u64>>,
    /// Every latency (µs).
    total: Mutex<Histogram<u64>>,
    /// Failure message → count.
    errors: Mutex<BTreeMap<String, u64>>,
}

/// The counters of a [`Tally`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls answered correctly.
    pub ok: u64,
    /// Calls that failed or answered wrongly.
    pub failed: u64,
    /// Calls never sent: due while `max_in_flight` calls were running.
    pub shed: u64,
}

impl Counts {
    /// Calls the schedule asked for: ok + failed + shed.
    pub fn issued(&self) -> u64 {
        self.ok + self.failed + self.shed
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An empty histogram of microseconds, 1 µs to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("static histogram bounds are valid")
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

impl Tally {
    /// All zero.
    pub fn new() -> Tally {
        Tally {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            window: Mutex::new(new_histogram()),
            total: Mutex::new(new_histogram()),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// A call answered correctly after `latency`.
    pub fn ok(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        lock(&self.window).saturating_record(micros);
        lock(&self.total).saturating_record(micros);
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    /// A call failed (or answered wrongly); `what` says how.
    pub fn failed(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = lock(&self.errors);
        let kinds = errors.len();
        match errors.get_mut(&what) {
            Some(n) => *n += 1,
            None if kinds < MAX_ERROR_KINDS => {
                errors.insert(what, 1);
            }
            None => *errors.entry("other errors".to_owned()).or_default() += 1,
        }
    }

    /// A call due while too many were running: not sent.
    pub fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        Counts {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
        }
    }

    /// Latencies recorded since the previous call (for a per-second p99).
    pub fn take_window(&self) -> Histogram<u64> {
        std::mem::replace(&mut *lock(&self.window), new_histogram())
    }

    /// Every latency recorded.
    pub fn latencies(&self) -> Histogram<u64> {
        lock(&self.total).clone()
    }

    /// Failure messages and how often each happened.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.errors).clone()
    }

    /// `calls: N ok: N failed: N p50: … p99: … max: …` (and `shed: N` when
    /// some calls could not be sent).
    pub fn summary_line(&self) -> String {
        let c = self.counts();
        let h = self.latencies();
        let mut line = format!(
            "calls: {} ok: {} failed: {} p50: {} p99: {} max: {}",
            c.issued(),
            c.ok,
            c.failed,
            micros(h.value_at_quantile(0.50)),
            micros(h.value_at_quantile(0.99)),
            micros(h.max())
        );
        if c.shed > 0 {
            line.push_str(&format!(" shed: {}", c.shed));
        }
        line
    }
}

/// `417µs`, `1.25ms`, `2.10s`.
pub fn micros(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

/// An open-loop schedule: `rate` calls per second for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Calls per second.
    pub rate: u64,
    /// How long to issue calls.
    pub duration: Duration,
    /// Most calls running at once; a call due beyond that is shed.
    pub max_in_flight: usize,
}

impl OpenLoop {
    /// Calls the schedule issues in all.
    pub fn total(&self) -> u64 {
        (self.rate as f64 * self.duration.as_secs_f64()).round() as u64
    }

    /// Issue `call(i)` for i = 0, 1, … on schedule, each on its own task,
    /// recording its outcome in `tally` (`Err` carries what went wrong).
    /// Returns once every call issued has ended; a call still running
    /// `drain` (10 s) after the schedule ended counts as failed.
    pub async fn run<F, Fut>(&self, tally: Arc<Tally>, call: F)
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let limit = self.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        let permits = Arc::new(Semaphore::new(limit));
        let total = self.total();
        let started = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut issued = 0u64;
        while issued < total {
            ticker.tick().await;
            // Due by now; a late tick issues everything it missed.
            let due = ((started.elapsed().as_secs_f64() * self.rate as f64) as u64).min(total);
            while issued < due {
                let i = issued;
                issued += 1;
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tally.shed();
                    continue;
                };
                let call = call(i);
                let tally = Arc::clone(&tally);
                tokio::spawn(async move {
                    let began = Instant::now();
                    match call.await {
                        Ok(()) => tally.ok(began.elapsed()),
                        Err(what) => tally.failed(what),
                    }
                    drop(permit);
                });
            }
        }
        // Wait for the calls still running (all permits back).
        let drain = Duration::from_secs(10);
        let all = u32::try_from(limit).unwrap_or(u32::MAX);
        if tokio::time::timeout(drain, permits.acquire_many(all)).await.is_err() {
            let running = limit.saturating_sub(permits.available_permits());
            for _ in 0..running {
                tally.failed(format!("no answer {drain:?} after the schedule ended"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issues_the_scheduled_calls_and_counts_outcomes() {
        let tally = Arc::new(Tally::new());
        let plan = OpenLoop { rate: 2000, duration: Duration::from_millis(250), max_in_flight: 100 };
        plan.run(Arc::clone(&tally), |i| async move {
            if i % 100 == 7 {
                Err("seven".to_owned())
            } else {
                Ok(())
            }
        })
        .await;
        let c = tally.counts();
        assert_eq!(c.issued(), 500, "{c:?}");
        assert_eq!(c.failed, 5, "{c:?}");
        assert_eq!(c.shed, 0, "{c:?}");
        assert_eq!(tally.errors().get("seven"), Some(&5));
        assert!(tally.summary_line().starts_with("calls: 500 ok: 495 failed: 5 p50: "), "{}", tally.summary_line());
    }

    #[tokio::test]
    async fn sheds_calls_beyond_the_in_flight_limit() {
        let tally = Arc::new(Tally::new());
        let plan = OpenLoop { rate: 1000, duration: Duration::from_millis(100), max_in_flight: 10 };
        plan.run(Arc::clone(&tally), |_| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(())
        })
        .await;
        let c = tally.counts();
        assert_eq!(c.ok, 10, "{c:?}");
        assert_eq!(c.shed, 90, "{c:?}");
        assert!(tally.summary_line().ends_with("shed: 90"), "{}", tally.summary_line());
    }
}
