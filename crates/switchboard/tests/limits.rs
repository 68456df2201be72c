//! The per-connection limits of `ServerConfig` over real sockets, with short
//! limits so each test takes well under a second or two: the handshake,
//! frame and idle timeouts, the writer's stall limit, the per-peer cap, the
//! memory budget and the metadata limits. (The hostile-peer suite in
//! switchboard-examples runs the same attacks at full size on a server
//! process with the default limits.)

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use switchboard::frame::{Decoded, Frame, FrameDecoder, Head, Kind, Metadata, DEFAULT_MAX_FRAME, FLAG_REFUSED};
use switchboard::server::{handler_fn, ServerBuilder};
use switchboard::Channel;
use switchboard::{Client, Code, Server, Status};

/// Upper bound for any single wait.
const WAIT: Duration = Duration::from_secs(5);

/// `builder`'s server with `Svc.A` (plus one) and `Svc.Big` (that many
/// bytes), on a loopback port.
async fn start(builder: ServerBuilder) -> (Server, SocketAddr) {
    let server = builder.build();
    server.router().add_method("Svc.A", handler_fn(|x: u64| async move { Ok::<_, Status>(x + 1) })).expect("register");
    server
        .router()
        .add_method(
            "Svc.Big",
            handler_fn(|n: u64| async move { Ok::<_, Status>(serde_bytes::ByteBuf::from(vec![7u8; n as usize])) }),
        )
        .expect("register");
    let addr = common::serve(&server).await;
    (server, addr)
}

fn encode<T: switchboard::Encode + ?Sized>(value: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    value.encode(switchboard::Codec::Binary, &mut buf).expect("encode");
    buf
}

fn request(id: u64, method: &'static str, payload: &[u8]) -> BytesMut {
    let mut meta = Metadata::default();
    meta.set_method(method);
    let mut buf = BytesMut::new();
    Head { codec: switchboard::Codec::Binary.id(), ..Head::new(Kind::Request, id) }
        .encode(&mut buf, &meta, payload)
        .expect("encode");
    buf
}

fn ping(id: u64) -> BytesMut {
    let mut buf = BytesMut::new();
    Head::new(Kind::Ping, id).encode(&mut buf, &Metadata::default(), &[]).expect("encode");
    buf
}

struct Raw {
    stream: TcpStream,
    decoder: FrameDecoder,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw::from(TcpStream::connect(addr).await.expect("connect"))
    }

    async fn connect_from(from: &str, addr: SocketAddr) -> Raw {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(format!("{from}:0").parse().expect("address")).expect("bind");
        Raw::from(socket.connect(addr).await.expect("connect"))
    }

    fn from(stream: TcpStream) -> Raw {
        Raw { stream, decoder: FrameDecoder::new(DEFAULT_MAX_FRAME), buf: BytesMut::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame, or `None` once the server has closed the connection.
    async fn next_frame(&mut self) -> Option<Frame> {
        let read = async {
            loop {
                match self.decoder.decode(&mut self.buf) {
                    Ok(Some(Decoded::Frame(frame))) => return Some(frame),
                    Ok(Some(other)) => panic!("unexpected {other:?}"),
                    Ok(None) => {}
                    Err(e) => panic!("corrupt frame from the server: {e}"),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(WAIT, read).await.expect("the server answers or closes in time")
    }

    /// Reads until the server closes; returns the kinds of frames it sent.
    async fn until_closed(&mut self) -> Vec<Kind> {
        let mut kinds = Vec::new();
        while let Some(frame) = self.next_frame().await {
            kinds.push(frame.head.kind);
        }
        kinds
    }
}

#[tokio::test]
async fn a_connection_that_sends_no_whole_frame_is_closed_after_the_handshake_timeout() {
    let limit = Duration::from_millis(300);
    let (_server, addr) = start(Server::builder().handshake_timeout(limit)).await;
    let start = Instant::now();
    let mut silent = Raw::connect(addr).await;
    let mut partial = Raw::connect(addr).await;
    partial.send(&request(1, "Svc.A", &encode(&1u64))[..10]).await;
    assert!(silent.until_closed().await.is_empty());
    assert!(partial.until_closed().await.is_empty());
    let took = start.elapsed();
    assert!(took >= limit, "closed after {took:?}, before the limit");
    // A client that speaks at once is served.
    let client = Client::connect(addr.to_string()).await.expect("connect");
    assert_eq!(client.call::<_, u64>("Svc.A", &1u64).await.expect("call"), 2);
}

#[tokio::test]
async fn a_frame_started_and_not_finished_is_dropped_after_the_frame_timeout() {
    let limit = Duration::from_millis(300);
    let (_server, addr) = start(Server::builder().frame_timeout(limit)).await;
    let mut raw = Raw::connect(addr).await;
    raw.send(&ping(1)).await;
    assert_eq!(raw.next_frame().await.map(|f| f.head.kind), Some(Kind::Pong));
    let frame = request(2, "Svc.A", &encode(&1u64));
    let start = Instant::now();
    raw.send(&frame[..frame.len() - 1]).await;
    assert!(raw.until_closed().await.is_empty());
    assert!(start.elapsed() >= limit, "closed after {:?}", start.elapsed());
}

#[tokio::test]
async fn an_idle_connection_is_sent_away_and_pings_keep_one_open() {
    let idle = Duration::from_millis(400);
    let (_server, addr) = start(Server::builder().idle_timeout(Some(idle))).await;

    // Pinging every 100 ms for three idle periods keeps the connection.
    let mut pinger = Raw::connect(addr).await;
    for id in 0..12 {
        pinger.send(&ping(id)).await;
        let pong = pinger.next_frame().await.expect("still open");
        assert_eq!((pong.head.kind, pong.head.id), (Kind::Pong, id));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then silence: a go-away (and the drain ping) before the close.
    let start = Instant::now();
    let kinds = pinger.until_closed().await;
    assert_eq!(kinds.first(), Some(&Kind::GoAway), "{kinds:?}");
    assert!(start.elapsed() >= idle - Duration::from_millis(150), "closed after {:?}", start.elapsed());

    // A Switchboard client moves to a new connection and loses nothing.
    let client = Client::connect(addr.to_string()).await.expect("connect");
    assert_eq!(client.call::<_, u64>("Svc.A", &1u64).await.expect("call"), 2);
    tokio::time::sleep(idle * 3).await; // the server closes the idle connection meanwhile
    assert_eq!(client.call::<_, u64>("Svc.A", &2u64).await.expect("the call after the idle close"), 3);
}

#[tokio::test]
async fn a_peer_that_takes_none_of_its_answers_is_dropped_after_the_frame_timeout() {
    let limit = Duration::from_millis(300);
    let (_server, addr) = start(Server::builder().frame_timeout(limit)).await;
    let mut raw = Raw::connect(addr).await;
    // 64 answers of 1 MiB: more than the kernel's socket buffers hold.
    for id in 1..=64 {
        raw.send(&request(id, "Svc.Big", &encode(&(1u64 << 20)))).await;
    }
    // Take nothing for a while: the server gives up on the connection. What
    // it had written reaches us, then the end of the stream.
    tokio::time::sleep(limit * 4).await;
    let mut received = 0;
    let mut sink = vec![0u8; 1 << 20];
    let drained = tokio::time::timeout(WAIT, async {
        loop {
            match raw.stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "still open after {received} bytes: the server kept waiting for a peer that reads nothing"
    );
    assert!(received < 64 << 20, "the server wrote all {received} bytes");
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let (_server, addr) = start(Server::builder().max_connections(10).max_connections_per_peer(2)).await;
    let mut held = vec![Raw::connect_from("127.0.0.2", addr).await, Raw::connect_from("127.0.0.2", addr).await];
    for raw in &mut held {
        raw.send(&ping(1)).await;
        assert_eq!(raw.next_frame().await.map(|f| f.head.kind), Some(Kind::Pong));
    }
    let mut third = Raw::connect_from("127.0.0.2", addr).await;
    let refusal = third.next_frame().await.expect("a go-away");
    assert_eq!((refusal.head.kind, refusal.head.status), (Kind::GoAway, Code::ResourceExhausted.as_u16()));
    assert!(refusal.meta.message().unwrap_or_default().contains("from one address"), "{:?}", refusal.meta.message());
    // Another address still gets in.
    let client = Client::connect(addr.to_string()).await.expect("connect");
    assert_eq!(client.call::<_, u64>("Svc.A", &1u64).await.expect("call"), 2);
}

#[tokio::test]
async fn a_frame_the_memory_budget_cannot_cover_is_refused_from_its_header() {
    let (_server, addr) = start(Server::builder().memory_budget(1 << 20)).await;
    let mut raw = Raw::connect(addr).await;
    let big = request(5, "Svc.A", &vec![0u8; 4 << 20]);
    // The header and a little more: the refusal comes before the rest is sent.
    raw.send(&big[..4096]).await;
    let refused = raw.next_frame().await.expect("an answer");
    assert_eq!(refused.head.id, 5);
    assert_eq!(refused.head.status, Code::ResourceExhausted.as_u16());
    assert_ne!(refused.head.flags & FLAG_REFUSED, 0, "marked refused: safe to send elsewhere");
    assert!(refused.meta.message().unwrap_or_default().contains("memory budget"), "{:?}", refused.meta.message());
    // The rest of it is discarded as it comes, and the connection carries on.
    raw.send(&big[4096..]).await;
    raw.send(&request(6, "Svc.A", &encode(&41u64))).await;
    let answer = raw.next_frame().await.expect("an answer");
    assert_eq!((answer.head.id, answer.head.status), (6, 0));
}

#[tokio::test]
async fn metadata_over_its_limits_is_refused_and_the_connection_carries_on() {
    let (_server, addr) = start(Server::builder()).await;
    let mut raw = Raw::connect(addr).await;
    // 300 user entries (the limit is 256).
    let mut meta = Metadata::default();
    meta.set_method("Svc.A");
    for i in 0..300 {
        meta.insert(format!("k{i}"), "v");
    }
    let mut frame = BytesMut::new();
    Head { codec: switchboard::Codec::Binary.id(), ..Head::new(Kind::Request, 1) }
        .encode(&mut frame, &meta, &encode(&1u64))
        .expect("encode");
    raw.send(&frame).await;
    let refused = raw.next_frame().await.expect("an answer");
    assert_eq!((refused.head.id, refused.head.status), (1, Code::ResourceExhausted.as_u16()));
    // A 100 KiB metadata section (the limit is 64 KiB), refused from the header.
    let mut meta = Metadata::default();
    meta.set_method("Svc.A");
    meta.set_trace_context("x".repeat(100 << 10));
    let mut frame = BytesMut::new();
    Head { codec: switchboard::Codec::Binary.id(), ..Head::new(Kind::Request, 2) }
        .encode(&mut frame, &meta, &encode(&1u64))
        .expect("encode");
    raw.send(&frame).await;
    let refused = raw.next_frame().await.expect("an answer");
    assert_eq!((refused.head.id, refused.head.status), (2, Code::ResourceExhausted.as_u16()));
    assert!(refused.meta.message().unwrap_or_default().contains("metadata"), "{:?}", refused.meta.message());
    raw.send(&request(3, "Svc.A", &encode(&1u64))).await;
    assert_eq!(raw.next_frame().await.map(|f| (f.head.id, f.head.status)), Some((3, 0)));
}
