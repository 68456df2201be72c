//! Faults and edges around handlers and connection lifetime: a handler that
//! panics answers Internal while its connection and the server carry on (on
//! the inline path, panic on the first poll, and the spawned path, panic
//! after the handler first waited); shutdown stays prompt when clients are
//! idle or have just stopped calling.

mod common;

use std::time::Duration;

use common::serve;
use switchboard::server::handler_fn;
use switchboard::Channel;
use switchboard::{Client, Code, Error, Server, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handlers_answer_internal_and_the_connection_survives() {
    let server = Server::builder().build();
    let router = server.router();
    router
        .add_method(
            "Faulty.Now",
            handler_fn(|x: u32| async move {
                if x > 0 {
                    panic!("boom before any await");
                }
                Ok::<_, Status>(x)
            }),
        )
        .unwrap();
    router
        .add_method(
            "Faulty.Later",
            handler_fn(|x: u32| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if x > 0 {
                    panic!("boom after an await");
                }
                Ok::<_, Status>(x)
            }),
        )
        .unwrap();
    let addr = serve(&server).await.to_string();
    let client = Client::builder(addr).timeout(Some(Duration::from_secs(5))).connect().await.unwrap();

    for method in ["Faulty.Now", "Faulty.Later"] {
        let err = client.call::<u32, u32>(method, &1).await.expect_err("a panicking handler fails the call");
        match &err {
            Error::Status(s) => {
                assert_eq!(s.code(), Code::Internal, "{err}");
                assert!(s.message().contains(method), "the message names the method: {err}");
            }
            other => panic!("{method}: expected an Internal status, got {other:?}"),
        }
        // The same connection still serves calls.
        assert_eq!(client.call::<u32, u32>(method, &0).await.unwrap(), 0);
    }
    assert!(server.shutdown().await.drained);
}

/// A client that is connected but idle answers the draining server's ping,
/// so shutdown does not wait out its grace period for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_with_an_idle_client_connected() {
    shutdown_with_idle_client().await;
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_is_prompt_with_an_idle_client_connected_single_threaded() {
    shutdown_with_idle_client().await;
}

async fn shutdown_with_idle_client() {
    let (server, client) = id_server().await;
    for i in 0..10 {
        assert_eq!(client.call::<u32, u32>("Svc.Id", &i).await.unwrap(), i);
    }
    tokio::time::sleep(Duration::from_millis(50)).await; // the client goes idle
    let began = std::time::Instant::now();
    assert!(server.shutdown().await.drained);
    let took = began.elapsed();
    assert!(took < Duration::from_millis(500), "shutdown waited {took:?} for an idle client");
    drop(client);
}

/// Regression: shutdown right after concurrent traffic ends. The client's
/// background reader must still be watching the (now quiet) connection to
/// answer the drain ping; a lost wake-up once left it parked, and shutdown
/// waited out its whole grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_is_prompt_right_after_concurrent_traffic() {
    let (server, client) = id_server().await;
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..2000u32 {
                    assert_eq!(client.call::<u32, u32>("Svc.Id", &(i + t)).await.unwrap(), i + t);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let began = std::time::Instant::now();
    assert!(server.shutdown().await.drained);
    let took = began.elapsed();
    assert!(took < Duration::from_millis(500), "shutdown waited {took:?}");
}

/// A server answering `Svc.Id` (returns its argument) on a loopback port, and
/// a client connected to it.
async fn id_server() -> (Server, Client) {
    let server = Server::builder().build();
    server.router().add_method("Svc.Id", handler_fn(|x: u32| async move { Ok::<_, Status>(x) })).unwrap();
    let addr = serve(&server).await.to_string();
    (server, Client::connect(addr).await.unwrap())
}
