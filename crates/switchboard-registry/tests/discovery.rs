//! Servers announcing themselves and callers following them, against a real
//! registry on a loopback port: registration follows the router, discovery
//! reports changes, and a registry restart costs callers nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::backoff::Backoff;
use switchboard::balance::Balanced;
use switchboard::discovery::{Change, Discover};
use switchboard::server::handler_fn;
use switchboard::Channel;
use switchboard::{CallOptions, Server, Status};
use switchboard_registry::model::RegisterRequest;
use switchboard_registry::{BuiltinDiscover, BuiltinRegistrar, RegistryClient, RegistryConfig, RegistryServer};

const HEARTBEAT: Duration = Duration::from_millis(400);

fn config() -> RegistryConfig {
    RegistryConfig::default()
        .heartbeat_interval(HEARTBEAT)
        .default_ttl(Duration::from_millis(1200))
        .sweep_interval(Duration::from_millis(100))
}

async fn start_registry(addr: &str) -> switchboard_registry::RegistryHandle {
    // A restarted registry takes the port its predecessor just released.
    let began = Instant::now();
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if began.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    };
    RegistryServer::builder().config(config()).build().spawn(listener).expect("registry starts")
}

/// Discovery that retries an unreachable registry every 20–60 ms: it sees a
/// restarted registry long before any server has re-registered (they beat
/// every 400 ms), which is the moment a cache that trusted the registry's
/// first answer would drop every instance.
fn quick_discover(client: &RegistryClient) -> BuiltinDiscover {
    BuiltinDiscover::new(client.clone()).backoff(
        Backoff::default()
            .initial(Duration::from_millis(20))
            .max(Duration::from_millis(40))
            .multiplier(2.0)
            .jitter(0.5),
    )
}

/// A server registered with the registry at `url`, serving `Node.Where`
/// (answers its own address) and `Node.Slow` (sleeps for the given ms).
async fn start_node(client: &RegistryClient) -> (Server, String) {
    let server = Server::builder().registrar(Arc::new(BuiltinRegistrar::new(client.clone()))).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let me = addr.clone();
    server
        .router()
        .add_method("Node.Where", handler_fn(move |(): ()| std::future::ready(Ok::<_, Status>(me.clone()))))
        .expect("valid name");
    server
        .router()
        .add_method(
            "Node.Slow",
            handler_fn(|ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, Status>(ms)
            }),
        )
        .expect("valid name");
    tokio::spawn(server.clone().serve(listener));
    (server, addr)
}

/// Polls until `check` holds for the registry's list of `service`, or panics
/// after `within`. Returns how long it took.
async fn eventually(
    client: &RegistryClient,
    service: &str,
    within: Duration,
    check: impl Fn(&[switchboard_registry::model::InstanceRecord]) -> bool,
) -> Duration {
    let began = Instant::now();
    loop {
        if let Ok(list) = client.instances(service).await {
            if check(&list.instances) {
                return began.elapsed();
            }
        }
        assert!(began.elapsed() < within, "{service}: condition not met within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_registers_follows_its_router_and_deregisters_before_draining() {
    let registry = start_registry("127.0.0.1:0").await;
    let client = RegistryClient::new(&format!("http://{}", registry.local_addr())).expect("url");
    let (server, addr) = start_node(&client).await;

    eventually(&client, "Node", Duration::from_secs(3), |i| {
        i.len() == 1 && i[0].address == addr && i[0].id == addr && i[0].methods == ["Node.Slow", "Node.Where"]
    })
    .await;

    // A method and a whole service added at run time show up; removed ones go.
    let double = handler_fn(|x: i64| async move { Ok::<_, Status>(x * 2) });
    server.router().add_method("Node.Double", double.clone()).expect("valid name");
    server.router().add_method("Math.Double", double).expect("valid name");
    eventually(&client, "Node", Duration::from_secs(3), |i| {
        i.len() == 1 && i[0].methods == ["Node.Double", "Node.Slow", "Node.Where"]
    })
    .await;
    eventually(&client, "Math", Duration::from_secs(3), |i| i.len() == 1 && i[0].methods == ["Math.Double"]).await;
    assert!(server.router().remove_service("Math"));
    eventually(&client, "Math", Duration::from_secs(3), <[_]>::is_empty).await;

    // Shutdown withdraws the registration first, while a call still runs.
    let caller = switchboard::Client::connect(addr.clone()).await.expect("connect");
    let slow = tokio::spawn(async move { caller.call::<u64, u64>("Node.Slow", &1500).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown().await }
    });
    eventually(&client, "Node", Duration::from_secs(1), <[_]>::is_empty).await;
    assert!(!slow.is_finished(), "the registration went before the call in flight finished");
    assert_eq!(slow.await.expect("join").expect("the call in flight completes"), 1500);
    assert!(stopping.await.expect("join").drained);
    registry.shutdown().await.expect("registry stops");
}

async fn next(changes: &mut switchboard::discovery::Changes, within: Duration) -> Vec<Change> {
    tokio::time::timeout(within, changes.next()).await.expect("a batch in time").expect("the source runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_reports_additions_updates_and_removals() {
    let registry = start_registry("127.0.0.1:0").await;
    let client = RegistryClient::new(&format!("http://{}", registry.local_addr())).expect("url");
    client.register(&RegisterRequest::new("S", "a", "127.0.0.1:9001")).await.expect("register a");
    let mut changes = quick_discover(&client).discover("S");

    let first = next(&mut changes, Duration::from_secs(5)).await;
    assert!(matches!(&first[..], [Change::Added(i)] if i.id == "a" && i.healthy), "{first:?}");

    client.register(&RegisterRequest::new("S", "b", "127.0.0.1:9002")).await.expect("register b");
    let added = next(&mut changes, Duration::from_secs(5)).await;
    assert!(matches!(&added[..], [Change::Added(i)] if i.id == "b"), "{added:?}");

    let mut update = RegisterRequest::new("S", "a", "127.0.0.1:9001");
    update.metadata.zone = "z2".into();
    client.register(&update).await.expect("update a");
    let updated = next(&mut changes, Duration::from_secs(5)).await;
    assert!(matches!(&updated[..], [Change::Updated(i)] if i.id == "a" && i.metadata.zone == "z2"), "{updated:?}");

    client.deregister("S", "b").await.expect("deregister b");
    assert_eq!(next(&mut changes, Duration::from_secs(5)).await, vec![Change::Removed("b".into())]);

    // The registry goes away: nothing is reported (callers keep what they
    // have). It comes back empty: once its warm-up (one TTL) has passed
    // without `a` re-registering, `a` is reported removed, not before.
    let addr = registry.local_addr().to_string();
    registry.shutdown().await.expect("registry stops");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), changes.next()).await.is_err(),
        "an unreachable registry must not empty the list"
    );
    let restarted = Instant::now();
    let registry = start_registry(&addr).await;
    assert_eq!(next(&mut changes, Duration::from_secs(5)).await, vec![Change::Removed("a".into())]);
    let took = restarted.elapsed();
    assert!(took >= config().default_ttl, "removal reported during the warm-up, after {took:?}");
    registry.shutdown().await.expect("registry stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_restart_loses_no_call_and_every_instance_is_back_within_a_heartbeat() {
    let registry = start_registry("127.0.0.1:0").await;
    let addr = registry.local_addr().to_string();
    let client = RegistryClient::new(&format!("http://{addr}")).expect("url");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_node(&client).await);
    }
    eventually(&client, "Node", Duration::from_secs(3), |i| i.len() == 3).await;

    // Round robin: the spread check below is about discovery keeping every
    // instance; the default P2C may leave one idle on a busy machine (one
    // slow first answer makes it look worse for seconds).
    let balanced = Balanced::builder("Node", Arc::new(quick_discover(&client)))
        .balancer(switchboard::balance::RoundRobin::default())
        .build();
    assert_eq!(balanced.ready(Duration::from_secs(3)).await, 3);

    // Callers keep calling throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (balanced, stop, ok, failed) = (balanced.clone(), stop.clone(), ok.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            let opts = CallOptions::new().idempotent(true).timeout(Duration::from_secs(2));
            while !stop.load(Ordering::Relaxed) {
                match balanced.call_with::<(), String>("Node.Where", &(), &opts).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("call failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    registry.shutdown().await.expect("registry stops");
    tokio::time::sleep(Duration::from_millis(800)).await; // down for a while: heartbeats fail
    let registry = start_registry(&addr).await;
    let back = eventually(&client, "Node", Duration::from_secs(5), |i| i.len() == 3).await;
    // One beat plus the time the beat itself takes on a busy machine.
    assert!(back <= HEARTBEAT + Duration::from_millis(300), "instances took {back:?} to come back");

    // Past the warm-up, the callers still see all three.
    tokio::time::sleep(config().default_ttl + Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.expect("caller");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {} calls failed across the restart", ok + failed);
    assert!(ok > 200, "the callers made only {ok} calls");
    assert_eq!(balanced.instances().len(), 3);
    let spread: Vec<u64> = balanced.stats().iter().map(|s| s.answered).collect();
    assert!(spread.iter().all(|&n| n > 0), "calls reached every instance: {spread:?}");

    for (server, _) in &nodes {
        server.shutdown().await;
    }
    eventually(&client, "Node", Duration::from_secs(2), <[_]>::is_empty).await;
    registry.shutdown().await.expect("registry stops");
}
