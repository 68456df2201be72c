//! `Balanced` over real servers on loopback ports: round-robin, failover
//! from an address nobody listens on, and which failures are retried.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard::balance::Balanced;
use switchboard::discovery::Static;
use switchboard::server::handler_fn;
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
