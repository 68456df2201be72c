//! The closed loop: every caller sends its next call as soon as the previous
//! one answers, for a warm-up and then a measured window.
//!
//! Counted are the successful calls that *complete* inside the measured
//! window; calls/s is that count divided by the window's length. The first
//! failed call stops every caller and fails the cell with that error. Time is
//! bounded: a caller stops starting calls when the window ends, and if any
//! call is still unanswered `grace` later the cell fails as stalled. No
//! per-call timer is added on the hot path, so every system pays the same
//! (nothing) for the bound.
//!
//! Two drivers with the same rules: [`run_async`] for tokio clients (one task
//! per caller on the current runtime) and [`run_blocking`] for the std-only
//! floor (one OS thread per caller).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use crate::stats::{Latencies, Sample};

/// How long to warm up, measure, and wait for stragglers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    /// How long calls may stay unanswered after the window before the cell
    /// fails as stalled.
    pub(crate) grace: Duration,
}

/// The window of one run, fixed when the callers start.
#[derive(Debug, Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

impl Window {
    fn starting_now(plan: &Plan) -> Window {
        let measure_from = Instant::now() + plan.warmup;
        Window { measure_from, end: measure_from + plan.duration }
    }

    /// One caller's record of the calls that completed in the window.
    fn record(&self, latencies: &mut Latencies, started: Instant, finished: Instant) {
        if finished >= self.measure_from && finished <= self.end {
            latencies.record(finished - started);
        }
    }
}

/// One caller of a system under test with an async client. `call` makes one
/// call and checks the answer.
pub(crate) trait AsyncCaller: Send + 'static {
    fn call(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// One caller with a blocking client.
pub(crate) trait BlockingCaller: Send + 'static {
    fn call(&mut self) -> anyhow::Result<()>;
}

/// The first error any caller hit; setting it stops every caller.
#[derive(Default)]
struct Failure {
    stop: AtomicBool,
    first: Mutex<Option<anyhow::Error>>,
}

impl Failure {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn set(&self, error: anyhow::Error) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut first) = self.first.lock() {
            first.get_or_insert(error);
        }
    }

    fn take(&self) -> Option<anyhow::Error> {
        self.first.lock().ok().and_then(|mut first| first.take())
    }
}

/// Run `callers` as tokio tasks on the current runtime.
pub(crate) async fn run_async<C: AsyncCaller>(callers: Vec<C>, plan: Plan) -> anyhow::Result<Sample> {
    let total = callers.len();
    let failure = Arc::new(Failure::default());
    let window = Window::starting_now(&plan);
    let mut tasks = tokio::task::JoinSet::new();
    for mut caller in callers {
        let failure = Arc::clone(&failure);
        tasks.spawn(async move {
            let mut latencies = Latencies::new();
            while !failure.stopped() {
                let started = Instant::now();
                if started >= window.end {
                    break;
                }
                if let Err(e) = caller.call().await {
                    failure.set(e);
                    break;
                }
                window.record(&mut latencies, started, Instant::now());
            }
            latencies
        });
    }

    let give_up = tokio::time::Instant::from_std(window.end + plan.grace);
    let mut latencies = Latencies::new();
    loop {
        match tokio::time::timeout_at(give_up, tasks.join_next()).await {
            Ok(Some(Ok(part))) => latencies.add(&part),
            Ok(Some(Err(e))) => bail!("a caller task died: {e}"),
            Ok(None) => break,
            Err(_) => {
                let waiting = tasks.len();
                tasks.abort_all();
                return Err(failure.take().unwrap_or_else(|| stalled(waiting, total, plan.grace)));
            }
        }
    }
    match failure.take() {
        Some(e) => Err(e),
        None => Ok(Sample { latencies }),
    }
}

/// Run `callers` on one OS thread each; no async runtime is involved.
///
/// The callers' sockets should have a read timeout (about `plan.grace`) so
/// a stalled thread ends by itself; this function returns at the deadline
/// either way.
pub(crate) fn run_blocking<C: BlockingCaller>(callers: Vec<C>, plan: Plan) -> anyhow::Result<Sample> {
    let total = callers.len();
    let failure = Arc::new(Failure::default());
    let window = Window::starting_now(&plan);
    let (done, results) = mpsc::channel();
    for (i, mut caller) in callers.into_iter().enumerate() {
        let shared = Arc::clone(&failure);
        let done = done.clone();
        let spawned = std::thread::Builder::new().name(format!("caller-{i}")).spawn(move || {
            let mut latencies = Latencies::new();
            while !shared.stopped() {
                let started = Instant::now();
                if started >= window.end {
                    break;
                }
                if let Err(e) = caller.call() {
                    shared.set(e);
                    break;
                }
                window.record(&mut latencies, started, Instant::now());
            }
            // The receiver is gone only if the run was given up already.
            let _ = done.send(latencies);
        });
        if let Err(e) = spawned {
            failure.set(anyhow!("cannot start caller thread {i}: {e}"));
            break;
        }
    }
    drop(done);

    let give_up = window.end + plan.grace;
    let mut latencies = Latencies::new();
    let mut finished = 0;
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok(part) => {
                latencies.add(&part);
                finished += 1;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(failure.take().unwrap_or_else(|| stalled(total - finished, total, plan.grace)));
            }
        }
    }
    match failure.take() {
        Some(e) => Err(e),
        None => Ok(Sample { latencies }),
    }
}

fn stalled(waiting: usize, total: usize, grace: Duration) -> anyhow::Error {
    anyhow!(
        "stalled: {waiting} of {total} callers still had a call unanswered {grace:?} after the measured window ended"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: Plan = Plan {
        warmup: Duration::from_millis(20),
        duration: Duration::from_millis(100),
        grace: Duration::from_millis(300),
    };

    struct Sleeper(Duration);

    impl AsyncCaller for Sleeper {
        async fn call(&mut self) -> anyhow::Result<()> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    impl BlockingCaller for Sleeper {
        fn call(&mut self) -> anyhow::Result<()> {
            std::thread::sleep(self.0);
            Ok(())
        }
    }

    struct FailsThird(u32);

    impl AsyncCaller for FailsThird {
        async fn call(&mut self) -> anyhow::Result<()> {
            self.0 += 1;
            if self.0 == 3 {
                bail!("third call failed");
            }
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_counts_only_the_window() {
        let sample = run_async(vec![Sleeper(Duration::from_millis(10)), Sleeper(Duration::from_millis(10))], PLAN)
            .await
            .expect("runs");
        // 2 callers × 100 ms / 10 ms, not counting the 20 of the warm-up
        // (fewer on a busy machine: sleeps only get longer).
        let calls = sample.latencies.count();
        assert!((4..=22).contains(&calls), "{calls}");
        assert!(sample.latencies.quantile_us(0.5) >= 10_000.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_fails_on_the_first_error() {
        let err = run_async(vec![FailsThird(0), FailsThird(10)], PLAN).await.err().expect("fails");
        assert!(err.to_string().contains("third call failed"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_stall_is_bounded() {
        let started = Instant::now();
        let err = run_async(vec![Sleeper(Duration::from_secs(60))], PLAN).await.err().expect("stalls");
        assert!(err.to_string().contains("stalled: 1 of 1"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn blocking_counts_only_the_window_and_stall_is_bounded() {
        let sample = run_blocking(vec![Sleeper(Duration::from_millis(10))], PLAN).expect("runs");
        let calls = sample.latencies.count();
        assert!((2..=11).contains(&calls), "{calls}");

        let started = Instant::now();
        let err = run_blocking(vec![Sleeper(Duration::from_secs(2))], PLAN).err().expect("stalls");
        assert!(err.to_string().contains("stalled"), "{err}");
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
}
