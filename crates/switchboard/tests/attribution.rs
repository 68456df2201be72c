//! Failure attribution over real sockets: a handler that passes on the
//! failure of its own downstream call (`?`) answers as a healthy instance.
//! Its caller's balancer must not open that instance's breaker, eject it,
//! or retry the call, and the caller still sees the downstream's code and
//! message. The same failure passed on unmarked (`to_status`) is held
//! against the instance, which is what the mark prevents; even then the
//! open circuit lets early probes through instead of failing shut.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard::balance::{Balanced, BreakerConfig, BreakerState};
use switchboard::discovery::Static;
use switchboard::server::handler_fn;
use switchboard::{CallOptions, Channel, Client, Code, Error, Server, Status};

/// A server on a fresh loopback port; returns it and its address.
async fn serve(server: Server) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(server.serve(listener));
    addr
}

/// `Stock.Reserve` always fails: the downstream's own, local failure.
async fn downstream() -> String {
    let server = Server::builder().build();
    server
        .router()
        .add_method(
            "Stock.Reserve",
            handler_fn(|_: u32| async { Err::<u32, _>(Status::unavailable("no stock service today")) }),
        )
        .expect("register");
    serve(server).await
}

/// `Orders.Place` passes the downstream's failure on with `?`;
/// `Orders.PlaceUnmarked` with `to_status()`. `hits` counts both.
async fn upstream(stock: Client, hits: Arc<AtomicU32>) -> String {
    let server = Server::builder().build();
    let router = server.router();
    let (s, h) = (stock.clone(), hits.clone());
    router
        .add_method(
            "Orders.Place",
            handler_fn(move |n: u32| {
                let (stock, hits) = (s.clone(), h.clone());
                async move {
                    hits.fetch_add(1, Ordering::Relaxed);
                    let reserved: u32 = stock.call("Stock.Reserve", &n).await?;
                    Ok::<_, Status>(reserved)
                }
            }),
        )
        .expect("register");
    router
        .add_method(
            "Orders.PlaceUnmarked",
            handler_fn(move |n: u32| {
                let (stock, hits) = (stock.clone(), hits.clone());
                async move {
                    hits.fetch_add(1, Ordering::Relaxed);
                    let reserved: u32 = stock.call("Stock.Reserve", &n).await.map_err(|e| e.to_status())?;
                    Ok::<_, Status>(reserved)
                }
            }),
        )
        .expect("register");
    serve(server).await
}

fn breaker_state(orders: &Balanced) -> BreakerState {
    orders.stats().first().expect("one instance").breaker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_failure_is_the_downstreams_not_the_healthy_instances() {
    let stock = Client::builder(downstream().await).build();
    let hits = Arc::new(AtomicU32::new(0));
    let orders_addr = upstream(stock, hits.clone()).await;
    // A breaker that opens on the third failure in a row, long enough
    // open that it cannot close again during the test.
    let breaker = BreakerConfig::default().consecutive_failures(3).open_for(Duration::from_secs(60));
    let orders =
        Balanced::builder("Orders", Arc::new(Static::new([orders_addr.clone()]))).breaker(breaker.clone()).build();
    let idempotent = CallOptions::new().idempotent(true);

    for i in 0..20u32 {
        let err = orders.call_with::<_, u32>("Orders.Place", &i, &idempotent).await.expect_err("it fails");
        let Error::Status(status) = &err else { panic!("call {i}: not the downstream's status: {err}") };
        assert_eq!(status.code(), Code::Unavailable, "call {i}");
        assert_eq!(status.message(), "no stock service today", "call {i}: the downstream's message, once");
        assert!(status.is_forwarded(), "call {i}: the mark crossed the wire");
    }
    // Every call reached the one instance exactly once: none was refused
    // by an open circuit, and none retried (although idempotent).
    assert_eq!(hits.load(Ordering::Relaxed), 20);
    assert_eq!(breaker_state(&orders), BreakerState::Closed);
    let stats = &orders.stats()[0];
    assert!(stats.in_rotation, "never ejected");
    assert_eq!(stats.answered, 20);

    // The same failure passed on unmarked counts against the instance:
    // three answers open its circuit, and the fourth call is refused
    // without reaching it.
    hits.store(0, Ordering::Relaxed);
    let unmarked = Balanced::builder("Orders", Arc::new(Static::new([orders_addr]))).breaker(breaker).build();
    for _ in 0..3 {
        let err = unmarked.call::<_, u32>("Orders.PlaceUnmarked", &1u32).await.expect_err("it fails");
        assert!(matches!(&err, Error::Status(s) if !s.is_forwarded()), "{err}");
    }
    assert_eq!(breaker_state(&unmarked), BreakerState::Open);
    let refused = unmarked.call::<_, u32>("Orders.PlaceUnmarked", &1u32).await.expect_err("circuit open");
    assert!(matches!(refused, Error::NoInstances { .. }), "{refused}");
    assert_eq!(hits.load(Ordering::Relaxed), 3);

    // Not shut for good, though: with every circuit open, a call goes as
    // an early probe once the early-probe interval (100 ms) has passed
    // since the opening, long before `open_for` (60 s). The wait is the
    // interval under test, not synchronisation.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let probed = unmarked.call::<_, u32>("Orders.PlaceUnmarked", &1u32).await.expect_err("still failing");
    assert!(matches!(&probed, Error::Status(_)), "the probe reached the instance: {probed}");
    assert_eq!(hits.load(Ordering::Relaxed), 4);
    assert_eq!(breaker_state(&unmarked), BreakerState::Open, "the failed probe opened it again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_failure_downstream_is_forwarded_with_its_code() {
    // The downstream is a port nothing listens on: connecting fails.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let stock = Client::builder(dead).build();
    let hits = Arc::new(AtomicU32::new(0));
    let orders = Client::builder(upstream(stock, hits).await).build();
    let err = orders.call::<_, u32>("Orders.Place", &1u32).await.expect_err("downstream unreachable");
    let Error::Status(status) = &err else { panic!("not a status: {err}") };
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.is_forwarded());
    assert!(status.message().starts_with("cannot connect to "), "{}", status.message());
    assert_eq!(err.retry(), switchboard::Retry::Never, "a forwarded failure is not retried at this hop");
}
