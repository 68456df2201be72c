//! `Balanced` over real servers on loopback ports: round-robin, failover
//! from an address nobody listens on, and which failures are retried.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard::balance::{Balanced, CallOptionsExt};
use switchboard::discovery::Static;
use switchboard::server::handler_fn;
use switchboard::Channel;
use switchboard::{CallOptions, Error, Server, Status};

/// A server answering `Node.Where` with its own address and `Node.Flaky`
/// with Unavailable (counting the attempts it saw).
async fn node(flaky_attempts: Arc<AtomicU32>) -> (Server, String) {
    let server = Server::builder().build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let me = addr.clone();
    let router = server.router();
    router.add_method("Node.Where", handler_fn(move |(): ()| std::future::ready(Ok::<_, Status>(me.clone())))).unwrap();
    router
        .add_method(
            "Node.Flaky",
            handler_fn(move |(): ()| {
                flaky_attempts.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Err::<(), _>(Status::unavailable("overloaded")))
            }),
        )
        .unwrap();
    tokio::spawn(server.clone().serve(listener));
    (server, addr)
}

/// An address with nothing listening (bound, then released).
fn dead_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

#[tokio::test]
async fn round_robin_spreads_evenly_and_skips_a_dead_instance() {
    let attempts = Arc::new(AtomicU32::new(0));
    let (a, addr_a) = node(attempts.clone()).await;
    let (b, addr_b) = node(attempts.clone()).await;
    let dead = dead_address();
    let balanced = Balanced::builder("Node", Arc::new(Static::new([addr_a.clone(), dead.clone(), addr_b.clone()])))
        .balancer(RoundRobin::new())
        .timeout(Some(Duration::from_secs(5)))
        .build();

    let mut served = std::collections::HashMap::<String, u32>::new();
    for _ in 0..300 {
        // Not idempotent: a refused connection is still safe to retry elsewhere.
        let at: String = balanced.call("Node.Where", &()).await.expect("every call succeeds");
        *served.entry(at).or_default() += 1;
    }
    assert_eq!(served.len(), 2, "{served:?}");
    for addr in [&addr_a, &addr_b] {
        let n = served[addr];
        assert!((140..=160).contains(&n), "uneven share {served:?}");
    }
    let stats = balanced.stats();
    let dead_stats = stats.iter().find(|s| s.instance.address == dead).expect("listed");
    assert_eq!(dead_stats.answered, 0);
    assert!(dead_stats.failed >= 1 && dead_stats.failed <= 3, "ejected after a failure: {stats:?}");

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn application_unavailable_is_retried_elsewhere_only_when_idempotent() {
    let attempts = Arc::new(AtomicU32::new(0));
    let (a, addr_a) = node(attempts.clone()).await;
    let (b, addr_b) = node(attempts.clone()).await;
    let balanced = Balanced::builder("Node", Arc::new(Static::new([addr_a, addr_b]))).max_attempts(3).build();

    let err = balanced.call::<_, ()>("Node.Flaky", &()).await.expect_err("unavailable");
    assert!(matches!(&err, Error::Status(s) if s.message() == "overloaded"), "{err}");
    assert_eq!(attempts.swap(0, Ordering::Relaxed), 1, "a non-idempotent call is sent once");

    let opts = CallOptions::new().idempotent(true);
    let err = balanced.call_with::<_, ()>("Node.Flaky", &(), &opts).await.expect_err("unavailable");
    assert!(matches!(&err, Error::Status(_)), "{err}");
    assert_eq!(attempts.load(Ordering::Relaxed), 2, "an idempotent call tries each instance once");

    a.shutdown().await;
    b.shutdown().await;
}

mod common;

use common::{instance, wait_until, Manual, Node};
use switchboard::balance::{RoundRobin, Rule, Selector};
use switchboard::discovery::Change;

/// Calls `n` times and counts the answers per address.
async fn spread(balanced: &Balanced, n: usize, opts: &CallOptions) -> std::collections::HashMap<String, usize> {
    let mut served = std::collections::HashMap::new();
    for _ in 0..n {
        let at: String = balanced.call_with("Node.Where", &(), opts).await.expect("call");
        *served.entry(at).or_default() += 1;
    }
    served
}

#[tokio::test]
async fn gray_release_sends_the_set_share_to_version_2() {
    let (a, b, c) = (Node::start(), Node::start(), Node::start());
    let source = Arc::new(Static::from_instances(vec![
        instance(&a.addr, "1", ""),
        instance(&b.addr, "1", ""),
        instance(&c.addr, "2", ""),
    ]));
    let balanced = Balanced::builder("Node", source)
        .balancer(RoundRobin::new())
        .route(Rule::Share { to: Selector::version("2"), share: 0.1 })
        .build();
    let served = spread(&balanced, 2_000, &CallOptions::new()).await;
    let v2 = served.get(&c.addr).copied().unwrap_or(0);
    // Binomial(2000, 0.1): mean 200, sd 13.4; ±5 sd.
    assert!((133..=267).contains(&v2), "version 2 took {v2} of 2,000 calls: {served:?}");
    let (va, vb) = (served[&a.addr], served[&b.addr]);
    assert!(va.abs_diff(vb) < 200, "the rest spread over version 1: {served:?}");
}

#[tokio::test]
async fn only_calls_carrying_the_canary_key_reach_the_canary() {
    let (stable, canary) = (Node::start(), Node::start());
    let source =
        Arc::new(Static::from_instances(vec![instance(&stable.addr, "1", ""), instance(&canary.addr, "2", "")]));
    let balanced = Balanced::builder("Node", source)
        .route(Rule::Match { key: "x-canary".into(), value: Some("1".into()), to: Selector::version("2") })
        .route(Rule::Share { to: Selector::version("2"), share: 0.0 })
        .build();
    let plain = spread(&balanced, 100, &CallOptions::new()).await;
    assert_eq!(plain.get(&stable.addr), Some(&100), "{plain:?}");
    let marked = spread(&balanced, 100, &CallOptions::new().metadata("x-canary", "1")).await;
    assert_eq!(marked.get(&canary.addr), Some(&100), "{marked:?}");
}

#[tokio::test]
async fn zone_preference_keeps_calls_local_until_the_zone_has_none() {
    let (mut local, remote) = (Node::start(), Node::start());
    let source =
        Arc::new(Static::from_instances(vec![instance(&local.addr, "1", "z1"), instance(&remote.addr, "1", "z2")]));
    let balanced = Balanced::builder("Node", source).zone("z1").build();
    assert_eq!(spread(&balanced, 50, &CallOptions::new().idempotent(true)).await.get(&local.addr), Some(&50));
    local.kill();
    // The local instance is gone: calls fail over to the other zone (the
    // first may have been sent on the dead connection before its close was
    // seen: only an idempotent call may be repeated then).
    assert_eq!(spread(&balanced, 50, &CallOptions::new().idempotent(true)).await.get(&remote.addr), Some(&50));
}

#[tokio::test]
async fn an_ejected_instance_returns_once_a_reconnect_succeeds() {
    let (mut a, b) = (Node::start(), Node::start());
    let balanced = Balanced::builder("Node", Arc::new(Static::new([a.addr.clone(), b.addr.clone()])))
        .balancer(RoundRobin::new())
        .build();
    spread(&balanced, 10, &CallOptions::new().idempotent(true)).await;
    let behaviour = a.behaviour.clone();
    let addr = a.addr.clone();
    a.kill();
    // Idempotent: a call sent as the connection died may be repeated.
    spread(&balanced, 10, &CallOptions::new().idempotent(true)).await;
    let in_rotation = |b: &Balanced| b.stats().into_iter().find(|s| s.instance.address == addr).expect("a").in_rotation;
    assert!(!in_rotation(&balanced), "out of rotation after its connection failed");
    // While it is out, calls go elsewhere without failed attempts on it.
    let failed_before = balanced.stats().into_iter().find(|s| s.instance.address == addr).expect("a").failed;
    spread(&balanced, 50, &CallOptions::new().idempotent(true)).await;
    let failed_after = balanced.stats().into_iter().find(|s| s.instance.address == addr).expect("a").failed;
    assert_eq!(failed_before, failed_after, "no call was sent to the ejected instance");
    // It comes back on the same address: the probe reconnects within the
    // client's backoff and puts it back.
    let _a = Node::start_on(&addr, behaviour).expect("rebind the same port");
    wait_until("the instance to come back into rotation", Duration::from_secs(10), || in_rotation(&balanced)).await;
    let served = spread(&balanced, 20, &CallOptions::new().idempotent(true)).await;
    assert_eq!(served.get(&addr), Some(&10), "{served:?}");
}

#[tokio::test]
async fn consistent_hashing_keeps_a_key_on_one_instance() {
    let nodes = [Node::start(), Node::start(), Node::start()];
    let balanced = Balanced::builder("Node", Arc::new(Static::new(nodes.iter().map(|n| n.addr.clone()))))
        .balancer(switchboard::balance::ConsistentHash::new())
        .build();
    let mut owners = std::collections::HashSet::new();
    for user in 0..30 {
        let opts = CallOptions::new().key(format!("user-{user}"));
        let served = spread(&balanced, 5, &opts).await;
        assert_eq!(served.len(), 1, "user-{user} moved: {served:?}");
        owners.extend(served.into_keys());
    }
    assert_eq!(owners.len(), 3, "keys spread over every instance");
}

/// A TCP relay in front of `target` that counts its open connections, to
/// see connections close from outside the client.
async fn counting_relay(target: String) -> (String, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let open = Arc::new(AtomicU32::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { continue };
            let count = count.clone();
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                count.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    (addr, open)
}

#[tokio::test]
async fn connections_open_lazily_and_close_when_the_instance_leaves() {
    let node = Node::start();
    let (relay, open) = counting_relay(node.addr.clone()).await;
    let manual = Arc::new(Manual::default());
    let balanced = Balanced::builder("Node", manual.clone()).connections_per_instance(2).build();
    manual.send(vec![Change::Added(switchboard::discovery::Instance::new(relay.clone()))]).await;
    assert_eq!(balanced.ready(Duration::from_secs(5)).await, 1);
    // Not a wait for an event: the absence of one. An eager channel would
    // connect on the `Added` just applied; give it 50 ms to show.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(open.load(Ordering::Relaxed), 0, "no connection before the first call");
    spread(&balanced, 10, &CallOptions::new()).await;
    assert_eq!(open.load(Ordering::Relaxed), 2, "two connections per instance, as configured");
    manual.send(vec![Change::Removed(relay.clone())]).await;
    wait_until("the connections to close after the instance left", Duration::from_secs(5), || {
        open.load(Ordering::Relaxed) == 0
    })
    .await;
    assert!(balanced.stats().iter().all(|s| !s.listed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_balancer_steers_away_from_a_slow_instance() {
    let (fast, slow) = (Node::start(), Node::start());
    // Slow by far more than a loaded machine adds to the fast one: with four
    // calls in flight the fourth costs 4 × the fast one's estimate, and a
    // busy scheduler makes its round trips 15-45 ms at peaks (which peak
    // EWMA keeps for its decay), so at 50 ms the slow one won every fourth
    // call in about one run in five with two cores kept busy.
    slow.behaviour.delay_ms.store(250, Ordering::Relaxed);
    let balanced = Balanced::builder("Node", Arc::new(Static::new([fast.addr.clone(), slow.addr.clone()]))).build();
    for _ in 0..50 {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let balanced = balanced.clone();
                tokio::spawn(async move { balanced.call::<_, String>("Node.Slow", &()).await.expect("call") })
            })
            .collect();
        for c in calls {
            c.await.expect("join");
        }
    }
    let (f, s) = (fast.hits(), slow.hits());
    eprintln!("fast {f}, slow {s}");
    assert_eq!(f + s, 200);
    // Round robin would send it 100; peak EWMA learns within a few calls.
    assert!(s < 20, "the slow instance took {s} of 200 calls");
}

#[tokio::test]
async fn active_probing_ejects_a_dead_instance_before_any_call_finds_it() {
    let (mut a, b) = (Node::start(), Node::start());
    let balanced = Balanced::builder("Node", Arc::new(Static::new([a.addr.clone(), b.addr.clone()])))
        .probe_every(Duration::from_millis(50))
        .build();
    let addr = a.addr.clone();
    let in_rotation = || balanced.stats().into_iter().find(|s| s.instance.address == addr).expect("a").in_rotation;
    // The static list arrives through discovery, asynchronously.
    assert_eq!(balanced.ready(Duration::from_secs(5)).await, 2, "the instances were never listed");
    // Six probe periods: a live instance answers every ping and never
    // leaves the rotation (an instance starts in it, so one look at the
    // end would prove nothing). This span is what is under test, not a wait
    // for an event: the sleep only spaces the looks.
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_millis(300) {
        assert!(in_rotation(), "a live instance was ejected after {:?}", watched.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.kill();
    wait_until("a probe to eject the dead instance", Duration::from_secs(5), || !in_rotation()).await;
    let a_stats = balanced.stats().into_iter().find(|s| s.instance.address == addr).expect("a");
    assert_eq!((a_stats.answered, a_stats.failed), (0, 0), "no call was involved");
    assert_eq!(b.hits(), 0);
}
