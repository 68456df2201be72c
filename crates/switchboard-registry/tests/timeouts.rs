//! The registry's HTTP server against slow and idle clients, over raw
//! sockets on 127.0.0.1:0: partial heads, partial bodies and idle
//! keep-alive connections are closed at their timeouts (and not before),
//! blocking queries outlive every timeout, and the connection cap refuses at
//! once while the registry keeps serving.
//!
//! The timeouts are short here (300 ms); every wait is on the event itself
//! (the socket closing, an answer arriving) under a deadline of seconds.

mod common;

use std::time::{Duration, Instant};

use common::spawn_registry;
use serde_json::Value;
use switchboard_registry::RegistryConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SHORT: Duration = Duration::from_millis(300);
/// Longest any close or answer may take to show up here.
const DEADLINE: Duration = Duration::from_secs(5);

/// Waits until the server closes `stream` (end of stream or a reset),
/// returning what it sent before; panics after [`DEADLINE`].
async fn closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("the connection was not closed within {DEADLINE:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP response (head and a `content-length` body) from `stream`.
async fn response(stream: &mut TcpStream) -> (u16, String, Value) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body = serde_json::from_slice(&got[end + 4..end + 4 + length]).unwrap();
                return (status, head, body);
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await.expect("an answer in time").unwrap();
        assert!(n > 0, "closed before a whole answer: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

fn config() -> RegistryConfig {
    RegistryConfig::default().header_timeout(SHORT).body_timeout(SHORT).idle_timeout(SHORT)
}

#[tokio::test]
async fn a_partial_request_head_is_closed_at_the_header_timeout() {
    // The idle timeout is long here: only the header timeout can close it.
    let reg = spawn_registry(config().idle_timeout(Duration::from_secs(60))).await;
    let mut stream = TcpStream::connect(reg.local_addr()).await.unwrap();
    stream.write_all(b"GET /v1/status HTTP/1.1\r\nHost: registry\r\nX-Slow: ").await.unwrap();
    let began = Instant::now();
    let sent = closed(&mut stream).await;
    let took = began.elapsed();
    println!("partial head closed after {took:?}");
    assert!(sent.is_empty(), "no answer to half a request: {:?}", String::from_utf8_lossy(&sent));
    assert!(took >= SHORT - Duration::from_millis(50), "closed after {took:?}, before the timeout");
    assert!(took < SHORT * 10, "closed after {took:?}");

    // Byte by byte, slower than the timeout allows: closed as well.
    let mut stream = TcpStream::connect(reg.local_addr()).await.unwrap();
    let began = Instant::now();
    for byte in b"GET /v1/status HTTP/1.1\r\n" {
        if stream.write_all(&[*byte]).await.is_err() {
            break; // already closed
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if began.elapsed() > SHORT * 6 {
            break;
        }
    }
    closed(&mut stream).await;
    assert!(began.elapsed() < SHORT * 10, "a trickled head kept the connection {:?}", began.elapsed());
    reg.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_partial_body_gets_408_and_is_closed_at_the_body_timeout() {
    let reg = spawn_registry(config().idle_timeout(Duration::from_secs(60))).await;
    let mut stream = TcpStream::connect(reg.local_addr()).await.unwrap();
    let head =
        "PUT /v1/instances HTTP/1.1\r\nHost: registry\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(br#"{"service": "Arith", "id": "#).await.unwrap();
    let began = Instant::now();
    let (status, head, body) = response(&mut stream).await;
    let took = began.elapsed();
    println!("partial body answered {status} after {took:?}: {body}");
    assert_eq!(status, 408);
    assert_eq!(body["code"], "body_timeout");
    assert!(body["error"].as_str().unwrap().contains("body_timeout"), "{body}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(took >= SHORT - Duration::from_millis(50), "answered after {took:?}, before the timeout");
    assert!(took < SHORT * 10, "answered after {took:?}");
    closed(&mut stream).await;
    assert_eq!(reg.store().instance_count(), 0);
    reg.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout_and_a_blocking_query_is_not() {
    let reg = spawn_registry(config()).await;
    let mut stream = TcpStream::connect(reg.local_addr()).await.unwrap();
    stream.write_all(b"GET /v1/status HTTP/1.1\r\nHost: registry\r\n\r\n").await.unwrap();
    let (status, _, _) = response(&mut stream).await;
    assert_eq!(status, 200);
    let began = Instant::now();
    let rest = closed(&mut stream).await;
    let took = began.elapsed();
    println!("idle connection closed after {took:?}");
    assert!(rest.is_empty());
    assert!(took >= SHORT - Duration::from_millis(50), "closed after {took:?}, before the timeout");
    assert!(took < SHORT * 10, "closed after {took:?}");

    // A blocking query waits four times every timeout, on the same kind of
    // connection, and then is answered; the connection is reused after.
    let mut stream = TcpStream::connect(reg.local_addr()).await.unwrap();
    let began = Instant::now();
    stream.write_all(b"GET /v1/services/Arith?index=1&wait=1200ms HTTP/1.1\r\nHost: registry\r\n\r\n").await.unwrap();
    let (status, _, body) = response(&mut stream).await;
    let waited = began.elapsed();
    println!("blocking query answered after {waited:?}");
    assert_eq!(status, 200, "{body}");
    assert!(waited >= Duration::from_millis(1150), "the query did not wait: {waited:?}");
    stream.write_all(b"GET /v1/status HTTP/1.1\r\nHost: registry\r\n\r\n").await.unwrap();
    assert_eq!(response(&mut stream).await.0, 200, "kept alive after the blocking query");
    reg.shutdown().await.unwrap();
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_gets_503_at_once_and_the_registry_recovers() {
    const CAP: usize = 4;
    let config = RegistryConfig::default()
        .max_connections(CAP)
        .idle_timeout(Duration::from_secs(60))
        .header_timeout(Duration::from_secs(60));
    let reg = spawn_registry(config).await;
    let base = format!("http://{}", reg.local_addr());
    // The attacker's connections: each answered once (so each is surely
    // being served), then left idle, holding its slot.
    let mut attacker = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(reg.local_addr()).await.unwrap();
        stream.write_all(b"GET /v1/status HTTP/1.1\r\nHost: registry\r\n\r\n").await.unwrap();
        assert_eq!(response(&mut stream).await.0, 200);
        attacker.push(stream);
    }

    // One more: refused at once with a clear answer, then closed.
    let mut extra = TcpStream::connect(reg.local_addr()).await.unwrap();
    let began = Instant::now();
    extra.write_all(b"GET /v1/status HTTP/1.1\r\nHost: registry\r\n\r\n").await.unwrap();
    let (status, _, body) = response(&mut extra).await;
    let took = began.elapsed();
    println!("refused in {took:?}: {body}");
    assert_eq!(status, 503);
    assert_eq!(body["code"], "too_many_connections");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("at most 4") && message.contains("max_connections"), "{message}");
    assert!(took < Duration::from_secs(1), "refusing took {took:?}");
    closed(&mut extra).await;
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap();
    let refused = http.get(format!("{base}/v1/status")).send().await.unwrap();
    assert_eq!(refused.status(), 503, "a legitimate caller is refused too while the cap is taken");

    // The attacker goes; a legitimate caller is served again.
    drop(attacker);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = http.get(format!("{base}/v1/status")).send().await.map(|r| r.status());
        if matches!(status, Ok(s) if s == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "still refused after the attacker closed: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reg.shutdown().await.unwrap();
}

/// (Blocking queries in progress answer at once on shutdown:
/// `http.rs`, `shutdown_answers_waiting_blocking_queries`.)
#[tokio::test]
async fn shutdown_does_not_wait_for_connections_between_requests() {
    let config =
        RegistryConfig::default().idle_timeout(Duration::from_secs(60)).header_timeout(Duration::from_secs(60));
    let reg = spawn_registry(config).await;
    let mut idle = TcpStream::connect(reg.local_addr()).await.unwrap();
    idle.write_all(b"GET /v1/status HTTP/1.1\r\nHost: registry\r\n\r\n").await.unwrap();
    assert_eq!(response(&mut idle).await.0, 200);
    let mut slow = TcpStream::connect(reg.local_addr()).await.unwrap();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: reg").await.unwrap();
    let began = Instant::now();
    tokio::time::timeout(DEADLINE, reg.shutdown()).await.expect("shutdown in time").unwrap();
    let took = began.elapsed();
    println!("shutdown took {took:?}");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    closed(&mut idle).await;
    closed(&mut slow).await;
}
