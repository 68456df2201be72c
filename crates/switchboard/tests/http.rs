//! The HTTP row of the protocol layer on a real socket: routes added with
//! `ServerBuilder::http_route` answer beside Switchboard frames on one port,
//! keep-alive follows the request's version, and bad or oversized requests
//! get their status code and a closed connection.

mod common;

use std::time::Duration;

use common::{serve, start};
use switchboard::server::http::{HttpResponse, HttpRoute, MAX_BODY, MAX_HEAD};
use switchboard::server::{handler_fn, ServerConfig};
use switchboard::Channel;
use switchboard::{Client, Server, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server held to `config` with two HTTP routes and `Math.Double`
/// (start it with `common::start`).
fn server(config: ServerConfig) -> Server {
    let server = Server::builder()
        .config(config)
        .http_route(HttpRoute::respond("GET", "/hello", |req| async move {
            HttpResponse::text(200, format!("hello {}", req.query().unwrap_or("you")))
        }))
        .http_route(HttpRoute::respond("POST", "/echo", |req| async move {
            HttpResponse::new(200, req.body().clone()).header("Content-Type", "application/octet-stream")
        }))
        .build();
    server
        .router()
        .add_method("Math.Double", handler_fn(|x: i64| async move { Ok::<_, Status>(x * 2) }))
        .expect("valid name");
    server
}

/// Reads one response (head and `Content-Length` body) off `stream`.
async fn response(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await.expect("no stall");
        if read.expect("read") == 0 {
            return None;
        }
        bytes.push(byte[0]);
    }
    let head = String::from_utf8(bytes).expect("text head");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |n| n.trim().parse().expect("a length"));
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.expect("body");
    Some((head, body))
}

/// Whether the server closes `stream` (reads to its end within 5 s).
async fn closes(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await.is_ok_and(|r| r.is_ok())
}

#[tokio::test]
async fn routes_answer_beside_native_calls_on_one_port_with_keep_alive() {
    let (server, addr) = start(server(ServerConfig::default())).await;
    let mut http = TcpStream::connect(&addr).await.expect("connect");
    // Two requests in one write: both answered, in order, on one connection.
    http.write_all(
        b"GET /hello?world HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde",
    )
    .await
    .expect("write");
    let (head, body) = response(&mut http).await.expect("first answer");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(!head.contains("Connection: close"), "{head}");
    assert_eq!(body, b"hello world");
    let (head, body) = response(&mut http).await.expect("second answer");
    assert!(head.contains("Content-Type: application/octet-stream\r\n"), "{head}");
    assert_eq!(body, b"abcde");

    // Meanwhile a native client on the same port.
    let client = Client::connect(addr.clone()).await.expect("connect");
    let doubled: i64 = client.call("Math.Double", &21i64).await.expect("call");
    assert_eq!(doubled, 42);

    // `Connection: close` is honoured.
    http.write_all(b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n").await.expect("write");
    let (head, body) = response(&mut http).await.expect("third answer");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert_eq!(body, b"hello you");
    assert!(closes(&mut http).await, "the server kept a Connection: close connection open");
    server.shutdown().await;
}

#[tokio::test]
async fn http_1_0_closes_after_one_answer_unless_it_asks_to_keep_alive() {
    let (server, addr) = start(server(ServerConfig::default())).await;
    let mut once = TcpStream::connect(&addr).await.expect("connect");
    once.write_all(b"GET /hello HTTP/1.0\r\n\r\n").await.expect("write");
    let (head, _) = response(&mut once).await.expect("answer");
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n") && head.contains("Connection: close\r\n"), "{head}");
    assert!(closes(&mut once).await);

    let mut kept = TcpStream::connect(&addr).await.expect("connect");
    for _ in 0..2 {
        kept.write_all(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.expect("write");
        let (head, _) = response(&mut kept).await.expect("answer");
        assert!(head.contains("Connection: keep-alive\r\n"), "{head}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bad_and_oversized_requests_get_their_status_and_a_close() {
    let (server, addr) = start(server(ServerConfig::default())).await;
    let long_head = format!("GET /hello HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let huge_body = format!("POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
    let cases: [(&[u8], &str); 7] = [
        (b"GET /nowhere HTTP/1.1\r\n\r\n", "HTTP/1.1 404 "),
        (b"POST /hello HTTP/1.1\r\n\r\n", "HTTP/1.1 405 "),
        (b"GET /hello HTTP/9.9\r\n\r\n", "HTTP/1.1 400 "),
        (b"GET /hello HTTP/1.1\r\nno colon here\r\n\r\n", "HTTP/1.1 400 "),
        (long_head.as_bytes(), "HTTP/1.1 431 "),
        (huge_body.as_bytes(), "HTTP/1.1 413 "),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 501 "),
    ];
    for (request, status) in cases {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let (head, _) = response(&mut stream).await.expect("an answer");
        assert!(head.starts_with(status), "{:?} got {head}", String::from_utf8_lossy(&request[..20]));
        assert!(closes(&mut stream).await, "{status}: not closed");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_head_or_body_that_stalls_is_answered_408_at_the_frame_timeout() {
    let config = ServerConfig::default()
        .frame_timeout(Duration::from_millis(300))
        .idle_timeout(Some(Duration::from_millis(300)));
    let (server, addr) = start(server(config)).await;
    // After one whole request, a second that stops halfway.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(b"GET /hello HTTP/1.1\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .expect("write");
    response(&mut stream).await.expect("the first answer");
    let (head, _) = response(&mut stream).await.expect("a 408");
    assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
    assert!(closes(&mut stream).await);
    // A connection idle between requests is closed quietly.
    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    idle.write_all(b"GET /hello HTTP/1.1\r\n\r\n").await.expect("write");
    response(&mut idle).await.expect("answer");
    assert!(closes(&mut idle).await, "an idle keep-alive connection was not closed");
    server.shutdown().await;
}

#[tokio::test]
async fn without_routes_http_is_not_served() {
    let server = Server::builder().build();
    let addr = serve(&server).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    // Closed unanswered (reset, since its request was left unread).
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}, answered {:?}", String::from_utf8_lossy(&answer));
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_the_memory_budget_cannot_cover_is_refused_503() {
    let (server, addr) = start(server(ServerConfig::default().memory_budget(128 << 10))).await;
    // Within the budget (the first 64 KiB are free): echoed whole.
    let body = vec![b'x'; 150 << 10];
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(format!("POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes())
        .await
        .expect("write");
    stream.write_all(&body).await.expect("write");
    let (head, echoed) = response(&mut stream).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(echoed.len(), body.len());
    // Past it: refused from the header, before any of the body is held.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 600000\r\n\r\n").await.expect("write");
    let (head, _) = response(&mut stream).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert!(closes(&mut stream).await);
    server.shutdown().await;
}
