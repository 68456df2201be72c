//! A handler that panics answers Internal; its connection and the server
//! carry on. Covers both the inline path (panic on the first poll) and the
//! spawned path (panic after the handler first waited).

use std::time::Duration;

use switchboard::server::handler_fn;
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(server.clone().serve(listener));
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
