//! `Server::serve_until`: a service's whole life in one call, over a real
//! socket: it serves until told to stop, lets the call in flight finish,
//! and then no longer accepts connections.

use std::time::Duration;

use switchboard::server::handler_fn;
use switchboard::{Channel, Client, Server, Status};
use tokio::sync::{oneshot, Notify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_until_serves_then_drains_the_call_in_flight_and_stops_accepting() {
    let started = std::sync::Arc::new(Notify::new());
    let server = Server::builder().build();
    let s = started.clone();
    server
        .router()
        .add_method(
            "Slow.Double",
            handler_fn(move |n: u64| {
                let s = s.clone();
                async move {
                    s.notify_one();
                    // Long enough to be in flight when the stop comes.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, Status>(n * 2)
                }
            }),
        )
        .expect("register");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let life = tokio::spawn(server.serve_until(listener, async move {
        let _ = stopped.await;
    }));

    let client = Client::connect(addr.clone()).await.expect("connect");
    let call = tokio::spawn(async move { client.call::<_, u64>("Slow.Double", &21u64).await });
    started.notified().await;
    stop.send(()).expect("serve_until is waiting");
    let report = life.await.expect("task").expect("served");
    assert!(report.drained, "the call in flight finished");
    assert_eq!(call.await.expect("task").expect("answered"), 42);
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err(), "no longer listening");
}
