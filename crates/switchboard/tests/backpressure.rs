//! Flow control: a connection over its call limit is paused, not refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard::server::{handler_fn, ServerConfig};
use switchboard::Channel;
use switchboard::{Client, Server, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_per_connection_limit_wait_instead_of_failing() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let server = Server::builder().config(ServerConfig::default().max_calls_per_connection(2)).build();
    let (r, p) = (Arc::clone(&running), Arc::clone(&peak));
    server
        .router()
        .add_method(
            "Slow.Work",
            handler_fn(move |n: u32| {
                let (running, peak) = (Arc::clone(&r), Arc::clone(&p));
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, Status>(n * 2)
                }
            }),
        )
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(server.clone().serve(listener));

    let client = Client::connect(addr).await.unwrap();
    let calls = (0..10u32).map(|n| {
        let client = client.clone();
        tokio::spawn(async move { client.call::<u32, u32>("Slow.Work", &n).await })
    });
    let results = tokio::time::timeout(Duration::from_secs(10), futures_join(calls.collect())).await.unwrap();
    for (n, result) in results.into_iter().enumerate() {
        assert_eq!(result.unwrap().unwrap(), n as u32 * 2);
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2, "the server ran more calls at once than its limit");
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await);
    }
    out
}
