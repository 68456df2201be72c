//! One port, four protocols: what the first bytes of a connection select,
//! and that bad input in any of them ends only its own connection.

mod common;

use std::time::Duration;

use common::start;
use switchboard::go::NetRpc;
use switchboard::server::handler_fn;
use switchboard::Channel;
use switchboard::{Client, Server, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server speaking Switchboard, Go's gob and JSON-RPC and HTTP CONNECT
/// on one port, with `Arith.Multiply` (start it with `common::start`).
fn server() -> Server {
    let server = Server::builder().with(NetRpc::default()).build();
    server
        .router()
        .add_method("Arith.Multiply", handler_fn(|(a, b): (i64, i64)| async move { Ok::<_, Status>(a * b) }))
        .expect("valid name");
    server
}

/// Sends `bytes`, then reads until the server closes the connection (or 5 s
/// pass); returns what it answered.
async fn exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let _ = stream.shutdown().await; // no more input: the server must not wait for it
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server neither answered nor closed after {:?}", String::from_utf8_lossy(bytes));
    answer
}

#[tokio::test]
async fn http_other_than_go_rpc_connect_is_answered_404_or_405() {
    let (server, addr) = start(server()).await;
    let answer = exchange(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with(b"HTTP/1.1 404 Not Found\r\n"), "{}", String::from_utf8_lossy(&answer));
    let answer = exchange(&addr, b"CONNECT /elsewhere HTTP/1.0\n\n").await;
    assert!(answer.starts_with(b"HTTP/1.0 404 Not Found\r\n"), "{}", String::from_utf8_lossy(&answer));
    let answer = String::from_utf8(exchange(&addr, b"GET /_goRPC_ HTTP/1.0\r\n\r\n").await).expect("text");
    assert!(answer.starts_with("HTTP/1.0 405 Method Not Allowed\r\n"), "{answer}");
    assert!(answer.contains("\r\nAllow: CONNECT\r\n"), "{answer}");
    let answer = exchange(&addr, b"CONNECT /_goRPC_ HTTP/1.0\n\n").await;
    assert_eq!(answer, b"HTTP/1.0 200 Connected to Go RPC\n\n");
    server.shutdown().await;
}

#[tokio::test]
async fn json_rpc_answers_in_go_s_shape_and_bad_json_closes_the_connection() {
    let (server, addr) = start(server()).await;
    let answer = exchange(&addr, b"{\"method\":\"Arith.Multiply\",\"params\":[[7,8]],\"id\":3}\n").await;
    assert_eq!(answer, b"{\"id\":3,\"result\":56,\"error\":null}\n");
    // Two requests in one write, the second an unknown method; answered in turn.
    let answer = exchange(
        &addr,
        b"{\"method\":\"Arith.Multiply\",\"params\":[[2,3]],\"id\":1} {\"method\":\"Arith.Nope\",\"params\":[1],\"id\":2}",
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("{\"id\":1,\"result\":6,\"error\":null}"), "{text}");
    assert!(text.contains("{\"id\":2,\"result\":null,\"error\":\"rpc: can't find method Arith.Nope\"}"), "{text}");
    // Missing params, as Go's server says.
    let answer = exchange(&addr, b"{\"method\":\"Arith.Multiply\",\"id\":9}").await;
    assert!(String::from_utf8_lossy(&answer).contains("missing params"));
    // Garbage: closed without an answer.
    assert!(exchange(&addr, b"{\"method\": nope!!}").await.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn random_bytes_after_any_prefix_never_take_the_server_down() {
    let (server, addr) = start(server()).await;
    let native = Client::connect(addr.clone()).await.expect("connect");
    let prefixes: [&[u8]; 6] = [b"", b"{", b"CONNECT /_goRPC_ HTTP/1.0\n\n", b"\x2f\xff\x81", b"\xc5\xb0", b"\xc5\x00"];
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..120 {
        let prefix = prefixes[round % prefixes.len()];
        let mut bytes = prefix.to_vec();
        bytes.extend((0..rng.usize(1..2048)).map(|_| rng.u8(..)));
        exchange(&addr, &bytes).await;
    }
    // A length the gob stream announces but never sends: the connection is
    // closed at end of input, not waited on.
    exchange(&addr, b"\xfc\x3f\xff\xff\xff").await;
    assert_eq!(native.call::<(i64, i64), i64>("Arith.Multiply", &(6, 7)).await.expect("still serving"), 42);
    server.shutdown().await;
}

#[tokio::test]
async fn a_protocol_prefix_split_across_writes_is_still_recognised() {
    let (server, addr) = start(server()).await;
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    // "CONN" cannot be told from an HTTP method yet; the rest comes later.
    stream.write_all(b"CONN").await.expect("write");
    tokio::time::sleep(Duration::from_millis(30)).await;
    stream.write_all(b"ECT /_goRPC_ HTTP/1.0\n\n").await.expect("write");
    let mut answer = [0u8; 34];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
        .await
        .expect("answered")
        .expect("read");
    assert_eq!(&answer, b"HTTP/1.0 200 Connected to Go RPC\n\n");
    // And native clients are unaffected.
    let native = Client::connect(addr.clone()).await.expect("connect");
    assert_eq!(native.call::<(i64, i64), i64>("Arith.Multiply", &(3, 3)).await.expect("native"), 9);
    server.shutdown().await;
}
