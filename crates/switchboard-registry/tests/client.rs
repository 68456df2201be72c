//! The typed client against a real registry on a loopback port.

use std::time::{Duration, Instant};

use switchboard_registry::client::{ClientError, Heartbeat};
use switchboard_registry::model::{Cursor, RegisterRequest};
use switchboard_registry::{RegistryClient, RegistryServer};

async fn registry() -> (switchboard_registry::RegistryHandle, RegistryClient) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = RegistryServer::builder().build().spawn(listener).unwrap();
    let client = RegistryClient::new(&format!("http://{}", handle.local_addr())).unwrap();
    (handle, client)
}

#[tokio::test]
async fn register_heartbeat_watch_and_deregister() {
    let (handle, client) = registry().await;
    let first = client.register(&RegisterRequest::new("Arith", "a1", "127.0.0.1:9001")).await.unwrap();
    assert_eq!(client.heartbeat("Arith", "a1").await.unwrap(), Heartbeat::Renewed);
    // An instance the registry does not know: the caller must register again.
    assert_eq!(client.heartbeat("Arith", "nobody").await.unwrap(), Heartbeat::Unknown);

    let listed = client.instances("Arith").await.unwrap();
    assert_eq!(listed.instances.len(), 1);
    assert_eq!(listed.index, first.index);

    // A watch from the current index wakes on the next change.
    let watcher = {
        let client = client.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let from = Cursor { index: listed.index, epoch: 0 };
            let list = client.watch("Arith", from, Duration::from_secs(10)).await.unwrap();
            (list, began.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.register(&RegisterRequest::new("Arith", "a2", "127.0.0.1:9002")).await.unwrap();
    let (list, took) = tokio::time::timeout(Duration::from_secs(5), watcher).await.unwrap().unwrap();
    // Only what changed: the new instance.
    assert_eq!(list.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["a2"]);
    assert!(!list.reset && !list.more && list.removed.is_empty());
    assert_eq!(client.instances("Arith").await.unwrap().instances.len(), 2);
    assert!(list.index > listed.index);
    assert!(took < Duration::from_secs(5), "the watch did not wake on the change: {took:?}");

    client.deregister("Arith", "a1").await.unwrap();
    let err = client.deregister("Arith", "a1").await.unwrap_err();
    assert!(matches!(&err, ClientError::Api(e) if e.status == 404), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(client.services().await.unwrap().services[0].instances, 1);
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn errors_say_what_went_wrong() {
    let (handle, client) = registry().await;
    // The registry refuses a bad registration, with its reason.
    let err = client.register(&RegisterRequest::new("Arith", "a1", "no-port")).await.unwrap_err();
    match &err {
        ClientError::Api(e) => assert!(e.status.is_client_error() && e.message.contains("address"), "{e:?}"),
        other => panic!("expected an API error, got {other:?}"),
    }
    handle.shutdown().await.unwrap();

    // Nothing listening: unreachable, and worth retrying later.
    let err = client.services().await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());

    assert!(matches!(RegistryClient::new("etcd://127.0.0.1:2379"), Err(ClientError::BadUrl { .. })));
    assert!(matches!(RegistryClient::new("not a url"), Err(ClientError::BadUrl { .. })));
}
