//! Circuit breakers: [`CircuitBreaker`] (the idea and the why are on the
//! type, which is what rustdoc shows), its [`BreakerConfig`] and [`Permit`].

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::budget::TimeWindow;

/// When a [`CircuitBreaker`] opens and for how long.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Open after this many failures in a row (default 5; 0: never on
    /// consecutive failures alone).
    pub consecutive_failures: u32,
    /// Open when at least this share of the calls in the window failed
    /// (default 0.5; above 1.0: never on the rate).
    pub failure_rate: f64,
    /// The sliding window the failure rate is measured over (default 10 s,
    /// kept in ten buckets of a tenth each).
    pub window: Duration,
    /// Calls the window must hold before the rate counts (default 20), so
    /// two failures out of three calls do not open the breaker.
    pub min_calls: u32,
    /// How long the breaker stays open the first time (default 5 s).
    pub open_for: Duration,
    /// The longest it stays open, as each failed probe doubles the wait
    /// (default 60 s).
    pub max_open_for: Duration,
    /// Probe calls let through at once while half-open (default 1; at
    /// least 1).
    pub half_open_probes: u32,
    /// When every instance a call may use has its circuit open, the call
    /// is not refused outright: it goes as an early probe to one of them
    /// ([`CircuitBreaker::try_acquire_early`]), if that instance has no
    /// probe in flight and opened, or was last probed, at least this long
    /// ago. Bounds
    /// what a channel with nothing else to send to adds to a sick
    /// instance (default 100 ms: at most ten probes a second, one at a
    /// time) and how long it takes to see it recover. `Duration::MAX`:
    /// never, fail shut until `open_for` has passed.
    pub early_probe_interval: Duration,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            min_calls: 20,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            half_open_probes: 1,
            early_probe_interval: Duration::from_millis(100),
        }
    }
}

__setters!(BreakerConfig {
    consecutive_failures: u32,
    failure_rate: f64,
    window: Duration,
    min_calls: u32,
    open_for: Duration,
    max_open_for: Duration,
    half_open_probes: u32,
    early_probe_interval: Duration
});

impl BreakerConfig {
    /// A breaker that never opens (for callers that want every attempt to
    /// reach the instances, say to measure them).
    pub fn disabled() -> BreakerConfig {
        BreakerConfig { consecutive_failures: 0, failure_rate: f64::INFINITY, ..BreakerConfig::default() }
    }
}

/// Where a [`CircuitBreaker`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// No calls: the instance failed too much; waiting before a probe.
    Open,
    /// Waiting for probe calls to say whether the instance recovered.
    HalfOpen,
}

/// A circuit breaker for one instance: stops sending it calls while it keeps failing,
/// and lets a single probe find out when it has recovered.
///
/// A breaker per instance watches the outcome of the calls sent to it.
/// While **closed**, calls flow. It **opens** when the instance looks
/// broken: `consecutive_failures` failures in a row (a dead instance fails
/// fast and often), or a failure rate of at least `failure_rate` over the
/// last `window` once `min_calls` calls were made in it (a sick instance
/// failing, say, two calls in three while successes break up the runs).
/// While **open**, no call goes to the instance: the channel sends them
/// elsewhere, and the instance gets room to recover instead of a queue of
/// calls that will time out anyway. After `open_for` the breaker is
/// **half-open**: it lets `half_open_probes` calls through as probes. A
/// probe that succeeds closes the breaker and forgets the past; one that
/// fails opens it again for twice as long as before (up to
/// `max_open_for`), so an instance that stays down costs one probe a
/// minute, not one every few seconds.
///
/// Callers take a [`Permit`] per call and report through it: `success()`,
/// `failure()` (the instance is at fault: could not connect, connection
/// broke, timed out, overloaded) or `ignore()` (the outcome says nothing
/// about the instance, e.g. an application error or a cancelled call).
/// A permit dropped without a report counts as `ignore()`, so a cancelled
/// probe frees its slot instead of wedging the breaker half-open. Outcomes
/// of calls started before the breaker last changed state are ignored: a
/// slow success from before the breaker opened is no evidence of recovery.
///
/// `Send + Sync`; every method takes a short lock and allocates nothing.
/// Time is tokio's clock, so tests can pause and advance it. Transitions
/// are logged with `tracing` under the target `switchboard::breaker`, with
/// the name given to [`CircuitBreaker::with_name`] (usually the instance's
/// address) as the field `breaker`.
///
/// ```
/// use switchboard::balance::{BreakerConfig, BreakerState, CircuitBreaker};
///
/// let breaker = CircuitBreaker::new(BreakerConfig::default());
/// for _ in 0..5 {
///     if let Some(permit) = breaker.try_acquire() {
///         // ... the call failed in a way that blames the instance:
///         permit.failure();
///     }
/// }
/// assert_eq!(breaker.state(), BreakerState::Open);
/// assert!(breaker.try_acquire().is_none());
/// ```
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

struct Shared {
    config: BreakerConfig,
    name: String,
    inner: Mutex<Inner>,
}

struct Inner {
    phase: Phase,
    /// Bumped on every transition; permits from another generation are
    /// ignored.
    generation: u64,
    consecutive: u32,
    window: TimeWindow<Counts>,
    /// How long the next opening lasts.
    backoff: Duration,
    /// When the breaker last learned something about the instance: it
    /// opened, or let a probe (on time or early) through.
    last_probe: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probes: u32 },
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    calls: u32,
    failures: u32,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.name)
            .field("state", &self.state())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker; its log lines carry no name.
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker::with_name(config, "")
    }

    /// A closed breaker whose log lines name it `name` (say, the instance's
    /// address).
    pub fn with_name(config: BreakerConfig, name: impl Into<String>) -> CircuitBreaker {
        let inner = Inner {
            phase: Phase::Closed,
            generation: 0,
            consecutive: 0,
            window: TimeWindow::new(config.window),
            backoff: config.open_for,
            last_probe: None,
        };
        CircuitBreaker { shared: Arc::new(Shared { config, name: name.into(), inner: Mutex::new(inner) }) }
    }

    /// Where it stands now (an open breaker whose wait is over reads as
    /// half-open).
    pub fn state(&self) -> BreakerState {
        match self.shared.lock(Instant::now()).phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call could be sent now: closed, or half-open with a probe
    /// slot free. Takes nothing; for filtering candidates before a pick.
    pub fn available(&self) -> bool {
        let inner = self.shared.lock(Instant::now());
        match inner.phase {
            Phase::Closed => true,
            Phase::Open { .. } => false,
            Phase::HalfOpen { probes } => probes < self.shared.probes(),
        }
    }

    /// Take a slot for one call (while half-open, a probe slot); `None` if
    /// no call may go now. Report the outcome through the permit.
    #[must_use = "a permit is how the call's outcome reaches the breaker"]
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut inner = self.shared.lock(Instant::now());
        match inner.phase {
            Phase::Closed => {}
            Phase::Open { .. } => return None,
            Phase::HalfOpen { ref mut probes } => {
                if *probes >= self.shared.probes() {
                    return None;
                }
                *probes += 1;
                inner.last_probe = Some(Instant::now());
            }
        }
        Some(Permit { shared: Arc::clone(&self.shared), generation: inner.generation, done: false })
    }

    /// [`try_acquire`](Self::try_acquire), but an open breaker lets a probe
    /// through before its `open_for` is over, if its opening and its last
    /// probe are at least
    /// [`early_probe_interval`](BreakerConfig::early_probe_interval) old:
    /// it turns half-open now, and the probe's outcome closes it or opens
    /// it again as an on-time probe's would. For a caller with no other
    /// instance to send to, so that breakers alone never refuse every call
    /// (Envoy's panic threshold serves the same end).
    #[must_use = "a permit is how the call's outcome reaches the breaker"]
    pub fn try_acquire_early(&self) -> Option<Permit> {
        let now = Instant::now();
        let mut inner = self.shared.lock(now);
        if let Phase::Open { .. } = inner.phase {
            let due = match inner.last_probe {
                None => true,
                Some(at) => now.saturating_duration_since(at) >= self.shared.config.early_probe_interval,
            };
            if !due {
                return None;
            }
            self.shared.enter(&mut inner, Phase::HalfOpen { probes: 0 });
            tracing::debug!(target: "switchboard::breaker", breaker = %self.shared.name, "half-open early: every circuit is open");
        }
        drop(inner);
        self.try_acquire()
    }
}

impl Shared {
    fn probes(&self) -> u32 {
        self.config.half_open_probes.max(1)
    }

    /// The state, with an open breaker whose wait is over turned half-open.
    fn lock(&self, now: Instant) -> MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Phase::Open { until } = inner.phase {
            if now >= until {
                self.enter(&mut inner, Phase::HalfOpen { probes: 0 });
                tracing::debug!(target: "switchboard::breaker", breaker = %self.name, "half-open: letting a probe through");
            }
        }
        inner
    }

    fn enter(&self, inner: &mut Inner, phase: Phase) {
        inner.phase = phase;
        inner.generation += 1;
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        let wait = inner.backoff;
        self.enter(inner, Phase::Open { until: now + wait });
        inner.last_probe = Some(now);
        inner.backoff = (wait * 2).min(self.config.max_open_for.max(self.config.open_for));
    }

    fn close(&self, inner: &mut Inner) {
        self.enter(inner, Phase::Closed);
        inner.consecutive = 0;
        inner.window.clear();
        inner.backoff = self.config.open_for;
    }

    /// A permit's outcome: `Some(true)` success, `Some(false)` failure,
    /// `None` ignored.
    fn finish(&self, generation: u64, outcome: Option<bool>) {
        let now = Instant::now();
        let mut inner = self.lock(now);
        if generation != inner.generation {
            return;
        }
        match (inner.phase, outcome) {
            (Phase::Closed, Some(true)) => {
                inner.consecutive = 0;
                inner.window.current(now).calls += 1;
            }
            (Phase::Closed, Some(false)) => {
                inner.consecutive += 1;
                let bucket = inner.window.current(now);
                bucket.calls += 1;
                bucket.failures += 1;
                let (calls, failures) =
                    inner.window.live(now).fold((0u32, 0u32), |(c, f), b| (c + b.calls, f + b.failures));
                let c = &self.config;
                let in_a_row = c.consecutive_failures > 0 && inner.consecutive >= c.consecutive_failures;
                let rate = calls >= c.min_calls.max(1) && f64::from(failures) >= c.failure_rate * f64::from(calls);
                if in_a_row || rate {
                    let wait = inner.backoff;
                    self.open(&mut inner, now);
                    tracing::warn!(
                        target: "switchboard::breaker",
                        breaker = %self.name,
                        consecutive = inner.consecutive,
                        failures,
                        calls,
                        ?wait,
                        "open: too many failures"
                    );
                }
            }
            (Phase::HalfOpen { .. }, Some(true)) => {
                self.close(&mut inner);
                tracing::info!(target: "switchboard::breaker", breaker = %self.name, "closed: the probe succeeded");
            }
            (Phase::HalfOpen { .. }, Some(false)) => {
                let wait = inner.backoff;
                self.open(&mut inner, now);
                tracing::info!(target: "switchboard::breaker", breaker = %self.name, ?wait, "open again: the probe failed");
            }
            (Phase::HalfOpen { .. }, None) => {
                if let Phase::HalfOpen { probes } = &mut inner.phase {
                    *probes = probes.saturating_sub(1);
                }
            }
            (Phase::Closed, None) | (Phase::Open { .. }, _) => {}
        }
    }
}

/// Leave to send one call through a [`CircuitBreaker`]; report how it went.
/// Dropping it unreported is [`Permit::ignore`].
#[must_use = "report the outcome with success(), failure() or ignore()"]
pub struct Permit {
    shared: Arc<Shared>,
    generation: u64,
    done: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("breaker", &self.shared.name).field("generation", &self.generation).finish()
    }
}

impl Permit {
    /// The call succeeded (a probe's success closes the breaker).
    pub fn success(mut self) {
        self.report(Some(true));
    }

    /// The call failed through the instance's fault (a probe's failure
    /// opens the breaker again, for longer).
    pub fn failure(mut self) {
        self.report(Some(false));
    }

    /// The outcome says nothing about the instance's health (an
    /// application error, a cancelled call): count nothing, free the slot.
    pub fn ignore(mut self) {
        self.report(None);
    }

    fn report(&mut self, outcome: Option<bool>) {
        if !self.done {
            self.done = true;
            self.shared.finish(self.generation, outcome);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.report(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn fail(b: &CircuitBreaker, n: usize) {
        for _ in 0..n {
            b.try_acquire().expect("a permit").failure();
        }
    }

    fn succeed(b: &CircuitBreaker, n: usize) {
        for _ in 0..n {
            b.try_acquire().expect("a permit").success();
        }
    }

    /// Opened by five failures in a row, with the default config.
    fn opened() -> CircuitBreaker {
        let b = CircuitBreaker::new(BreakerConfig::default());
        fail(&b, 5);
        assert_eq!(b.state(), BreakerState::Open);
        b
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_consecutive_failures() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        fail(&b, 4);
        succeed(&b, 1);
        fail(&b, 4);
        assert_eq!(b.state(), BreakerState::Closed, "a success breaks the run");
        assert!(b.available());
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.available());
        assert!(b.try_acquire().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_failure_rate_once_enough_calls_were_made() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        // Two failures in three: never five in a row.
        for i in 0..19 {
            let p = b.try_acquire().expect("closed");
            if i % 3 == 2 {
                p.success();
            } else {
                p.failure();
            }
        }
        assert_eq!(b.state(), BreakerState::Closed, "13 of 19 failed, but fewer than min_calls");
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open, "14 of 20");

        // Two failures in five stays closed however long it goes on.
        let b = CircuitBreaker::new(BreakerConfig::default());
        for i in 0..200 {
            let p = b.try_acquire().expect("closed");
            if i % 5 < 2 {
                p.failure();
            } else {
                p.success();
            }
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // Ignored outcomes are not calls.
        for _ in 0..50 {
            b.try_acquire().expect("closed").ignore();
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// 8 failures and 8 successes alternating (fewer once it opens): half
    /// failed, below min_calls.
    fn half_failed(b: &CircuitBreaker) {
        for i in 0..16 {
            match b.try_acquire() {
                Some(p) if i % 2 == 0 => p.failure(),
                Some(p) => p.success(),
                None => return,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_age_out_of_the_window() {
        let aged = CircuitBreaker::new(BreakerConfig::default());
        let recent = CircuitBreaker::new(BreakerConfig::default());
        half_failed(&aged);
        half_failed(&recent);
        advance(Duration::from_secs(5)).await;
        half_failed(&recent);
        assert_eq!(recent.state(), BreakerState::Open, "32 calls in 10 s, half failed");
        advance(Duration::from_secs(6)).await;
        half_failed(&aged);
        assert_eq!(aged.state(), BreakerState::Closed, "the first 16 calls left the window");
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_one_probe_at_a_time_and_a_success_closes() {
        let b = opened();
        advance(Duration::from_millis(4_999)).await;
        assert_eq!(b.state(), BreakerState::Open);
        advance(Duration::from_millis(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.available());
        let probe = b.try_acquire().expect("a probe");
        assert!(!b.available(), "the only probe slot is taken");
        assert!(b.try_acquire().is_none());
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        // Closed resets the counts: four more failures do not reopen it.
        fail(&b, 4);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() {
        let b = opened();
        let mut waits = Vec::new();
        let mut wait = Duration::from_secs(5);
        for _ in 0..6 {
            advance(wait - Duration::from_millis(1)).await;
            assert_eq!(b.state(), BreakerState::Open, "{waits:?}");
            advance(Duration::from_millis(1)).await;
            assert_eq!(b.state(), BreakerState::HalfOpen, "{waits:?}");
            waits.push(wait.as_secs());
            b.try_acquire().expect("a probe").failure();
            assert_eq!(b.state(), BreakerState::Open);
            wait = (wait * 2).min(Duration::from_secs(60));
        }
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        advance(Duration::from_secs(60)).await;
        b.try_acquire().expect("a probe").success();
        // Closing resets the backoff: the next opening lasts 5 s again.
        fail(&b, 5);
        advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreported_probe_frees_its_slot() {
        let b = opened();
        advance(Duration::from_secs(5)).await;
        drop(b.try_acquire().expect("a probe"));
        assert!(b.available());
        b.try_acquire().expect("the slot is free again").ignore();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.try_acquire().expect("and again").success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_from_before_a_transition_are_ignored() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        let slow = b.try_acquire().expect("closed");
        fail(&b, 5);
        advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A call sent before the breaker opened proves nothing now.
        slow.success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.available(), "nor does it take or free a probe slot");
    }

    #[tokio::test(start_paused = true)]
    async fn several_probes_when_configured() {
        let config = BreakerConfig { half_open_probes: 2, ..BreakerConfig::default() };
        let b = CircuitBreaker::new(config);
        fail(&b, 5);
        advance(Duration::from_secs(5)).await;
        let (p1, p2) = (b.try_acquire().expect("probe 1"), b.try_acquire().expect("probe 2"));
        assert!(b.try_acquire().is_none());
        p1.failure();
        assert_eq!(b.state(), BreakerState::Open);
        p2.success();
        assert_eq!(b.state(), BreakerState::Open, "an answer after the breaker reopened counts for nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_lets_early_probes_through_at_the_early_probe_interval() {
        let config = BreakerConfig::default()
            .consecutive_failures(1)
            .open_for(Duration::from_secs(60))
            .early_probe_interval(Duration::from_millis(100));
        let b = CircuitBreaker::new(config);
        b.try_acquire().expect("closed").failure();
        assert_eq!(b.state(), BreakerState::Open);
        // Not at once after the opening, and never by the on-time path.
        assert!(b.try_acquire_early().is_none());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(b.try_acquire().is_none(), "open_for is not over");
        let probe = b.try_acquire_early().expect("an early probe after the interval");
        // One at a time.
        assert!(b.try_acquire_early().is_none(), "the probe slot is taken");
        probe.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire_early().is_none(), "the interval counts from the failed probe");
        tokio::time::advance(Duration::from_millis(100)).await;
        b.try_acquire_early().expect("the next early probe").success();
        assert_eq!(b.state(), BreakerState::Closed, "an early probe's success closes it");
        // Duration::MAX turns early probes off.
        let shut =
            CircuitBreaker::new(BreakerConfig::default().consecutive_failures(1).early_probe_interval(Duration::MAX));
        shut.try_acquire().expect("closed").failure();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(shut.try_acquire_early().is_none());
    }
}
