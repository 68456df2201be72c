//! Retry budgets: [`RetryBudget`] (the idea and the why are on the type,
//! which is what rustdoc shows), and the time-bucket window it and the
//! circuit breaker count in.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Buckets per window.
const BUCKETS: usize = 10;

/// Counts kept per time bucket over a sliding window: the last [`BUCKETS`]
/// buckets of `window / BUCKETS` each. Time comes from the caller (tokio's
/// clock), so tests can pause and advance it.
#[derive(Debug)]
pub(super) struct TimeWindow<T> {
    origin: Instant,
    width_nanos: u128,
    /// (bucket index since `origin`, counts) per slot.
    slots: [(u64, T); BUCKETS],
}

impl<T: Default + Copy> TimeWindow<T> {
    pub(super) fn new(window: Duration) -> TimeWindow<T> {
        let width = (window / BUCKETS as u32).max(Duration::from_millis(1));
        TimeWindow { origin: Instant::now(), width_nanos: width.as_nanos(), slots: [(0, T::default()); BUCKETS] }
    }

    fn index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos() / self.width_nanos;
        u64::try_from(elapsed).unwrap_or(u64::MAX)
    }

    /// The counts of the bucket `now` falls in (reset if it held an old one).
    pub(super) fn current(&mut self, now: Instant) -> &mut T {
        let index = self.index(now);
        let slot = &mut self.slots[(index % BUCKETS as u64) as usize];
        if slot.0 != index {
            *slot = (index, T::default());
        }
        &mut slot.1
    }

    /// The counts of every bucket still inside the window at `now`.
    pub(super) fn live(&self, now: Instant) -> impl Iterator<Item = &T> {
        let index = self.index(now);
        self.slots.iter().filter(move |(i, _)| index - *i < BUCKETS as u64).map(|(_, t)| t)
    }

    /// Forget everything.
    pub(super) fn clear(&mut self) {
        self.slots = [(0, T::default()); BUCKETS];
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    deposits: u64,
    withdrawals: u64,
}

/// A retry budget: retries may add at most a fixed share of the load that
/// callers asked for, plus a small allowance so quiet clients can retry too.
///
/// # Why budgets, not only a maximum number of attempts?
///
/// "Retry up to 3 times" looks harmless per call, but it multiplies load
/// exactly when the service can least take it. Picture a service that
/// starts failing 30 % of its calls because it is overloaded (a brown-out).
/// Every client retries each failure, up to 3 times: the service now gets
/// up to 2× the traffic, fails even more of it, which triggers even more
/// retries — and a partial failure becomes a full outage that lasts until
/// the callers give up. With several layers of services each retrying, the
/// factors multiply (3 retries at each of 3 layers: up to 64 calls at the
/// bottom for one at the top).
///
/// A budget caps the *extra* load instead of the attempts per call: each
/// original call deposits into the budget, each retry (or hedged backup
/// request) withdraws, and retries may only ever amount to `ratio` of the
/// original calls over a sliding window (20 % unless set). When a few calls
/// fail, each one can still be retried, so isolated errors stay invisible to
/// the caller. When many fail, the budget runs dry and the failures reach
/// the caller promptly, instead of hammering the service with a multiple of
/// its load. The maximum attempts per call still applies on top.
///
/// Because a client making few calls would rarely earn a retry, the budget
/// also grants `min_per_sec` retries per second on its own (10 unless set),
/// averaged over the window: a client that has been quiet for the whole
/// window may spend `min_per_sec × window` retries at once.
///
/// The budget counts in time buckets (a tenth of the window each); calls
/// leave it whole buckets at a time, so the window is exact to a tenth.
/// Share one budget per channel (or per service): it is `Send + Sync`, and
/// each call takes a short lock.
///
/// ```
/// use switchboard::balance::RetryBudget;
///
/// let budget = RetryBudget::default(); // 20 %, 10 a second, over 10 s
/// for _ in 0..1000 {
///     budget.deposit(); // every original call
/// }
/// let mut retries = 0;
/// while budget.withdraw() {
///     retries += 1; // a retry may be sent
/// }
/// assert_eq!(retries, 200 + 10 * 10);
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    /// `ratio` in millionths, so the check is exact integer arithmetic.
    ratio_ppm: u64,
    /// Retries granted per window regardless of traffic.
    reserve: u64,
    window: Mutex<TimeWindow<Counts>>,
}

impl Default for RetryBudget {
    /// 20 % of the original calls, plus 10 retries a second, over 10 s.
    fn default() -> RetryBudget {
        RetryBudget::new(0.2, 10, Duration::from_secs(10))
    }
}

impl RetryBudget {
    /// A budget letting retries add `ratio` of the original calls (0.2:
    /// 20 %; clamped to 0..=1000), plus `min_per_sec` retries a second,
    /// counted over a sliding `window` (at least 10 ms).
    pub fn new(ratio: f64, min_per_sec: u32, window: Duration) -> RetryBudget {
        let ratio = if ratio.is_nan() { 0.0 } else { ratio.clamp(0.0, 1000.0) };
        let window = window.max(Duration::from_millis(10));
        RetryBudget {
            ratio_ppm: (ratio * 1e6).round() as u64,
            reserve: (f64::from(min_per_sec) * window.as_secs_f64()).round() as u64,
            window: Mutex::new(TimeWindow::new(window)),
        }
    }

    /// Record one original call (not a retry).
    pub fn deposit(&self) {
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let counts = window.current(now);
        counts.deposits = counts.deposits.saturating_add(1);
    }

    /// Whether one retry (or backup request) may be sent now; if so, it is
    /// counted against the budget.
    #[must_use = "a `true` withdrawal is spent whether or not the retry is sent"]
    pub fn withdraw(&self) -> bool {
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (deposits, withdrawals) = window
            .live(now)
            .fold((0u64, 0u64), |(d, w), c| (d.saturating_add(c.deposits), w.saturating_add(c.withdrawals)));
        // withdrawals + 1 <= ratio × deposits + reserve, in millionths.
        let earned = u128::from(deposits) * u128::from(self.ratio_ppm) + u128::from(self.reserve) * 1_000_000;
        if (u128::from(withdrawals) + 1) * 1_000_000 > earned {
            return false;
        }
        window.current(now).withdrawals += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn drain(budget: &RetryBudget) -> usize {
        std::iter::from_fn(|| budget.withdraw().then_some(())).take(100_000).count()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_calls_plus_the_minimum() {
        let budget = RetryBudget::default();
        for _ in 0..1000 {
            budget.deposit();
        }
        // 20 % of 1000, plus 10/s over the 10 s window.
        assert_eq!(drain(&budget), 300);
        assert!(!budget.withdraw());
        // Without the minimum: exactly the ratio.
        let strict = RetryBudget::new(0.2, 0, Duration::from_secs(10));
        for _ in 0..1000 {
            strict.deposit();
        }
        assert_eq!(drain(&strict), 200);
        // Each new call earns a fifth of a retry.
        for _ in 0..4 {
            strict.deposit();
        }
        assert!(!strict.withdraw());
        strict.deposit();
        assert!(strict.withdraw());
        assert!(!strict.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refills_as_old_calls_age_out() {
        let budget = RetryBudget::new(0.2, 0, Duration::from_secs(10));
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(drain(&budget), 20);
        // Halfway through the window, the spent retries still count.
        advance(Duration::from_secs(5)).await;
        for _ in 0..50 {
            budget.deposit();
        }
        assert_eq!(drain(&budget), 10, "150 calls earn 30, of which 20 are spent");
        // A window after the first calls, they (and their retries) are gone.
        advance(Duration::from_secs(5)).await;
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(drain(&budget), 20, "150 calls in the window earn 30, 10 spent");
        advance(Duration::from_secs(5)).await;
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(drain(&budget), 20, "200 calls earn 40, 20 spent");

        // Calls long past earn nothing.
        let old = RetryBudget::new(0.2, 0, Duration::from_secs(10));
        for _ in 0..100 {
            old.deposit();
        }
        advance(Duration::from_secs(10)).await;
        assert!(!old.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_client_may_retry_a_few_times() {
        let budget = RetryBudget::new(0.2, 1, Duration::from_secs(10));
        assert_eq!(drain(&budget), 10, "1 a second over 10 s");
        advance(Duration::from_secs(3)).await;
        assert!(!budget.withdraw(), "still inside the window");
        advance(Duration::from_secs(7)).await;
        assert_eq!(drain(&budget), 10, "the window has passed");
        // No minimum, no calls: no retries.
        assert!(!RetryBudget::new(0.2, 0, Duration::from_secs(10)).withdraw());
    }
}
