//! Store behaviour with paused tokio time: index rules, TTL eviction,
//! self-preservation, blocking waits.

use std::time::Duration;

use switchboard_registry::model::{Health, RegisterRequest};
use switchboard_registry::{RegistryConfig, Store, StoreError};
use tokio::time::{advance, Instant};

fn req(service: &str, id: &str, port: u16) -> RegisterRequest {
    let mut r = RegisterRequest::new(service, id, format!("127.0.0.1:{port}"));
    r.methods = vec![format!("{service}.Multiply")];
    r
}

fn ids(store: &Store, service: &str) -> Vec<String> {
    store.instances(service).instances.into_iter().map(|i| i.id).collect()
}

#[tokio::test(start_paused = true)]
async fn index_rules_register_heartbeat_deregister() {
    let store = Store::new(RegistryConfig::default());
    assert_eq!(store.index(), 1, "the index starts at 1");

    assert_eq!(store.register(req("Arith", "b", 2)), Ok(2));
    assert_eq!(store.register(req("Arith", "a", 1)), Ok(3));
    assert_eq!(store.register(req("Echo", "e", 3)), Ok(4));
    assert_eq!(ids(&store, "Arith"), ["a", "b"], "sorted by id");
    assert_eq!(store.instances("Arith").index, 3);
    assert_eq!(store.instances("Echo").index, 4);

    // Identical re-registration: not a change.
    assert_eq!(store.register(req("Arith", "a", 1)), Ok(4));
    // Changed address: a change, registered_at kept.
    let before = store.instances("Arith").instances[0].clone();
    assert_eq!(store.register(req("Arith", "a", 11)), Ok(5));
    let after = store.instances("Arith").instances[0].clone();
    assert_eq!(after.address, "127.0.0.1:11");
    assert_eq!(after.registered_at_ms, before.registered_at_ms);
    assert_eq!(after.ttl_ms, 6000, "default TTL applied");

    let list = store.services();
    let names: Vec<_> = list.services.iter().map(|s| (s.name.as_str(), s.instances)).collect();
    assert_eq!(names, [("Arith", 2), ("Echo", 1)]);
    assert_eq!(list.index, 5);
    assert!(!list.self_preservation);

    // Heartbeats are not changes.
    assert_eq!(store.heartbeat("Arith", "a"), Ok(5));
    assert!(matches!(store.heartbeat("Arith", "zzz"), Err(StoreError::UnknownInstance { .. })));
    assert!(matches!(store.heartbeat("Nope", "a"), Err(StoreError::UnknownInstance { .. })));

    assert_eq!(store.deregister("Arith", "a"), Ok(6));
    assert!(matches!(store.deregister("Arith", "a"), Err(StoreError::UnknownInstance { .. })));
    assert_eq!(store.index(), 6, "failed deregistration changes nothing");
    assert_eq!(store.deregister("Echo", "e"), Ok(7));
    // An emptied service keeps its index (watchers see the removal) but is not listed.
    assert_eq!(store.instances("Echo").index, 7);
    assert!(store.instances("Echo").instances.is_empty());
    assert_eq!(store.services().services.len(), 1);
    assert_eq!(store.instances("Never").index, 0);
}

#[tokio::test(start_paused = true)]
async fn invalid_registration_changes_nothing() {
    let store = Store::new(RegistryConfig::default());
    let mut bad = req("Arith", "a", 1);
    bad.ttl_ms = Some(500);
    let err = store.register(bad).unwrap_err();
    assert!(err.to_string().contains("ttl_ms"), "{err}");
    assert_eq!(store.index(), 1);
    assert_eq!(store.status().instances, 0);
}

#[tokio::test(start_paused = true)]
async fn ttl_evicts_only_silent_instances() {
    let store = Store::new(RegistryConfig::default()); // TTL 6 s
    store.register(req("Arith", "silent", 1)).unwrap();
    store.register(req("Arith", "beating", 2)).unwrap();
    let mut long = req("Arith", "long-ttl", 3);
    long.ttl_ms = Some(20_000);
    store.register(long).unwrap();

    advance(Duration::from_secs(4)).await;
    store.heartbeat("Arith", "beating").unwrap();
    advance(Duration::from_millis(1900)).await; // 5.9 s: nobody past the TTL yet
    let report = store.sweep();
    assert!(report.evicted.is_empty(), "{report:?}");

    advance(Duration::from_millis(200)).await; // 6.1 s since "silent" was last heard of
    let index = store.index();
    let report = store.sweep();
    assert_eq!(report.evicted, [("Arith".to_owned(), "silent".to_owned())]);
    assert!(!report.self_preservation, "1 of 3 expired is under the 50% threshold");
    assert_eq!(ids(&store, "Arith"), ["beating", "long-ttl"]);
    assert_eq!(store.index(), index + 1, "an eviction is a change");

    // Unknown after eviction: the heartbeat tells the server to re-register.
    assert!(matches!(store.heartbeat("Arith", "silent"), Err(StoreError::UnknownInstance { .. })));
}

#[tokio::test(start_paused = true)]
async fn self_preservation_starts_when_most_heartbeats_stop_and_ends_when_they_return() {
    let store = Store::new(RegistryConfig::default());
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        store.register(req("Arith", id, 10 + i as u16)).unwrap();
    }
    // All four heartbeat for a while (only instances that did count)...
    advance(Duration::from_secs(2)).await;
    for id in ["a", "b", "c", "d"] {
        store.heartbeat("Arith", id).unwrap();
    }
    advance(Duration::from_secs(5)).await;
    store.heartbeat("Arith", "a").unwrap(); // ...then only "a" still reaches us
    advance(Duration::from_secs(2)).await; // b, c, d are 7 s silent

    let index = store.index();
    let report = store.sweep();
    assert_eq!((report.total, report.expired), (4, 3));
    assert!(report.evicted.is_empty(), "3 of 4 expired at once: keep them all");
    assert!(report.self_preservation);
    assert!(store.self_preservation());
    assert!(store.services().self_preservation && store.status().self_preservation);
    let health: Vec<_> = store.instances("Arith").instances.iter().map(|i| i.health).collect();
    assert_eq!(health, [Health::Passing, Health::Expired, Health::Expired, Health::Expired]);
    assert!(store.index() > index, "health changes are changes");

    // Still partitioned: later sweeps keep everything, and do not bump the index again.
    advance(Duration::from_secs(30)).await;
    store.heartbeat("Arith", "a").unwrap();
    let index = store.index();
    assert!(store.sweep().evicted.is_empty());
    assert_eq!(store.index(), index);

    // Heartbeats return for b and c; d is really dead. 1 of 4 expired ≤ 50%.
    store.heartbeat("Arith", "b").unwrap();
    store.heartbeat("Arith", "c").unwrap();
    assert_eq!(store.instances("Arith").instances[1].health, Health::Passing, "a heartbeat restores health");
    let report = store.sweep();
    assert_eq!(report.evicted, [("Arith".to_owned(), "d".to_owned())]);
    assert!(!report.self_preservation && !store.self_preservation());
    assert_eq!(ids(&store, "Arith"), ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn with_self_preservation_off_a_mass_loss_of_heartbeats_is_evicted() {
    let store = Store::new(RegistryConfig::default().self_preservation(false));
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        store.register(req("Arith", id, 10 + i as u16)).unwrap();
    }
    advance(Duration::from_secs(2)).await;
    for id in ["a", "b", "c", "d"] {
        store.heartbeat("Arith", id).unwrap();
    }
    advance(Duration::from_secs(5)).await;
    store.heartbeat("Arith", "a").unwrap();
    advance(Duration::from_secs(2)).await; // b, c, d are 7 s silent: what turned it on above
    let report = store.sweep();
    assert!(!report.self_preservation && !store.self_preservation());
    assert_eq!(report.evicted.len(), 3, "{:?}", report.evicted);
    assert_eq!(ids(&store, "Arith"), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn self_preservation_needs_the_minimum_instance_count_and_respects_the_share() {
    // Every instance here heartbeats once after registering, so all count.
    let beat_all = |store: &Store, ids: &[&str]| {
        for id in ids {
            store.heartbeat("S", id).unwrap();
        }
    };
    // Two instances both dying is plausible: below the minimum of 3, evict.
    let store = Store::new(RegistryConfig::default());
    store.register(req("S", "a", 1)).unwrap();
    store.register(req("S", "b", 2)).unwrap();
    advance(Duration::from_secs(1)).await;
    beat_all(&store, &["a", "b"]);
    advance(Duration::from_secs(7)).await;
    let report = store.sweep();
    assert_eq!(report.evicted.len(), 2);
    assert!(!report.self_preservation);

    // Exactly half expired is not "more than" half: evict.
    let store = Store::new(RegistryConfig::default());
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        store.register(req("S", id, 1 + i as u16)).unwrap();
    }
    advance(Duration::from_secs(1)).await;
    beat_all(&store, &["a", "b", "c", "d"]);
    advance(Duration::from_secs(4)).await;
    store.heartbeat("S", "a").unwrap();
    store.heartbeat("S", "b").unwrap();
    advance(Duration::from_secs(3)).await;
    let report = store.sweep();
    assert_eq!(report.evicted.len(), 2);
    assert!(!report.self_preservation);

    // A configured share of 0.9 tolerates 3 of 4 expiring.
    let config = RegistryConfig::default().self_preservation_share(0.9);
    let store = Store::new(config);
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        store.register(req("S", id, 1 + i as u16)).unwrap();
    }
    advance(Duration::from_secs(1)).await;
    beat_all(&store, &["a", "b", "c", "d"]);
    advance(Duration::from_secs(4)).await;
    store.heartbeat("S", "a").unwrap();
    advance(Duration::from_secs(3)).await;
    let report = store.sweep();
    assert_eq!((report.counted, report.expired, report.expiring), (4, 3, 3));
    assert_eq!(report.evicted.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn wait_for_change_wakes_on_change_and_times_out_otherwise() {
    let store = std::sync::Arc::new(Store::new(RegistryConfig::default()));
    store.register(req("Arith", "a", 1)).unwrap();
    let seen = store.instances("Arith").index;

    // Timeout: nothing changed, returns the same index after the full wait.
    let start = Instant::now();
    assert_eq!(store.wait_for_change(Some("Arith"), seen, Duration::from_secs(10)).await, seen);
    assert_eq!(start.elapsed(), Duration::from_secs(10));

    // A change to another service does not wake an Arith watcher...
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let got = store.wait_for_change(Some("Arith"), seen, Duration::from_secs(60)).await;
            (got, Instant::now())
        })
    };
    advance(Duration::from_secs(1)).await;
    store.register(req("Echo", "e", 2)).unwrap();
    advance(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "an Echo change must not wake an Arith watcher");
    // ...a change to Arith does, at once.
    let changed_at = Instant::now();
    let index = store.register(req("Arith", "b", 3)).unwrap();
    let (got, woke_at) = waiter.await.unwrap();
    assert_eq!(got, index);
    assert_eq!(woke_at, changed_at, "woke without any time passing");

    // The global watch wakes on any change.
    let global = store.index();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for_change(None, global, Duration::from_secs(60)).await })
    };
    tokio::task::yield_now().await;
    store.deregister("Echo", "e").unwrap();
    assert_eq!(waiter.await.unwrap(), global + 1);
}

#[tokio::test(start_paused = true)]
async fn a_change_between_two_polls_is_not_missed() {
    let store = Store::new(RegistryConfig::default());
    store.register(req("Arith", "a", 1)).unwrap();
    let seen = store.instances("Arith").index;
    // The watcher is busy elsewhere when the change happens...
    store.register(req("Arith", "b", 2)).unwrap();
    // ...and its next poll with the index it last saw returns at once.
    let start = Instant::now();
    let got = store.wait_for_change(Some("Arith"), seen, Duration::from_secs(60)).await;
    assert!(got > seen);
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Deregistering the last instance is seen too.
    let seen = got;
    store.deregister("Arith", "a").unwrap();
    store.deregister("Arith", "b").unwrap();
    let got = store.wait_for_change(Some("Arith"), seen, Duration::from_secs(60)).await;
    assert_eq!(got, seen + 2);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_index_from_before_a_restart_returns_at_once() {
    let store = Store::new(RegistryConfig::default()); // a "restarted" registry: index 1
    let start = Instant::now();
    let got = store.wait_for_change(Some("Arith"), 500, Duration::from_secs(60)).await;
    assert_eq!(got, 0);
    assert_eq!(start.elapsed(), Duration::ZERO, "the caller must re-list, not hang");
}

#[tokio::test(start_paused = true)]
async fn instances_cut_off_together_are_kept_even_though_their_ttls_run_out_apart() {
    // Ten instances heartbeat every 2 s, each at its own phase (0.2 s apart).
    // The registry is cut off at t = 10 s: their last heartbeats lie spread
    // over the 2 s before that, so their TTLs run out over 2 s as well. The
    // sweeper runs every 1.5 s; none of its sweeps may evict anyone.
    let store = Store::new(RegistryConfig::default());
    let ids: Vec<String> = (0..10).map(|i| format!("i{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        store.register(req("Arith", id, 100 + i as u16)).unwrap();
    }
    let start = Instant::now();
    let step = Duration::from_millis(100);
    let mut swept_at = start;
    while start.elapsed() < Duration::from_secs(30) {
        advance(step).await;
        let t = start.elapsed();
        for (i, id) in ids.iter().enumerate() {
            let phase = Duration::from_millis(200 * i as u64);
            let beats = t < Duration::from_secs(10) && (t.as_millis() + 2000 - phase.as_millis()) % 2000 == 0;
            if beats {
                store.heartbeat("Arith", id).unwrap();
            }
        }
        if swept_at.elapsed() >= Duration::from_millis(1500) {
            swept_at = Instant::now();
            let report = store.sweep();
            assert!(report.evicted.is_empty(), "at {t:?}: {report:?}");
            if t < Duration::from_secs(10) {
                assert!(!report.self_preservation, "at {t:?}: healthy instances must not trigger it: {report:?}");
            }
        }
    }
    assert!(store.self_preservation());
    assert_eq!(store.instances("Arith").instances.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn instances_that_never_heartbeated_neither_count_for_self_preservation_nor_are_kept_by_it() {
    let store = Store::new(RegistryConfig::default());
    for (i, id) in ["live-1", "live-2", "live-3"].iter().enumerate() {
        store.register(req("S", id, 1 + i as u16)).unwrap();
    }
    for i in 0..10 {
        store.register(req("S", &format!("ghost-{i}"), 100 + i)).unwrap();
    }
    // The live ones heartbeat; the ghosts never do. 10 of 13 silent.
    for _ in 0..4 {
        advance(Duration::from_secs(2)).await;
        for id in ["live-1", "live-2", "live-3"] {
            store.heartbeat("S", id).unwrap();
        }
    }
    let report = store.sweep();
    assert_eq!((report.total, report.counted, report.expired), (13, 3, 10));
    assert!(!report.self_preservation);
    assert_eq!(report.evicted.len(), 10);
    assert_eq!(ids(&store, "S"), ["live-1", "live-2", "live-3"]);

    // A partition with ghosts around: the live ones are kept, the ghosts go.
    for i in 0..10 {
        store.register(req("S", &format!("ghost-{i}"), 100 + i)).unwrap();
    }
    advance(Duration::from_secs(7)).await;
    let report = store.sweep();
    assert!(report.self_preservation, "{report:?}");
    assert_eq!(report.evicted.len(), 10);
    assert_eq!(ids(&store, "S"), ["live-1", "live-2", "live-3"]);
    // A re-registration is a renewal: it counts from then on.
    store.register(req("S", "ghost-0", 100)).unwrap();
    store.register(req("S", "ghost-0", 100)).unwrap();
    advance(Duration::from_secs(7)).await;
    let report = store.sweep();
    assert_eq!(report.counted, 4);
    assert!(report.evicted.is_empty(), "ghost-0 re-registered: kept like the others");
}
