//! Fail modes, retries, budgets, deadlines and circuit breakers of a
//! `Balanced` channel, against real servers on loopback ports (killed
//! abruptly where the test needs an instance to die).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, Node};
use switchboard::backoff::Backoff;
use switchboard::balance::{
    BackupDelay, Balanced, BreakerConfig, BreakerState, CallOptionsExt, FailMode, RetryPolicy, RoundRobin,
};
use switchboard::discovery::Static;
use switchboard::Channel;
use switchboard::{CallOptions, Error};

fn source(nodes: &[&Node]) -> Arc<Static> {
    Arc::new(Static::new(nodes.iter().map(|n| n.addr.clone())))
}

fn idempotent() -> CallOptions {
    CallOptions::new().idempotent(true)
}

/// The longest a test waits for something it expects to happen.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_load_costs_no_idempotent_call() {
    let (a, mut b, c) = (Node::start(), Node::start(), Node::start());
    for n in [&a, &b, &c] {
        n.behaviour.delay_ms.store(2, Ordering::Relaxed);
    }
    let balanced = Balanced::builder("Node", source(&[&a, &b, &c])).timeout(Some(Duration::from_secs(5))).build();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU32::new(0));
    let ok = Arc::new(AtomicU32::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (balanced, failed, ok, stop) = (balanced.clone(), failed.clone(), ok.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 5_000 {
                    n += 1;
                    match balanced.call_with::<_, String>("Node.Slow", &(), &idempotent()).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    // Mid load: b has served its share when it dies, and the load goes on
    // until a and c have served a thousand calls more.
    wait_until("b to serve 100 calls of the load", WAIT, || b.hits() >= 100).await;
    let before = b.hits();
    b.kill();
    let others = a.hits() + c.hits();
    wait_until("a and c to serve 1,000 calls after b died", WAIT, || a.hits() + c.hits() >= others + 1_000).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let stats = balanced.call_stats();
    eprintln!("ok {} failed {} {stats:?}", ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{stats:?}");
    assert!(before > 50, "b took its share before the kill ({before})");
    assert!(ok.load(Ordering::Relaxed) > 500);
    assert!(stats.retries + stats.transparent >= 1, "the calls in flight on b were retried elsewhere: {stats:?}");
    let b_stats = balanced.stats().into_iter().find(|s| s.instance.address == b.addr).expect("b listed");
    assert!(!b_stats.in_rotation, "a dead instance is out of rotation: {b_stats:?}");
}

#[tokio::test]
async fn a_call_in_flight_on_a_dying_instance_is_retried_only_if_idempotent() {
    for idempotent in [false, true] {
        let mut nodes = vec![Node::start(), Node::start()];
        for n in &nodes {
            n.behaviour.delay_ms.store(400, Ordering::Relaxed);
        }
        let balanced = Balanced::builder("Node", source(&[&nodes[0], &nodes[1]])).build();
        let call = {
            let balanced = balanced.clone();
            let opts = CallOptions::new().idempotent(idempotent);
            tokio::spawn(async move { balanced.call_with::<_, String>("Node.Slow", &(), &opts).await })
        };
        // Kill whichever instance took the call, while its handler runs.
        wait_until("the call to reach an instance", WAIT, || nodes.iter().any(|n| n.hits() == 1)).await;
        let took = nodes.iter().position(|n| n.hits() == 1).expect("an instance took the call");
        nodes[took].kill();
        let result = call.await.expect("join");
        let other = &nodes[1 - took];
        if idempotent {
            assert_eq!(result.expect("retried on the other instance"), other.addr);
            assert_eq!(other.hits(), 1);
        } else {
            let err = result.expect_err("not retried");
            assert!(matches!(err, Error::ConnectionLost { .. }), "{err:?}");
            assert_eq!(other.hits(), 0, "a non-idempotent call that may have run is not sent again");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_requests_cut_the_tail_when_one_instance_is_slow() {
    let (fast, slow) = (Node::start(), Node::start());
    fast.behaviour.delay_ms.store(1, Ordering::Relaxed);
    slow.behaviour.delay_ms.store(300, Ordering::Relaxed);
    let slowest = |mode: FailMode, opts: CallOptions| {
        // Round robin: half the calls start on the slow instance (the
        // default balancer would learn to avoid it, hiding what is tested).
        let balanced =
            Balanced::builder("Node", source(&[&fast, &slow])).balancer(RoundRobin::new()).fail_mode(mode).build();
        async move {
            let mut worst = Duration::ZERO;
            for _ in 0..4 {
                let calls: Vec<_> = (0..10)
                    .map(|_| {
                        let (balanced, opts) = (balanced.clone(), opts.clone());
                        tokio::spawn(async move {
                            let began = Instant::now();
                            balanced.call_with::<_, String>("Node.Slow", &(), &opts).await.expect("call");
                            began.elapsed()
                        })
                    })
                    .collect();
                for c in calls {
                    worst = worst.max(c.await.expect("join"));
                }
            }
            (worst, balanced.call_stats())
        }
    };
    let (without, _) = slowest(FailMode::failover(3), idempotent()).await;
    assert!(without >= Duration::from_millis(300), "half the calls wait for the slow instance: {without:?}");
    let hedge = FailMode::Backup { delay: BackupDelay::Fixed(Duration::from_millis(20)), attempts: 3 };
    let (with, stats) = slowest(hedge, idempotent()).await;
    eprintln!("slowest without backup {without:?}, with {with:?}; {stats:?}");
    assert!(with < Duration::from_millis(200), "backup requests answer from the fast instance: {with:?}");
    assert!(stats.backups >= 10 && stats.backup_wins >= 10, "{stats:?}");
    // Not for calls that are not idempotent: a copy could run twice.
    let (plain, stats) = slowest(hedge, CallOptions::new()).await;
    assert!(plain >= Duration::from_millis(300));
    assert_eq!(stats.backups, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_the_extra_load() {
    let (a, b) = (Node::start(), Node::start());
    let quick = RetryPolicy::default()
        .backoff(
            Backoff::default()
                .initial(Duration::from_millis(1))
                .max(Duration::from_millis(2))
                .multiplier(2.0)
                .jitter(0.0),
        )
        .budget_ratio(0.2)
        .budget_min_per_sec(1);
    let run = |policy: RetryPolicy| {
        // Every instance fails every call: with breakers they would open and
        // take the load off; off here, so only the budget limits retries.
        let balanced = Balanced::builder("Node", source(&[&a, &b]))
            .retry_policy(policy)
            .breaker(BreakerConfig::disabled())
            .build();
        async move {
            let calls: Vec<_> = (0..20)
                .map(|_| {
                    let balanced = balanced.clone();
                    tokio::spawn(async move {
                        for _ in 0..15 {
                            let err = balanced.call_with::<_, ()>("Node.Flaky", &(), &idempotent()).await;
                            assert!(err.is_err());
                        }
                    })
                })
                .collect();
            for c in calls {
                c.await.expect("join");
            }
            balanced.call_stats()
        }
    };
    let hits = || a.hits() + b.hits();
    // Without a real budget every call tries both instances: 2 × 300.
    let unlimited = run(quick.budget_ratio(100.0)).await;
    assert_eq!(hits(), 600, "{unlimited:?}");
    let before = hits();
    let stats = run(quick).await;
    let sent = hits() - before;
    eprintln!("with a 20% budget: {sent} attempts for 300 calls; {stats:?}");
    // 300 calls, 20% of them, and the reserve of 1/s over the 10 s window.
    assert!(sent <= 300 + 60 + 10 + 2, "retries added more than the budget allows: {sent}");
    assert!(sent > 300, "some retries were allowed: {sent}");
    assert!(stats.budget_exhausted > 0, "{stats:?}");
}

#[tokio::test]
async fn one_deadline_covers_every_attempt() {
    let nodes = [Node::start(), Node::start(), Node::start()];
    for n in &nodes {
        n.behaviour.delay_ms.store(150, Ordering::Relaxed);
    }
    let balanced = Balanced::builder("Node", source(&[&nodes[0], &nodes[1], &nodes[2]]))
        .fail_mode(FailMode::failover(5))
        .timeout(Some(Duration::from_millis(400)))
        .build();
    let began = Instant::now();
    let err = balanced.call_with::<_, ()>("Node.Flaky", &(), &idempotent()).await.expect_err("fails");
    let took = began.elapsed();
    assert!(
        matches!(err, Error::DeadlineExceeded(_) | Error::Status(_)),
        "the deadline, or the last error when no time was left for another try: {err:?}"
    );
    assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(600), "{took:?}");
    let sent: u32 = nodes.iter().map(Node::hits).sum();
    assert!((2..=3).contains(&sent), "five attempts were allowed but only the deadline's worth were made: {sent}");
}

#[tokio::test]
async fn fail_try_repeats_on_the_same_instance_and_fail_fast_does_not_repeat() {
    let (a, b) = (Node::start(), Node::start());
    let balanced = Balanced::builder("Node", source(&[&a, &b])).fail_mode(FailMode::FailTry { attempts: 3 }).build();
    balanced.call_with::<_, ()>("Node.Flaky", &(), &idempotent()).await.expect_err("fails");
    let (ha, hb) = (a.hits(), b.hits());
    assert!((ha, hb) == (3, 0) || (ha, hb) == (0, 3), "all three attempts on one instance: {ha} {hb}");
    let opts = idempotent().fail_mode(FailMode::FailFast);
    balanced.call_with::<_, ()>("Node.Flaky", &(), &opts).await.expect_err("fails");
    assert_eq!(a.hits() + b.hits(), 4, "per-call fail fast: one attempt");
}

#[tokio::test]
async fn a_sick_instance_trips_its_breaker_then_recovers() {
    let (sick, well) = (Node::start(), Node::start());
    sick.behaviour.sick.store(true, Ordering::Relaxed);
    // Open for long enough that no machine is slow enough to reach the end
    // of it during the 40 calls below; the test jumps over it instead.
    let open_for = Duration::from_secs(30);
    let breaker = BreakerConfig::default().consecutive_failures(3).open_for(open_for);
    let balanced =
        Balanced::builder("Node", source(&[&sick, &well])).balancer(RoundRobin::new()).breaker(breaker).build();
    let mut errors = 0;
    // Tokio's clock, the breaker's: it opens between these two instants.
    let began = tokio::time::Instant::now();
    for _ in 0..40 {
        // Not idempotent: the Internal errors reach the caller.
        if balanced.call::<_, String>("Node.Sick", &()).await.is_err() {
            errors += 1;
        }
    }
    let ended = tokio::time::Instant::now();
    assert_eq!(errors, 3, "after 3 failures in a row the sick instance gets no more calls");
    assert_eq!(sick.hits(), 3);
    let state = |addr: &str| balanced.stats().into_iter().find(|s| s.instance.address == addr).expect("listed").breaker;
    assert_eq!(state(&sick.addr), BreakerState::Open);

    // It recovers; after the open period one probe goes through and closes it.
    sick.behaviour.sick.store(false, Ordering::Relaxed);
    // The open period passes on a paused clock: the breaker reads Tokio's
    // clock, so advancing it is exactly `open_for` passing, with no guess at
    // a margin and no wait. Paused only here, where no call is in flight and
    // nothing waits on a socket: with time paused an idle runtime jumps to
    // its next timer, and a call waiting for the server's answer would see
    // its deadline fire (the nodes' own runtimes keep real time). `advance`
    // only yields once, so nothing idles before `resume`.
    let advance_to =
        |at: tokio::time::Instant| tokio::time::advance(at.saturating_duration_since(tokio::time::Instant::now()));
    tokio::time::pause();
    advance_to(began + open_for - Duration::from_millis(1)).await;
    assert_eq!(state(&sick.addr), BreakerState::Open, "open until open_for has passed");
    advance_to(ended + open_for).await;
    assert_eq!(state(&sick.addr), BreakerState::HalfOpen, "half-open once open_for has passed");
    tokio::time::resume();
    for _ in 0..10 {
        balanced.call::<_, String>("Node.Sick", &()).await.expect("both healthy");
    }
    assert_eq!(state(&sick.addr), BreakerState::Closed);
    assert!(sick.hits() >= 3 + 4, "back in the rotation: {}", sick.hits());
}
