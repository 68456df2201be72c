//! `BuiltinConfigStore`, the built-in registry's `ConfigStore`, against real
//! registries on loopback ports: the trait's operations and their errors,
//! and a watch that follows puts and deletes, rides out a registry restart
//! and reports exactly what differs afterwards, and stops when dropped.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bind;
use switchboard::backoff::Backoff;
use switchboard::config::{ConfigEntry, ConfigError, ConfigEvent, ConfigStore, ConfigWatch, MAX_VALUE_LEN};
use switchboard_registry::{BuiltinConfigStore, RegistryClient, RegistryConfig, RegistryHandle, RegistryServer, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A registry on `addr` serving `store`.
async fn serve(addr: &str, store: Arc<Store>) -> RegistryHandle {
    RegistryServer::builder().store(store).build().spawn(bind(addr).await).expect("registry starts")
}

fn new_store(keys: &[(&str, &str)]) -> Arc<Store> {
    let store = Arc::new(Store::new(RegistryConfig::default()));
    for (key, value) in keys {
        store.config_put(key, value).expect("valid key");
    }
    store
}

/// A config store that retries an unreachable registry every 20–60 ms.
fn quick(url: &str) -> BuiltinConfigStore {
    BuiltinConfigStore::new(RegistryClient::new(url).expect("url")).backoff(
        Backoff::default()
            .initial(Duration::from_millis(20))
            .max(Duration::from_millis(40))
            .multiplier(2.0)
            .jitter(0.5),
    )
}

async fn next(watch: &mut ConfigWatch) -> Vec<ConfigEvent> {
    tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("a batch in time").expect("the watch runs")
}

async fn quiet(watch: &mut ConfigWatch, for_: Duration) {
    if let Ok(batch) = tokio::time::timeout(for_, watch.next()).await {
        panic!("expected nothing, got {batch:?}");
    }
}

fn put(store: &Store, key: &str) -> ConfigEvent {
    ConfigEvent::Put(store.config_get(key).expect("valid key").expect("the key exists"))
}

fn deleted(key: &str) -> ConfigEvent {
    ConfigEvent::Deleted { key: key.to_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trait_gets_puts_lists_and_deletes_through_from_url() {
    let registry = serve("127.0.0.1:0", new_store(&[("other/x", "9")])).await;
    let url = format!("http://{}", registry.local_addr());
    let config: Arc<dyn ConfigStore> = switchboard_registry::from_url(&url).expect("url").config;

    let rev = config.put("app/a", "1").await.expect("put");
    assert_eq!(rev, registry.store().index());
    assert_eq!(config.put("app/a", "1").await, Ok(rev), "the same value: the same revision");
    assert_eq!(config.get("app/a").await, Ok(Some(ConfigEntry::new("app/a", "1", rev))));
    assert_eq!(config.get("app/none").await, Ok(None));
    let b = config.put("app/b", "2").await.expect("put");
    let snapshot = config.list("app/").await.expect("list");
    assert_eq!(snapshot.entries, [ConfigEntry::new("app/a", "1", rev), ConfigEntry::new("app/b", "2", b)]);
    assert_eq!(snapshot.revision, registry.store().index());
    assert_eq!(config.list("").await.expect("list").entries.len(), 3);

    assert_eq!(config.delete("app/a").await, Ok(true));
    assert_eq!(config.delete("app/a").await, Ok(false));
    assert_eq!(registry.store().config_get("app/a"), Ok(None));

    // Refusals, as the trait names them.
    assert!(matches!(config.put("/abs", "x").await, Err(ConfigError::InvalidKey { key, .. }) if key == "/abs"));
    assert!(matches!(config.list("a//").await, Err(ConfigError::InvalidKey { .. })));
    let big = "x".repeat(MAX_VALUE_LEN + 1);
    assert_eq!(config.put("app/big", &big).await, Err(ConfigError::TooLarge { len: MAX_VALUE_LEN + 1 }));
    registry.shutdown().await.expect("registry stops");

    // A full registry: the store's own message, as a backend error.
    let store = Arc::new(Store::new(RegistryConfig::default().max_config_keys(1)));
    let registry = RegistryServer::builder().store(store).build().spawn(bind("127.0.0.1:0").await).expect("starts");
    let config = switchboard_registry::from_url(&format!("http://{}", registry.local_addr())).expect("url").config;
    config.put("k1", "v").await.expect("room for one");
    let full = config.put("k2", "v").await;
    assert!(matches!(&full, Err(ConfigError::Backend(m)) if m.contains("too many config keys")), "{full:?}");
    assert!(!full.is_err_and(|e| e.is_transient()));

    // Nobody there: unavailable (worth retrying); a bad key is refused
    // before any request goes out.
    let addr = registry.local_addr();
    registry.shutdown().await.expect("registry stops");
    let config = switchboard_registry::from_url(&format!("http://{addr}")).expect("url").config;
    let gone = config.get("k1").await;
    assert!(matches!(&gone, Err(ConfigError::Unavailable(_))), "{gone:?}");
    assert!(gone.is_err_and(|e| e.is_transient()));
    assert!(matches!(config.delete("a/../b").await, Err(ConfigError::InvalidKey { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_follows_puts_and_deletes_and_reports_exactly_the_diff_across_a_registry_restart() {
    let first = new_store(&[("app/a", "1"), ("app/b", "2"), ("other/x", "9")]);
    let registry = serve("127.0.0.1:0", first.clone()).await;
    let addr = registry.local_addr().to_string();
    let config = quick(&format!("http://{addr}"));

    // The first batch: every key under the prefix; an empty prefix still
    // gets its (empty) first batch.
    let mut watch = config.watch("app/");
    assert_eq!(next(&mut watch).await, [put(&first, "app/a"), put(&first, "app/b")]);
    let mut nothing = config.watch("none/");
    assert_eq!(next(&mut nothing).await, []);

    // Changes under the prefix, one batch each; elsewhere, or the same value
    // again, nothing.
    first.config_put("app/c", "3").expect("put");
    assert_eq!(next(&mut watch).await, [put(&first, "app/c")]);
    first.config_put("other/y", "8").expect("put");
    first.config_put("app/a", "1").expect("put");
    quiet(&mut watch, Duration::from_millis(300)).await;
    first.config_put("app/a", "11").expect("put");
    assert_eq!(next(&mut watch).await, [put(&first, "app/a")]);
    first.config_delete("app/b").expect("delete");
    assert_eq!(next(&mut watch).await, [deleted("app/b")]);
    // Now app/ holds a = 11 and c = 3.

    // The registry goes away: the watch reports nothing meanwhile.
    registry.shutdown().await.expect("registry stops");
    quiet(&mut watch, Duration::from_millis(800)).await;

    // A new registry on the same address, holding a different set: a
    // changed, b still gone, c missing, d new. The watch reports exactly that.
    let second = new_store(&[("app/a", "new"), ("app/d", "4"), ("other/z", "7")]);
    let restarted = Instant::now();
    let registry = serve(&addr, second.clone()).await;
    assert_eq!(next(&mut watch).await, [deleted("app/c"), put(&second, "app/a"), put(&second, "app/d")]);
    let took = restarted.elapsed();
    assert!(took < Duration::from_secs(2), "the watch took {took:?} to see the new registry");
    quiet(&mut watch, Duration::from_millis(300)).await;
    // The other watch had nothing under none/ then and has nothing now.
    quiet(&mut nothing, Duration::from_millis(100)).await;

    // And it follows the new registry from there.
    second.config_put("app/e", "5").expect("put");
    assert_eq!(next(&mut watch).await, [put(&second, "app/e")]);
    second.config_delete("app/a").expect("delete");
    assert_eq!(next(&mut watch).await, [deleted("app/a")]);
    registry.shutdown().await.expect("registry stops");
}

#[tokio::test]
async fn a_watch_with_an_invalid_prefix_ends_at_once() {
    let config = BuiltinConfigStore::new(RegistryClient::new("http://127.0.0.1:9").expect("url"));
    let mut watch = config.watch("/abs");
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("ends in time");
    assert_eq!(end, None);
}

/// Reads one request head (a GET has no body) from `sock`.
async fn read_head(sock: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n =
            tokio::time::timeout(Duration::from_secs(5), sock.read(&mut byte)).await.expect("a request").expect("read");
        assert_eq!(n, 1, "connection closed mid-request: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Dropping the watch stops its task: the blocking query it had open is
/// abandoned and its connection closed. A bare TCP listener stands in for
/// the registry, so the test sees the connection itself.
#[tokio::test]
async fn dropping_the_watch_abandons_its_blocking_query() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = BuiltinConfigStore::new(
        RegistryClient::new(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url"),
    );
    let mut watch = config.watch("app/");

    let (mut sock, _) =
        tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.expect("connects").expect("accept");
    let list = read_head(&mut sock).await;
    assert!(list.starts_with("GET /v1/config?prefix=app%2F HTTP/1.1\r\n"), "{list}");
    let body = r#"{"entries":[{"key":"app/a","value":"1","revision":5}],"index":7}"#;
    let reply =
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    sock.write_all(reply.as_bytes()).await.expect("write");
    assert_eq!(next(&mut watch).await, [ConfigEvent::Put(ConfigEntry::new("app/a", "1", 5))]);

    // The blocking query from index 7 (on the same kept-alive connection);
    // the fake registry never answers it.
    let poll = read_head(&mut sock).await;
    assert!(poll.starts_with("GET /v1/config?prefix=app%2F&index=7&wait=30000ms "), "{poll}");

    drop(watch);
    let mut rest = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the watcher kept its query open: {closed:?}");
}
