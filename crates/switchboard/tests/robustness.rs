//! Robustness tests over real TCP sockets: live service changes, restarts and
//! reconnects, hostile or broken input on raw sockets, graceful shutdown, the
//! connection limit, and the small control frames.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use common::serve_task;

use switchboard::codec::{Codec, Decode, Encode};
use switchboard::frame::{Decoded, Frame, FrameDecoder, Head, Kind, Metadata, DEFAULT_MAX_FRAME, FLAG_REFUSED};
use switchboard::server::handler_fn;
use switchboard::Channel;
use switchboard::{Client, Code, Error, Retry, Server, Status};

/// Upper bound for any single wait in these tests.
const WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// A server answering `Svc.A`, started on a loopback port.
async fn start_svc_a() -> (Server, SocketAddr, JoinHandle<std::io::Result<()>>) {
    let server = Server::builder().build();
    add_svc_a(&server);
    let (addr, serving) = serve_task(&server).await;
    (server, addr, serving)
}

/// `Svc.A`: returns its argument plus one.
fn add_svc_a(server: &Server) {
    server.router().add_method("Svc.A", handler_fn(|x: u64| async move { Ok::<_, Status>(x + 1) })).expect("register");
}

/// A client with a short default timeout, so a broken feature fails the test
/// instead of hanging it.
async fn client(addr: SocketAddr) -> Client {
    Client::builder(addr.to_string()).timeout(Some(Duration::from_secs(3))).connect().await.expect("connect")
}

fn encode<T: Encode + ?Sized>(value: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    value.encode(Codec::Binary, &mut buf).expect("encode");
    buf
}

/// A whole request frame for `method` with a binary-codec payload.
fn request_frame(id: u64, method: &'static str, codec: u8, payload: &[u8]) -> BytesMut {
    let mut meta = Metadata::default();
    meta.set_method(method);
    let mut buf = BytesMut::new();
    Head { kind: Kind::Request, codec, flags: 0, status: 0, id }.encode(&mut buf, &meta, payload).expect("encode");
    buf
}

async fn wait<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A raw TCP connection speaking frames by hand.
struct Raw {
    stream: TcpStream,
    decoder: FrameDecoder,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("raw connect");
        Raw { stream, decoder: FrameDecoder::new(DEFAULT_MAX_FRAME), buf: BytesMut::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("raw write");
    }

    /// The next frame from the server; `None` if it closed the connection.
    async fn next_frame(&mut self) -> Option<Frame> {
        wait("a frame from the server", async {
            loop {
                match self.decoder.decode(&mut self.buf).expect("server sent a corrupt frame") {
                    Some(Decoded::Frame(frame)) => return Some(frame),
                    Some(Decoded::Oversized { head, len }) => panic!("server sent an oversized frame {head:?} {len}"),
                    Some(other) => panic!("server sent a frame this client refuses: {other:?}"),
                    None => {}
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// The next frame that is not a go-away.
    /// The next Response or Pong. Skips go-aways and, like a well-behaved
    /// client, answers the server's own pings (a draining server pings to
    /// learn when the client has seen its go-away).
    async fn next_reply(&mut self) -> Frame {
        loop {
            let frame = self.next_frame().await.expect("connection closed while waiting for a reply");
            match frame.head.kind {
                Kind::GoAway => {}
                Kind::Ping if frame.head.id == u64::MAX => {
                    let mut pong = BytesMut::new();
                    Head::new(Kind::Pong, frame.head.id).encode(&mut pong, &Metadata::default(), &[]).unwrap();
                    self.send(&pong).await;
                }
                _ => return frame,
            }
        }
    }

    /// Assert the server closes the connection without sending anything.
    async fn expect_closed_silently(&mut self) {
        let mut byte = [0u8; 1024];
        let read = wait("the server to close the connection", self.stream.read(&mut byte)).await;
        match read {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("expected the connection to be closed, got {n} bytes: {:02x?}", &byte[..n]),
        }
    }
}

fn message(frame: &Frame) -> &str {
    frame.meta.message().unwrap_or("")
}

fn assert_retryable(err: &Error) {
    match err {
        Error::Connect { .. } => assert_eq!(err.retry(), Retry::Always, "{err}"),
        Error::Refused { .. } => assert_eq!(err.retry(), Retry::Always, "{err}"),
        Error::ConnectionLost { .. } => assert_eq!(err.retry(), Retry::IfIdempotent, "{err}"),
        other => panic!("expected a retryable transport error, got {other:?}"),
    }
}

/// A TCP proxy whose connections can be killed at once (a hard drop that the
/// server does not initiate).
struct Proxy {
    addr: SocketAddr,
    kill: Arc<watch::Sender<u64>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let kill = Arc::new(watch::channel(0u64).0);
        let kill_for_accept = Arc::clone(&kill);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut killed = kill_for_accept.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = killed.changed() => {}
                    }
                    // Both sockets drop here.
                });
            }
        });
        Proxy { addr, kill, accept }
    }

    /// Drop every connection open now; keep accepting new ones.
    fn kill_connections(&self) {
        self.kill.send_modify(|generation| *generation += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.kill_connections();
    }
}

// ---------------------------------------------------------------------------
// 1. register and unregister during live traffic
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_come_and_go_under_live_traffic() {
    let (server, addr, _serving) = start_svc_a().await;
    let client = client(addr).await;

    // Background traffic on Svc.A: 4 tasks, bounded in calls and time.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut traffic = Vec::new();
    for t in 0..4u64 {
        let (client, stop, calls) = (client.clone(), Arc::clone(&stop), Arc::clone(&calls));
        traffic.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut errors = Vec::new();
            for i in 0..20_000u64 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(3) {
                    break;
                }
                let x = t * 1_000_000 + i;
                match client.call::<_, u64>("Svc.A", &x).await {
                    Ok(y) if y == x + 1 => {}
                    Ok(y) => errors.push(format!("Svc.A({x}) = {y}")),
                    Err(e) => errors.push(e.to_string()),
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
            errors
        }));
    }
    wait("background traffic to get going", async {
        while calls.load(Ordering::Relaxed) < 100 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;

    let mut changes = server.router().subscribe();
    let generation = *changes.borrow_and_update();
    assert!(!server.router().services().iter().any(|s| s.name == "Live"));

    // Live.Get(0) answers at once; Live.Get(1) reports that it started and
    // then holds until released.
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let release = Arc::new(Notify::new());
    let handler = {
        let release = Arc::clone(&release);
        handler_fn(move |x: u32| {
            let (started_tx, release) = (Arc::clone(&started_tx), Arc::clone(&release));
            async move {
                if x == 1 {
                    if let Some(tx) = started_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    release.notified().await;
                }
                Ok::<_, Status>(format!("live {x}"))
            }
        })
    };
    let calls_before = calls.load(Ordering::Relaxed);
    server.router().add_method("Live.Get", handler).expect("register Live.Get");

    // Callable at once: the very next call succeeds.
    assert_eq!(client.call::<_, String>("Live.Get", &0u32).await.expect("Live.Get right after add"), "live 0");
    let listed = server.router().services();
    let live = listed.iter().find(|s| s.name == "Live").expect("Live listed after add");
    assert_eq!(live.methods, vec!["Get".to_owned()]);
    assert!(changes.has_changed().expect("router alive"), "subscribe() did not see the add");
    let after_add = *changes.borrow_and_update();
    assert!(after_add > generation);

    // A call in flight on Live while Live is removed.
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, String>("Live.Get", &1u32).await })
    };
    wait("the Live handler to start", started_rx).await.expect("handler started");
    assert!(server.router().remove_service("Live"), "Live was registered");
    assert!(!server.router().services().iter().any(|s| s.name == "Live"), "Live still listed after removal");
    assert!(changes.has_changed().expect("router alive"), "subscribe() did not see the removal");
    assert!(*changes.borrow_and_update() > after_add);

    // The next call is NotFound, naming the service.
    let err = client.call::<_, String>("Live.Get", &0u32).await.expect_err("Live.Get after removal");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.to_string().contains("Live"), "NotFound message does not name Live: {err}");
    assert!(!in_flight.is_finished(), "the in-flight call ended before it was released");

    // The call in flight still completes.
    release.notify_one();
    let done = wait("the in-flight Live call", in_flight).await.expect("join");
    assert_eq!(done.expect("in-flight call survives removal"), "live 1");

    // Traffic kept flowing through all of it, without a single error.
    assert!(calls.load(Ordering::Relaxed) > calls_before, "background traffic stalled");
    stop.store(true, Ordering::Relaxed);
    for task in traffic {
        let errors = wait("background traffic to stop", task).await.expect("join");
        assert!(errors.is_empty(), "Svc.A traffic saw errors: {errors:?}");
    }
    assert!(calls.load(Ordering::Relaxed) >= 100);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. hard connection drop, server restart and client reconnect
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_drop_fails_in_flight_call_as_connection_lost_then_reconnects() {
    let server = Server::builder().build();
    add_svc_a(&server);
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (cancelled_tx, cancelled_rx) = oneshot::channel::<()>();
    let once = Arc::new(std::sync::Mutex::new(Some((started_tx, cancelled_tx))));
    server
        .router()
        .add_method(
            "Block.Wait",
            handler_fn(move |_: u32| {
                let once = Arc::clone(&once);
                async move {
                    /// Reports that the handler was dropped (cancelled) unfinished.
                    struct OnDrop(Option<oneshot::Sender<()>>);
                    impl Drop for OnDrop {
                        fn drop(&mut self) {
                            if let Some(tx) = self.0.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                    let (started, cancelled) = once.lock().unwrap().take().expect("Block.Wait called once");
                    let _guard = OnDrop(Some(cancelled));
                    let _ = started.send(());
                    std::future::pending::<()>().await;
                    Ok::<_, Status>(0u32)
                }
            }),
        )
        .expect("register");
    let (server_addr, _serving) = serve_task(&server).await;
    let proxy = Proxy::start(server_addr).await;
    let client = client(proxy.addr).await;
    assert_eq!(client.call::<_, u64>("Svc.A", &1u64).await.expect("call through the proxy"), 2);

    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, u32>("Block.Wait", &0u32).await })
    };
    wait("the blocking handler to start", started_rx).await.expect("handler started");
    proxy.kill_connections();

    let err = wait("the in-flight call to fail", in_flight).await.expect("join").expect_err("call across a hard drop");
    assert!(matches!(err, Error::ConnectionLost { .. }), "expected ConnectionLost, got {err:?}");
    assert_eq!(err.retry(), Retry::IfIdempotent);
    // The server noticed the dropped connection and cancelled the handler.
    wait("the server to cancel the orphaned handler", cancelled_rx).await.expect("handler dropped");

    // Later calls reconnect (through the same proxy, which still accepts).
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut errors = Vec::new();
    let answer = loop {
        match client.call::<_, u64>("Svc.A", &41u64).await {
            Ok(v) => break v,
            Err(e) => {
                assert_retryable(&e);
                errors.push(e.to_string());
            }
        }
        assert!(Instant::now() < deadline, "no reconnect within 3 s: {errors:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(answer, 42);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_to_a_server_restarted_on_the_same_address() {
    let version = |v: u32| handler_fn(move |_: ()| async move { Ok::<_, Status>(v) });
    let first = Server::builder().build();
    first.router().add_method("Ver.Get", version(1)).expect("register");
    let (addr, serving) = serve_task(&first).await;
    let client = client(addr).await;
    assert_eq!(client.call::<_, u32>("Ver.Get", &()).await.expect("first server"), 1);

    let report = wait("the first server to shut down", first.shutdown()).await;
    assert!(report.drained);
    wait("serve() to return", serving).await.expect("join").expect("serve result");

    // Down: calls fail fast with an always-retryable connect error.
    let err = client.call::<_, u32>("Ver.Get", &()).await.expect_err("call while the server is down");
    assert!(matches!(err, Error::Connect { .. }), "expected Connect while down, got {err:?}");
    assert_eq!(err.retry(), Retry::Always);

    // Restart on the same address (the old socket may linger briefly).
    let second = Server::builder().build();
    second.router().add_method("Ver.Get", version(2)).expect("register");
    let bind_deadline = Instant::now() + WAIT;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < bind_deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot rebind {addr} within 2 s: {e}"),
        }
    };
    assert_eq!(listener.local_addr().unwrap(), addr);
    let _serving = tokio::spawn(second.clone().serve(listener));

    // The same client reconnects (after its backoff) and reaches the new server.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut errors = Vec::new();
    let answer = loop {
        match client.call::<_, u32>("Ver.Get", &()).await {
            Ok(v) => break v,
            Err(e) => {
                assert_retryable(&e);
                errors.push(e.to_string());
            }
        }
        assert!(Instant::now() < deadline, "no reconnect within 3 s: {errors:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(answer, 2, "answered by the old server?");
    second.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3. oversized frames
// ---------------------------------------------------------------------------

#[tokio::test]
async fn oversized_length_header_is_refused_with_resource_exhausted() {
    let (server, addr, _serving) = start_svc_a().await;

    // A header announcing a 1 GiB payload, then only a few bytes of it.
    let mut raw = Raw::connect(addr).await;
    let mut frame = request_frame(5, "Svc.A", Codec::Binary.id(), b"");
    frame[20..24].copy_from_slice(&(1u32 << 30).to_be_bytes());
    let meta_len = u32::from_be_bytes(frame[16..20].try_into().unwrap()) as u64;
    frame.extend_from_slice(b"0123456789");
    raw.send(&frame).await;
    let reply = raw.next_reply().await;
    assert_eq!(reply.head.kind, Kind::Response);
    assert_eq!(reply.head.id, 5);
    assert_eq!(reply.head.status, Code::ResourceExhausted.as_u16());
    assert_eq!(reply.head.status, 8);
    assert!(message(&reply).contains("limit"), "message: {:?}", message(&reply));
    assert!(message(&reply).contains(&DEFAULT_MAX_FRAME.to_string()), "message: {:?}", message(&reply));
    assert!(message(&reply).contains(&(24 + meta_len + (1 << 30)).to_string()), "message: {:?}", message(&reply));
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_frame_is_skipped_and_the_connection_keeps_serving() {
    let server = Server::builder().max_frame(64 * 1024).build();
    add_svc_a(&server);
    let (addr, _serving) = serve_task(&server).await;

    let mut raw = Raw::connect(addr).await;
    // A 100 KiB frame sent whole, followed in the same write by a valid request.
    let mut bytes = request_frame(7, "Svc.A", Codec::Binary.id(), &vec![0xAB; 100 * 1024]);
    bytes.extend_from_slice(&request_frame(8, "Svc.A", Codec::Binary.id(), &encode(&41u64)));
    raw.send(&bytes).await;

    let mut replies = [raw.next_reply().await, raw.next_reply().await];
    replies.sort_by_key(|f| f.head.id);
    let [too_big, ok] = &mut replies[..] else { unreachable!() };
    assert_eq!(too_big.head.id, 7);
    assert_eq!(too_big.head.status, Code::ResourceExhausted.as_u16());
    assert!(message(too_big).contains("limit of 65536"), "message: {:?}", message(too_big));
    assert_eq!(ok.head.id, 8);
    assert_eq!(ok.head.status, 0, "valid request after an oversized one failed: {:?}", message(ok));
    assert_eq!(u64::decode(Codec::Binary, &ok.take_payload(1 << 20).unwrap()).unwrap(), 42);

    // And another one afterwards, on its own.
    raw.send(&request_frame(9, "Svc.A", Codec::Binary.id(), &encode(&99u64))).await;
    let mut reply = raw.next_reply().await;
    assert_eq!((reply.head.id, reply.head.status), (9, 0));
    assert_eq!(u64::decode(Codec::Binary, &reply.take_payload(1 << 20).unwrap()).unwrap(), 100);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. garbage and corrupt frames
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_the_offending_connection() {
    let (_server, addr, _serving) = start_svc_a().await;
    let client = client(addr).await;
    assert_eq!(client.call::<_, u64>("Svc.A", &1u64).await.expect("before garbage"), 2);

    let mut rng = fastrand::Rng::with_seed(0x5EED_CAFE);
    let mut garbage = vec![0u8; 4096];
    rng.fill(&mut garbage);
    if garbage[..2] == switchboard::frame::MAGIC {
        garbage[0] = 0;
    }
    let mut raw = Raw::connect(addr).await;
    raw.send(&garbage).await;
    raw.expect_closed_silently().await;
    assert_eq!(client.call::<_, u64>("Svc.A", &2u64).await.expect("after garbage"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_metadata_closes_only_the_offending_connection() {
    let (_server, addr, _serving) = start_svc_a().await;
    let client = client(addr).await;

    // tag METHOD, then a length varint whose continuation bits run past the
    // end of the metadata; and a length that runs past the end.
    for metadata in [&[1u8, 0xFF, 0xFF][..], &[1u8, 100, b'a', b'b'][..], &[6u8, 2, 0x7F, b'k'][..]] {
        let mut frame = BytesMut::new();
        Head { kind: Kind::Request, codec: Codec::Binary.id(), flags: 0, status: 0, id: 1 }
            .encode(&mut frame, &Metadata::default(), &encode(&1u64))
            .unwrap();
        let payload = frame.split_off(24);
        frame[16..20].copy_from_slice(&(metadata.len() as u32).to_be_bytes());
        frame.extend_from_slice(metadata);
        frame.extend_from_slice(&payload);
        assert!(
            FrameDecoder::new(DEFAULT_MAX_FRAME).decode(&mut frame.clone()).is_err(),
            "test frame is not actually corrupt: {metadata:02x?}"
        );

        let mut raw = Raw::connect(addr).await;
        raw.send(&frame).await;
        raw.expect_closed_silently().await;
        assert_eq!(client.call::<_, u64>("Svc.A", &5u64).await.expect("other client after corrupt metadata"), 6);
    }
}

// ---------------------------------------------------------------------------
// 5. graceful shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_drains_calls_in_flight() {
    let server = Server::builder().build();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();
    // Every handler takes at least 300 ms and then also waits for this gate,
    // so the calls are certainly still in flight while the test probes the
    // server mid-shutdown, however slowly the machine runs.
    let (gate_tx, gate_rx) = watch::channel(false);
    let (slow_started, slow_gate) = (started_tx.clone(), gate_rx.clone());
    server
        .router()
        .add_method(
            "Slow.Wait",
            handler_fn(move |x: u32| {
                let (started, mut gate) = (slow_started.clone(), slow_gate.clone());
                async move {
                    let _ = started.send(());
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let _ = gate.wait_for(|open| *open).await;
                    Ok::<_, Status>(x * 10)
                }
            }),
        )
        .expect("register");
    server
        .router()
        .add_method(
            "Slow.Hold",
            handler_fn(move |x: u32| {
                let (started, mut gate) = (started_tx.clone(), gate_rx.clone());
                async move {
                    let _ = started.send(());
                    let _ = gate.wait_for(|open| *open).await;
                    Ok::<_, Status>(x)
                }
            }),
        )
        .expect("register");
    let (addr, serving) = serve_task(&server).await;
    let client = client(addr).await;

    let calls: Vec<_> = (0..20u32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.call::<_, u32>("Slow.Wait", &i).await })
        })
        .collect();
    let mut raw = Raw::connect(addr).await;
    raw.send(&request_frame(1, "Slow.Hold", Codec::Binary.id(), &encode(&7u32))).await;
    wait("21 handlers to start", async {
        for _ in 0..21 {
            started_rx.recv().await.expect("sender alive");
        }
    })
    .await;

    let began = Instant::now();
    let shutdown = {
        let server = server.clone();
        tokio::spawn(async move { server.shutdown().await })
    };

    // Shutdown has begun once the go-away arrives. A request sent on the same
    // connection after that is refused, marked safe to retry.
    let go_away = raw.next_frame().await.expect("go-away before close");
    assert_eq!(go_away.head.kind, Kind::GoAway);
    raw.send(&request_frame(2, "Slow.Wait", Codec::Binary.id(), &encode(&1u32))).await;
    let refused = raw.next_reply().await;
    assert_eq!(refused.head.id, 2);
    assert_eq!(refused.head.status, Code::Unavailable.as_u16());
    assert_ne!(refused.head.flags & FLAG_REFUSED, 0, "refusal not marked refused");

    // The accept loop stops; a client call now is refused or cannot connect,
    // both always safe to retry.
    wait("serve() to return", serving).await.expect("join").expect("serve result");
    let err = client.call::<_, u32>("Slow.Wait", &0u32).await.expect_err("call after shutdown began");
    assert!(matches!(err, Error::Refused { .. } | Error::Connect { .. }), "unexpected error {err:?}");
    assert_eq!(err.retry(), Retry::Always, "{err}");
    assert!(!shutdown.is_finished(), "shutdown returned with calls still in flight");

    // Let the handlers finish.
    gate_tx.send_replace(true);
    let mut held = raw.next_reply().await;
    assert_eq!((held.head.id, held.head.status), (1, 0));
    assert_eq!(u32::decode(Codec::Binary, &held.take_payload(1 << 20).unwrap()).unwrap(), 7);

    // All 20 drained successfully.
    for (i, call) in calls.into_iter().enumerate() {
        let result = wait("a draining call", call).await.expect("join");
        assert_eq!(result.expect("call in flight during shutdown"), i as u32 * 10);
    }
    let report = wait("shutdown to finish", shutdown).await.expect("join");
    assert!(report.drained, "{report:?}");
    assert!(began.elapsed() < WAIT, "shutdown took {:?}", began.elapsed());
    assert!(raw.next_frame().await.is_none(), "connection not closed after shutdown");

    // No new connections after shutdown.
    assert!(TcpStream::connect(addr).await.is_err(), "connected after shutdown");
    let err = Client::connect(addr.to_string()).await.expect_err("client connect after shutdown");
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
}

/// A request the server reads after shutdown began is refused, also on a
/// connection whose task has not yet been woken by the shutdown. Before the
/// fix such a request ran (and here would never answer): that was
/// `graceful_shutdown_drains_calls_in_flight`'s rare DeadlineExceeded, when
/// the client's connection task was not scheduled between the shutdown and
/// the client's next request.
///
/// Deterministic: the shutdown begins inside a call, which the connection's
/// task runs inline, and the next request was sent in the same write, so the
/// task decodes it right after, before it can have seen the shutdown token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_read_after_shutdown_began_is_refused() {
    let server = Server::builder().build();
    // The handler takes the server out of this slot (rather than owning a
    // clone), so the router does not keep its own server alive.
    let slot = Arc::new(std::sync::Mutex::new(None::<Server>));
    let handler_slot = Arc::clone(&slot);
    server
        .router()
        .add_method(
            "Admin.Shutdown",
            handler_fn(move |_: ()| {
                let server = handler_slot.lock().unwrap().take();
                async move {
                    if let Some(server) = server {
                        // Its first poll begins the shutdown; waiting for it to
                        // finish is not this call's business.
                        let mut shutdown = std::pin::pin!(server.shutdown());
                        std::future::poll_fn(|cx| {
                            let _ = std::future::Future::poll(shutdown.as_mut(), cx);
                            std::task::Poll::Ready(())
                        })
                        .await;
                    }
                    Ok::<_, Status>(())
                }
            }),
        )
        .expect("register");
    let ran = Arc::new(AtomicBool::new(false));
    let hold_ran = Arc::clone(&ran);
    server
        .router()
        .add_method(
            "Slow.Hold",
            handler_fn(move |_: u32| {
                hold_ran.store(true, Ordering::SeqCst);
                std::future::pending::<Result<u32, Status>>()
            }),
        )
        .expect("register");
    *slot.lock().unwrap() = Some(server.clone());
    let (addr, serving) = serve_task(&server).await;

    let mut raw = Raw::connect(addr).await;
    let mut frames = request_frame(1, "Admin.Shutdown", Codec::Binary.id(), &encode(&()));
    frames.extend_from_slice(&request_frame(2, "Slow.Hold", Codec::Binary.id(), &encode(&7u32)));
    raw.send(&frames).await;

    let done = raw.next_frame().await.expect("answer to the shutdown call");
    assert_eq!((done.head.kind, done.head.id, done.head.status), (Kind::Response, 1, 0));
    let go_away = raw.next_frame().await.expect("go-away");
    assert_eq!(go_away.head.kind, Kind::GoAway);
    assert_eq!(go_away.head.id, 1, "the server accepted request 2, read after shutdown began");
    let refused = raw.next_reply().await;
    assert_eq!((refused.head.kind, refused.head.id), (Kind::Response, 2));
    assert_eq!(refused.head.status, Code::Unavailable.as_u16());
    assert_ne!(refused.head.flags & FLAG_REFUSED, 0, "refusal not marked refused");
    assert!(!ran.load(Ordering::SeqCst), "the handler ran for a request refused during shutdown");

    // Nothing runs, and the pong came back: the connection closes at once.
    assert!(raw.next_frame().await.is_none(), "connection not closed after shutdown");
    let report = wait("shutdown to finish", server.shutdown()).await;
    assert!(report.drained, "{report:?}");
    wait("serve() to return", serving).await.expect("join").expect("serve result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_cancels_calls_that_never_finish() {
    let server = Server::builder().shutdown_timeout(Duration::from_millis(200)).build();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    server
        .router()
        .add_method(
            "Stuck.Forever",
            handler_fn(move |_: ()| {
                let started_tx = Arc::clone(&started_tx);
                async move {
                    if let Some(tx) = started_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    std::future::pending::<()>().await;
                    Ok::<_, Status>(())
                }
            }),
        )
        .expect("register");
    let (addr, _serving) = serve_task(&server).await;
    let client =
        Client::builder(addr.to_string()).timeout(Some(Duration::from_secs(30))).connect().await.expect("connect");
    let stuck = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, ()>("Stuck.Forever", &()).await })
    };
    wait("the stuck handler to start", started_rx).await.expect("started");

    let began = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await.expect("shutdown hung");
    let elapsed = began.elapsed();
    assert!(!report.drained, "{report:?}");
    assert!(elapsed >= Duration::from_millis(190), "shutdown did not wait its timeout: {elapsed:?}");

    let result = tokio::time::timeout(Duration::from_secs(1), stuck).await.expect("stuck call hangs").expect("join");
    let err = result.expect_err("a cancelled call cannot succeed");
    assert!(err.is_retryable() || err.code() == Code::Cancelled, "unexpected error {err:?}");
}

// ---------------------------------------------------------------------------
// 6. connection limit
// ---------------------------------------------------------------------------

async fn try_new_client(addr: SocketAddr) -> Result<(Client, u64), Error> {
    let client = Client::builder(addr.to_string()).timeout(Some(Duration::from_millis(500))).build();
    let v = client.call::<_, u64>("Svc.A", &10u64).await?;
    Ok((client, v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_closes_extra_connections_until_a_slot_frees() {
    let server = Server::builder().max_connections(2).build();
    add_svc_a(&server);
    let (addr, _serving) = serve_task(&server).await;

    let first = client(addr).await;
    let second = client(addr).await;
    assert_eq!(first.call::<_, u64>("Svc.A", &1u64).await.expect("first client"), 2);
    assert_eq!(second.call::<_, u64>("Svc.A", &2u64).await.expect("second client"), 3);

    // A third connection is turned away with a go-away saying why; its call
    // provably never ran, so it is always safe to retry elsewhere.
    let err = try_new_client(addr).await.expect_err("third connection over the limit");
    assert!(
        matches!(&err, Error::Refused { status, .. } if status.code() == Code::ResourceExhausted
            && status.message().contains("connection limit of 2")),
        "{err:?}"
    );
    assert_eq!(err.retry(), Retry::Always);
    // The first two are unaffected.
    assert_eq!(first.call::<_, u64>("Svc.A", &3u64).await.expect("first client still works"), 4);
    assert_eq!(second.call::<_, u64>("Svc.A", &4u64).await.expect("second client still works"), 5);

    // Freeing a slot lets a new client in.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut errors = Vec::new();
    let (fourth, v) = loop {
        match try_new_client(addr).await {
            Ok(ok) => break ok,
            Err(e) => {
                assert_retryable(&e);
                errors.push(e.to_string());
            }
        }
        assert!(Instant::now() < deadline, "no slot freed within 3 s: {errors:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(v, 11);

    // The limit is still two.
    let err = try_new_client(addr).await.expect_err("limit still enforced");
    assert_retryable(&err);
    assert_eq!(second.call::<_, u64>("Svc.A", &5u64).await.expect("second client"), 6);
    assert_eq!(fourth.call::<_, u64>("Svc.A", &6u64).await.expect("fourth client"), 7);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 7. control frames on a raw socket
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ping_gets_pong_and_unknown_codec_gets_unimplemented() {
    let (server, addr, _serving) = start_svc_a().await;
    let mut raw = Raw::connect(addr).await;

    let mut ping = BytesMut::new();
    Head::new(Kind::Ping, 42).encode(&mut ping, &Metadata::default(), &[]).unwrap();
    raw.send(&ping).await;
    let pong = raw.next_reply().await;
    assert_eq!(pong.head.kind, Kind::Pong);
    assert_eq!(pong.head.id, 42);

    raw.send(&request_frame(43, "Svc.A", 99, &encode(&1u64))).await;
    let reply = raw.next_reply().await;
    assert_eq!(reply.head.kind, Kind::Response);
    assert_eq!(reply.head.id, 43);
    assert_eq!(reply.head.status, Code::Unimplemented.as_u16());
    assert_eq!(reply.head.status, 12);
    assert!(message(&reply).contains("99"), "message does not name the codec id: {:?}", message(&reply));

    // The connection is still good for a normal call.
    raw.send(&request_frame(44, "Svc.A", Codec::Binary.id(), &encode(&1u64))).await;
    let mut ok = raw.next_reply().await;
    assert_eq!((ok.head.id, ok.head.status), (44, 0));
    assert_eq!(u64::decode(Codec::Binary, &ok.take_payload(1 << 20).unwrap()).unwrap(), 2);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// regression tests for bugs found while writing these tests
// ---------------------------------------------------------------------------

/// A request already on the wire when shutdown begins, on a connection with
/// no call in flight, must be answered or refused (FLAG_REFUSED, so clients
/// may retry it anywhere), not dropped by a server that closes without
/// reading it. The current-thread runtime makes the race deterministic: the
/// draining signal wakes the connection task before the reactor reports the
/// socket readable. (The server now pings after its go-away and keeps
/// reading until the pong.)
#[tokio::test]
async fn request_already_sent_when_shutdown_begins_is_answered_or_refused() {
    for attempt in 0..5 {
        let (server, addr, _serving) = start_svc_a().await;
        let mut raw = Raw::connect(addr).await;
        let mut ping = BytesMut::new();
        Head::new(Kind::Ping, 1).encode(&mut ping, &Metadata::default(), &[]).unwrap();
        raw.send(&ping).await;
        assert_eq!(raw.next_reply().await.head.kind, Kind::Pong);

        // The request is in the server's socket buffer before shutdown begins.
        raw.send(&request_frame(2, "Svc.A", Codec::Binary.id(), &encode(&1u64))).await;
        let shutdown = tokio::spawn({
            let server = server.clone();
            async move { server.shutdown().await }
        });
        let mut answer = None;
        while let Some(frame) = raw.next_frame().await {
            match frame.head.kind {
                Kind::Response => answer = Some(frame.head),
                // A draining server pings to learn when we have seen its
                // go-away; a well-behaved client answers.
                Kind::Ping => {
                    let mut pong = BytesMut::new();
                    Head::new(Kind::Pong, frame.head.id).encode(&mut pong, &Metadata::default(), &[]).unwrap();
                    raw.send(&pong).await;
                }
                _ => {}
            }
        }
        wait("shutdown", shutdown).await.expect("join");
        let head = answer.unwrap_or_else(|| panic!("attempt {attempt}: request got neither an answer nor a refusal"));
        assert_eq!(head.id, 2);
        assert!(
            head.status == 0 || head.flags & FLAG_REFUSED != 0,
            "attempt {attempt}: request neither served nor refused: {head:?}"
        );
    }
}

/// `ClientConfig::timeout` documents `None` as "wait forever"; a caller who
/// writes `Some(Duration::MAX)` for the same gets a panic ("overflow when
/// adding duration to instant") from `Client::call_raw`, which computes
/// `Instant::now() + budget` unchecked. The same holds for
/// `CallOptions::timeout(Duration::MAX)`.
#[tokio::test]
async fn huge_client_timeout_does_not_panic() {
    let (server, addr, _serving) = start_svc_a().await;
    let client = Client::builder(addr.to_string()).timeout(Some(Duration::MAX)).build();
    assert_eq!(client.call::<_, u64>("Svc.A", &1u64).await.expect("call with a huge timeout"), 2);
    server.shutdown().await;
}
