//! The etcd backend against real etcd 3.4 processes (`support/etcd.rs`
//! starts them on free loopback ports): registration under a lease,
//! discovery, expiry of a dead server, re-registration after a lease is
//! lost, a watcher that misses a compaction, etcd restarting, config keys,
//! and a three-member cluster losing its leader under load.

#[path = "support/etcd.rs"]
mod etcd_support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_support::EtcdCluster;
use switchboard::balance::Balanced;
use switchboard::config::{ConfigEvent, ConfigStore};
use switchboard::discovery::{Change, Changes, Registrar};
use switchboard::server::handler_fn;
use switchboard::Channel;
use switchboard::{CallOptions, Server, Status};
use switchboard_registry::etcd::watch::{Follower, KvEvent};
use switchboard_registry::etcd::{EtcdConfigStore, EtcdConnection, EtcdOptions};
use tokio::net::{TcpListener, TcpStream};

/// Starts a cluster off the async threads (the harness is synchronous).
async fn cluster(members: usize) -> Arc<EtcdCluster> {
    tokio::task::spawn_blocking(move || {
        Arc::new(EtcdCluster::builder().members(members).heartbeat_ms(50).election_ms(500).start())
    })
    .await
    .expect("the harness thread")
}

/// Runs a harness call off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("the harness thread")
}

/// The backend for `url`, with a short TTL so expiry tests stay short.
fn backend(url: &str) -> switchboard_registry::Backend {
    switchboard_registry::from_url(url).expect("a valid etcd URL")
}

fn with_ttl(url: &str, ttl: &str) -> String {
    format!("{url}?ttl={ttl}")
}

/// A server serving `Node.Where` (answers its address), registered through
/// `registrar`, on its own runtime so a test can make it vanish without a
/// goodbye (dropping the runtime stops its tasks mid-flight, as SIGKILL
/// would: no lease revoke, no more keepalives).
struct Node {
    server: Server,
    addr: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Node {
    fn start(registrar: Arc<dyn Registrar>) -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the node");
        let (server, addr) = runtime.block_on(async move {
            let server = Server::builder().registrar(registrar).build();
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            let me = addr.clone();
            server
                .router()
                .add_method("Node.Where", handler_fn(move |(): ()| std::future::ready(Ok::<_, Status>(me.clone()))))
                .expect("valid name");
            tokio::spawn(server.clone().serve(listener));
            (server, addr)
        });
        Node { server, addr, runtime: Some(runtime) }
    }

    /// Graceful shutdown: deregisters (revokes the lease), then drains.
    async fn shutdown(mut self) {
        let server = self.server.clone();
        if let Some(runtime) = self.runtime.take() {
            let done = runtime.spawn(async move { server.shutdown().await });
            done.await.expect("shutdown");
            runtime.shutdown_background();
        }
    }

    /// Gone at once, like a process killed with SIGKILL.
    fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Node constructors must run outside the test's runtime.
async fn node(registrar: Arc<dyn Registrar>) -> Node {
    blocking(move || Node::start(registrar)).await
}

async fn next(changes: &mut Changes, within: Duration) -> Vec<Change> {
    tokio::time::timeout(within, changes.next())
        .await
        .unwrap_or_else(|_| panic!("no discovery batch within {within:?}"))
        .expect("discovery runs")
}

/// Waits for the ids discovery reports to become `want`; returns how long
/// that took.
async fn until_ids(changes: &mut Changes, ids: &mut BTreeSet<String>, want: &[&str], within: Duration) -> Duration {
    let began = Instant::now();
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    while *ids != want {
        let left = within.checked_sub(began.elapsed()).unwrap_or_else(|| {
            panic!("discovery reports {ids:?}, not {want:?}, after {within:?}");
        });
        for change in next(changes, left).await {
            match change {
                Change::Added(i) | Change::Updated(i) => {
                    ids.insert(i.id);
                }
                Change::Removed(id) => {
                    ids.remove(&id);
                }
            }
        }
    }
    began.elapsed()
}

/// Waits until the channel lists `n` instances (discovery delivered them).
async fn wait_listed(balanced: &Balanced, n: usize, within: Duration) {
    let began = Instant::now();
    while balanced.stats().iter().filter(|s| s.listed).count() != n {
        assert!(began.elapsed() < within, "not {n} instances listed after {within:?}: {:?}", balanced.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 10 s) until `n` keys are under `prefix`.
async fn wait_records(cluster: &Arc<EtcdCluster>, prefix: &'static str, n: usize, when: &str) {
    let began = Instant::now();
    loop {
        let present = blocking({
            let e = Arc::clone(cluster);
            move || keys(&e, prefix)
        })
        .await;
        if present.len() == n {
            return;
        }
        assert!(began.elapsed() < Duration::from_secs(10), "records {when}: {present:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn keys(cluster: &EtcdCluster, prefix: &str) -> BTreeSet<String> {
    cluster
        .etcdctl_ok(&["get", "--prefix", "--keys-only", prefix])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_register_under_a_lease_callers_follow_and_shutdown_deregisters_at_once() {
    let etcd = cluster(1).await;
    let backend = backend(&etcd.url());
    let mut changes = backend.discover.discover("Node");
    assert!(next(&mut changes, Duration::from_secs(10)).await.is_empty(), "nobody registered yet");

    let a = node(backend.registrar.clone()).await;
    let batch = next(&mut changes, Duration::from_secs(5)).await;
    assert!(
        matches!(&batch[..], [Change::Added(i)] if i.address == a.addr && i.methods == ["Node.Where"] && i.healthy),
        "{batch:?}"
    );
    // The record as users see it with etcdctl: JSON at the documented key,
    // attached to a lease.
    let key = format!("/switchboard/services/Node/{}", a.addr);
    let etcd2 = etcd.clone();
    let key2 = key.clone();
    let record = blocking(move || etcd2.get(&key2)).await.expect("the record is in etcd");
    let record: serde_json::Value = serde_json::from_str(&record).expect("JSON");
    assert_eq!(record["address"], a.addr.as_str());
    assert_eq!(record["service"], "Node");
    assert_eq!(
        blocking({
            let e = etcd.clone();
            move || e.lease_list()
        })
        .await
        .len(),
        1
    );

    let b = node(backend.registrar.clone()).await;
    let mut ids = BTreeSet::from([a.addr.clone()]);
    until_ids(&mut changes, &mut ids, &[&a.addr, &b.addr], Duration::from_secs(5)).await;

    // Graceful shutdown revokes the lease: gone now, not after the TTL.
    let b_addr = b.addr.clone();
    b.shutdown().await;
    let took = until_ids(&mut changes, &mut ids, &[&a.addr], Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(1), "deregistration took {took:?}");
    let left = blocking({
        let e = etcd.clone();
        move || keys(&e, "/switchboard/services/")
    })
    .await;
    assert_eq!(left, BTreeSet::from([key]), "{b_addr} is gone from etcd");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_stays_registered_while_alive_and_is_gone_within_the_ttl() {
    let etcd = cluster(1).await;
    let backend = backend(&with_ttl(&etcd.url(), "2s"));
    let mut changes = backend.discover.discover("Node");
    next(&mut changes, Duration::from_secs(10)).await;
    let victim = node(backend.registrar.clone()).await;
    let mut ids = BTreeSet::new();
    until_ids(&mut changes, &mut ids, &[&victim.addr], Duration::from_secs(5)).await;

    // Three TTLs: only keepalives keep it there.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let present = blocking({
        let e = etcd.clone();
        move || keys(&e, "/switchboard/services/Node/")
    })
    .await;
    assert_eq!(present.len(), 1, "keepalives hold the record past its TTL");

    victim.kill();
    let took = until_ids(&mut changes, &mut ids, &[], Duration::from_secs(5)).await;
    // The lease runs out 2 s after the last keepalive, which was up to 2/3 s
    // before the kill; etcd checks expiry every 500 ms.
    assert!(took < Duration::from_millis(3000), "expiry took {took:?}");
    assert!(blocking({
        let e = etcd.clone();
        move || e.lease_list()
    })
    .await
    .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_revoked_from_outside_is_replaced_and_the_server_registers_again() {
    let etcd = cluster(1).await;
    let backend = backend(&with_ttl(&etcd.url(), "3s"));
    let mut changes = backend.discover.discover("Node");
    next(&mut changes, Duration::from_secs(10)).await;
    let server = node(backend.registrar.clone()).await;
    let mut ids = BTreeSet::new();
    until_ids(&mut changes, &mut ids, &[&server.addr], Duration::from_secs(5)).await;

    let leases = blocking({
        let e = etcd.clone();
        move || e.lease_list()
    })
    .await;
    assert_eq!(leases.len(), 1);
    let old = leases[0].clone();
    blocking({
        let (e, old) = (etcd.clone(), old.clone());
        move || e.revoke_lease(&old)
    })
    .await;
    // etcd deleted the record with the lease...
    until_ids(&mut changes, &mut ids, &[], Duration::from_secs(2)).await;
    // ...and the next renewal (a third of the TTL) finds out and puts it back.
    let took = until_ids(&mut changes, &mut ids, &[&server.addr], Duration::from_secs(3)).await;
    assert!(took <= Duration::from_millis(2500), "re-registration took {took:?}");
    let leases = blocking({
        let e = etcd.clone();
        move || e.lease_list()
    })
    .await;
    assert_eq!(leases.len(), 1, "one new lease, the revoked one gone: {leases:?}");
    assert_ne!(leases[0], old);
    server.shutdown().await;
}

/// A TCP relay in front of etcd that can cut every connection and refuse
/// new ones, so one client loses etcd while etcd itself carries on.
struct Relay {
    addr: String,
    cut: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (flag, gen) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    continue; // dropped: refused while cut
                }
                let target = target.clone();
                let mut cut_now = gen.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_now.changed() => {}
                    }
                });
            }
        });
        Relay { addr, cut, generation }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_cut_off_across_a_compaction_relists_and_sees_the_removal_it_missed() {
    let etcd = cluster(1).await;
    let direct = EtcdConnection::new(etcd.url().parse::<EtcdOptions>().expect("url"));
    let put = |key: &str, id: &str| {
        let (conn, key) = (direct.clone(), key.to_owned());
        let record = serde_json::json!({"service": "Node", "id": id, "address": id}).to_string();
        async move { conn.request(|mut c| async move { c.put(key, record, None).await }).await.expect("put") }
    };
    put("/switchboard/services/Node/127.0.0.1:1", "127.0.0.1:1").await;
    put("/switchboard/services/Node/127.0.0.1:2", "127.0.0.1:2").await;

    let relay = Relay::start(etcd.client_endpoint(0)).await;
    let via_relay = EtcdConnection::new(format!("etcd://{}", relay.addr).parse::<EtcdOptions>().expect("url"));
    // Both layers: the follower (whose stats show which path it took) and
    // discovery built on it.
    let mut follower = Follower::new(via_relay.clone(), "/switchboard/services/Node/");
    let first = follower.next().await;
    assert_eq!(first.len(), 2);
    let backend = switchboard_registry::etcd::EtcdOptions::backend(
        format!("etcd://{}", relay.addr).parse::<EtcdOptions>().expect("url"),
    );
    let mut changes = backend.discover.discover("Node");
    let mut ids = BTreeSet::new();
    until_ids(&mut changes, &mut ids, &["127.0.0.1:1", "127.0.0.1:2"], Duration::from_secs(10)).await;

    // Cut off, :2 is deregistered, :3 arrives, and etcd compacts its
    // history past all of it.
    relay.cut();
    let pending = tokio::spawn(async move {
        let events = follower.next().await;
        (follower, events)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    direct
        .request(|mut c| async move { c.delete("/switchboard/services/Node/127.0.0.1:2", None).await })
        .await
        .expect("delete");
    put("/switchboard/services/Node/127.0.0.1:3", "127.0.0.1:3").await;
    put("/switchboard/other", "x").await;
    let compacted_to = blocking({
        let e = etcd.clone();
        move || e.compact_to_latest()
    })
    .await;
    assert!(compacted_to > 0);
    relay.restore();

    let (follower, events) =
        tokio::time::timeout(Duration::from_secs(15), pending).await.expect("the follower catches up").expect("join");
    let stats = follower.stats();
    assert!(stats.compacted >= 1, "the resume hit the compaction and re-listed: {stats:?}");
    assert!(stats.lists >= 2, "{stats:?}");
    assert!(events.contains(&KvEvent::Deleted("/switchboard/services/Node/127.0.0.1:2".into())), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, KvEvent::Put(kv) if kv.key.ends_with("127.0.0.1:3"))), "{events:?}");
    until_ids(&mut changes, &mut ids, &["127.0.0.1:1", "127.0.0.1:3"], Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarting_costs_callers_nothing_and_servers_register_again() {
    let etcd = cluster(1).await;
    let backend = backend(&with_ttl(&etcd.url(), "2s"));
    let a = node(backend.registrar.clone()).await;
    let b = node(backend.registrar.clone()).await;
    let balanced = Balanced::builder("Node", backend.discover.clone()).build();
    wait_listed(&balanced, 2, Duration::from_secs(10)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let caller = {
        let (balanced, stop, ok, failed) = (balanced.clone(), stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let options = CallOptions::new().timeout(Duration::from_secs(1)).idempotent(true);
                match balanced.call_with::<(), String>("Node.Where", &(), &options).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Down for two TTLs: the servers' leases lapse on their side, so they
    // must register again once etcd is back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocking({
        let e = etcd.clone();
        move || e.kill(0)
    })
    .await;
    let before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = ok.load(Ordering::Relaxed) - before;
    blocking({
        let e = etcd.clone();
        move || e.restart(0)
    })
    .await;
    let restarted = Instant::now();

    // A third server arriving after the restart is seen: the watch resumed.
    let c = node(backend.registrar.clone()).await;
    wait_listed(&balanced, 3, Duration::from_secs(10)).await;
    let watching = restarted.elapsed();
    // Every record is in etcd again, each on a live lease.
    wait_records(&etcd, "/switchboard/services/Node/", 3, "after the restart").await;
    let registered = restarted.elapsed();
    // Past the TTL the records are still (or, after a lease that lapsed
    // under load, again) there: keepalives renew the leases, and a lost
    // one is granted anew and the record put back. A snapshot at one
    // instant would race that recovery on a loaded machine (a keepalive
    // late by a TTL), so wait for the state instead.
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_records(&etcd, "/switchboard/services/Node/", 3, "a TTL after the restart").await;

    stop.store(true, Ordering::Relaxed);
    caller.await.expect("caller");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "etcd down 4 s: {ok} calls ok, {failed} failed, {during} of them while etcd was down; \
         after the restart the watch saw a new server in {watching:?}, every record was back in {registered:?}"
    );
    assert_eq!(failed, 0, "callers kept calling from their cache");
    assert!(during > 100, "calls went on while etcd was down: {during}");
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_keys_round_trip_and_watch() {
    let etcd = cluster(1).await;
    let store = EtcdConfigStore::new(EtcdConnection::new(etcd.url().parse().expect("url")));
    assert_eq!(store.get("routing/Arith").await.expect("get"), None);
    let mut watch = store.watch("routing/");
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("first").expect("open");
    assert!(first.is_empty());

    let revision = store.put("routing/Arith", r#"{"canary": 5}"#).await.expect("put");
    let got = store.get("routing/Arith").await.expect("get").expect("present");
    assert_eq!((got.value.as_str(), got.revision), (r#"{"canary": 5}"#, revision));
    // Users see it where the docs say.
    let raw = blocking({
        let e = etcd.clone();
        move || e.get("/switchboard/config/routing/Arith")
    })
    .await;
    assert_eq!(raw.as_deref(), Some(r#"{"canary": 5}"#));
    let batch = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("put seen").expect("open");
    assert!(matches!(&batch[..], [ConfigEvent::Put(e)] if e.key == "routing/Arith"), "{batch:?}");

    store.put("plugins/x", "on").await.expect("put");
    let list = store.list("").await.expect("list");
    let listed: Vec<&str> = list.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(listed, ["plugins/x", "routing/Arith"]);
    assert_eq!(store.list("routing/").await.expect("list").entries.len(), 1);

    assert!(store.delete("routing/Arith").await.expect("delete"));
    assert!(!store.delete("routing/Arith").await.expect("delete again"));
    let batch = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("delete seen").expect("open");
    assert_eq!(batch, vec![ConfigEvent::Deleted { key: "routing/Arith".into() }], "plugins/x is not under routing/");

    assert!(store.put("/abs", "x").await.is_err());
    assert!(store.get("a/../b").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_cluster_loses_its_leader_under_load_and_no_call_fails() {
    let etcd = cluster(3).await;
    let url = etcd.url();
    let backend = backend(&with_ttl(&url, "3s"));
    let nodes = vec![
        node(backend.registrar.clone()).await,
        node(backend.registrar.clone()).await,
        node(backend.registrar.clone()).await,
    ];
    let balanced = Balanced::builder("Node", backend.discover.clone()).build();
    wait_listed(&balanced, 3, Duration::from_secs(10)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (balanced, stop, ok, failed) = (balanced.clone(), stop.clone(), ok.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            // Bounded: at most 200,000 calls each, and the stop flag.
            for _ in 0..200_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match balanced.call::<(), String>("Node.Where", &()).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        eprintln!("failed call: {error}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::task::yield_now().await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = blocking({
        let e = etcd.clone();
        move || e.wait_for_leader(Duration::from_secs(5))
    })
    .await;
    let killed_at = Instant::now();
    blocking({
        let e = etcd.clone();
        move || e.kill(leader)
    })
    .await;
    let new_leader = blocking({
        let e = etcd.clone();
        move || e.wait_for_leader(Duration::from_secs(10))
    })
    .await;
    let election = killed_at.elapsed();
    assert_ne!(new_leader, leader);

    // Watches resume: a server joining after the kill is discovered.
    let late = node(backend.registrar.clone()).await;
    wait_listed(&balanced, 4, Duration::from_secs(10)).await;
    let discovered_after = killed_at.elapsed();

    // Two TTLs after the kill: every lease was renewed through the election.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(killed_at.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller");
    }
    let records = blocking({
        let e = etcd.clone();
        move || keys(&e, "/switchboard/services/Node/")
    })
    .await;
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "leader kill under load: calls made {}, failed {failed}; new leader after {election:?}; \
         a new server discovered {discovered_after:?} after the kill; records in etcd: {}",
        ok + failed,
        records.len()
    );
    assert_eq!(failed, 0, "no call may fail when etcd loses its leader");
    assert!(ok > 1000, "the callers ran: {ok}");
    assert_eq!(records.len(), 4, "every registration is intact: {records:?}");
    assert_eq!(balanced.stats().iter().filter(|s| s.listed).count(), 4);

    // The old leader comes back and catches up.
    blocking({
        let e = etcd.clone();
        move || e.restart(leader)
    })
    .await;
    let caught_up = blocking({
        let e = etcd.clone();
        move || e.etcdctl_at_ok(leader, &["get", "--prefix", "--keys-only", "/switchboard/services/Node/"])
    })
    .await;
    assert_eq!(caught_up.lines().filter(|l| !l.trim().is_empty()).count(), 4, "{caught_up}");

    late.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_pages_through_more_keys_than_one_page_at_one_revision() {
    let etcd = cluster(1).await;
    let conn = EtcdConnection::new(etcd.url().parse().expect("url"));
    // 1,201 keys: three pages of 500, the last one short.
    for i in 0..1201 {
        let key = format!("/switchboard/services/Many/{i:05}");
        conn.request(|mut c| async move { c.put(key, "{}", None).await }).await.expect("put");
    }
    let listing = switchboard_registry::etcd::watch::list(&conn, "/switchboard/services/Many/").await.expect("list");
    assert_eq!(listing.kvs.len(), 1201);
    assert!(listing.kvs.windows(2).all(|w| w[0].key < w[1].key), "sorted, no key twice");

    // While a writer deletes keys from the end, a listing is still one
    // snapshot: exactly the keys etcd held at the listing's revision.
    let deleted = Arc::new(AtomicU64::new(0));
    let deleter = {
        let (conn, deleted) = (conn.clone(), deleted.clone());
        tokio::spawn(async move {
            for i in (600..1201).rev() {
                let key = format!("/switchboard/services/Many/{i:05}");
                conn.request(|mut c| async move { c.delete(key, None).await }).await.expect("delete");
                deleted.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while deleted.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let during = switchboard_registry::etcd::watch::list(&conn, "/switchboard/services/Many/").await.expect("list");
    deleter.await.expect("deleter");
    let at_revision = blocking({
        let (e, rev) = (etcd.clone(), during.revision.to_string());
        move || e.etcdctl_ok(&["get", "--prefix", "--keys-only", "--rev", &rev, "/switchboard/services/Many/"])
    })
    .await;
    let expected: Vec<&str> = at_revision.lines().filter(|l| !l.trim().is_empty()).collect();
    let got: Vec<&str> = during.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(got, expected, "the listing is the snapshot at revision {}", during.revision);
    assert!(got.len() < 1201 && got.len() >= 600, "the listing ran while keys were deleted: {}", got.len());
}
