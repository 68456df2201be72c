//! Integration tests for calls end to end over real TCP sockets: typed and
//! dynamic services in every codec, concurrency on one connection, deadlines,
//! cancellation, errors, middleware, propagation, ping, large payloads and
//! compression.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::serve;
use serde::{Deserialize, Serialize};
use switchboard::client::ClientConfig;
use switchboard::codec::Proto;
use switchboard::middleware::Next;
use switchboard::server::{handler_fn, raw_handler_fn};
use switchboard::Channel;
use switchboard::{
    BoxFuture, CallOptions, Client, Code, Codec, Context, Error, Middleware, Request, Response, Retry, Server, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// The serde codecs (Protobuf needs `Proto<M>` types).
const SERDE_CODECS: [Codec; 3] = [Codec::Json, Codec::Binary, Codec::MsgPack];

/// Generous upper bound for anything that should take milliseconds.
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// Await `fut`, failing the test if it takes longer than `limit`.
async fn within<F: std::future::Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// What a handler reports about its own lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Started,
    Finished,
    Dropped,
}

/// Reports `Life::Dropped` when the handler future is dropped before it
/// finished (cancelled), `Life::Finished` if it was disarmed by finishing.
struct DropGuard {
    tx: mpsc::UnboundedSender<Life>,
    finished: bool,
}

impl DropGuard {
    fn start(tx: &mpsc::UnboundedSender<Life>) -> DropGuard {
        let _ = tx.send(Life::Started);
        DropGuard { tx: tx.clone(), finished: false }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(if self.finished { Life::Finished } else { Life::Dropped });
    }
}

/// Next lifecycle event, or a test failure after `limit`.
async fn next_life(rx: &mut mpsc::UnboundedReceiver<Life>, limit: Duration) -> Life {
    within(limit, "waiting for a handler lifecycle event", rx.recv()).await.expect("handler channel closed")
}

/// Bytes seen by a counting TCP proxy, in each direction.
#[derive(Clone, Default)]
struct Traffic {
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Traffic {
    fn up(&self) -> u64 {
        self.up.load(Ordering::SeqCst)
    }
    fn down(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }
}

/// A TCP proxy in front of `target` that counts the bytes it forwards.
/// Bytes are counted before they are forwarded, so once a reply has reached
/// the client its bytes are in the count.
async fn counting_proxy(target: SocketAddr) -> (SocketAddr, Traffic) {
    proxy(target, Duration::ZERO).await
}

/// [`counting_proxy`] that also holds every client-to-server chunk for
/// `latency` before forwarding it, like a slow network link.
async fn proxy(target: SocketAddr, latency: Duration) -> (SocketAddr, Traffic) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let traffic = Traffic::default();
    let t = traffic.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            let (in_rd, in_wr) = inbound.into_split();
            let (out_rd, out_wr) = outbound.into_split();
            tokio::spawn(pump(in_rd, out_wr, Arc::clone(&t.up), latency));
            tokio::spawn(pump(out_rd, in_wr, Arc::clone(&t.down), Duration::ZERO));
        }
    });
    (addr, traffic)
}

async fn pump(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
    latency: Duration,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        count.fetch_add(n as u64, Ordering::SeqCst);
        if !latency.is_zero() {
            // Simulated transit time, not synchronisation.
            tokio::time::sleep(latency).await;
        }
        if wr.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

// ---------------------------------------------------------------------------
// services and types
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Args {
    #[serde(rename = "A")]
    a: i64,
    #[serde(rename = "B")]
    b: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Quotient {
    #[serde(rename = "Quo")]
    quo: i64,
    #[serde(rename = "Rem")]
    rem: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Role {
    Admin,
    User { level: u8 },
}

/// A value exercising most of the serde data model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
    role: Role,
    counters: BTreeMap<String, i32>,
    #[serde(with = "serde_bytes")]
    avatar: Vec<u8>,
}

/// A prost message for the Protobuf codec.
#[derive(Clone, PartialEq, prost::Message)]
struct PingMsg {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    text: String,
    #[prost(bytes = "vec", tag = "3")]
    data: Vec<u8>,
}

/// A binary blob, sent as bytes (not a sequence of integers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Blob {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

mod services {
    // The macro generates helpers (`from_arc`, `channel`, ...) that not every
    // test uses.
    #![allow(dead_code)]

    use super::*;

    #[switchboard::service]
    pub(crate) trait Arith {
        async fn multiply(&self, args: Args) -> Result<i64, Status>;
        async fn divide(&self, args: Args) -> Result<Quotient, Status>;
        async fn promote(&self, profile: Profile) -> Result<Profile, Status>;
        async fn version(&self) -> Result<String, Status>;
    }

    #[switchboard::service]
    pub(crate) trait Pinger {
        async fn bounce(&self, msg: Proto<PingMsg>) -> Result<Proto<PingMsg>, Status>;
    }
}

use services::{Arith, ArithClient, ArithServer, Pinger, PingerClient, PingerServer};

struct Calculator;

impl Arith for Calculator {
    async fn multiply(&self, args: Args) -> Result<i64, Status> {
        args.a.checked_mul(args.b).ok_or_else(|| Status::out_of_range("overflow"))
    }

    async fn divide(&self, args: Args) -> Result<Quotient, Status> {
        if args.b == 0 {
            return Err(Status::invalid_argument("divide by zero"));
        }
        Ok(Quotient { quo: args.a / args.b, rem: args.a % args.b })
    }

    async fn promote(&self, mut p: Profile) -> Result<Profile, Status> {
        p.id += 1;
        p.tags.push("promoted".into());
        p.role = match p.role {
            Role::User { level } => Role::User { level: level + 1 },
            Role::Admin => Role::Admin,
        };
        *p.counters.entry("promotions".into()).or_insert(0) += 1;
        p.avatar.reverse();
        Ok(p)
    }

    async fn version(&self) -> Result<String, Status> {
        Ok("calc/1.0 ✓".into())
    }
}

struct Echoer;

impl Pinger for Echoer {
    async fn bounce(&self, Proto(mut msg): Proto<PingMsg>) -> Result<Proto<PingMsg>, Status> {
        msg.id *= 2;
        msg.text = format!("pong: {}", msg.text);
        msg.data.reverse();
        Ok(Proto(msg))
    }
}

fn sample_profile() -> Profile {
    Profile {
        id: 41,
        name: "Zoë «quoted» \"name\" 名前".into(),
        tags: vec!["a".into(), String::new(), "c d".into()],
        score: Some(-2.5),
        role: Role::User { level: 3 },
        counters: BTreeMap::from([("logins".into(), 7), ("negative".into(), -1)]),
        avatar: vec![0, 1, 2, 254, 255],
    }
}

// ---------------------------------------------------------------------------
// 1. typed calls in every codec
// ---------------------------------------------------------------------------

#[tokio::test]
async fn typed_service_round_trips_in_every_codec() {
    let server = Server::builder().service(ArithServer::new(Calculator)).service(PingerServer::new(Echoer)).build();
    let addr = serve(&server).await;
    let client = Client::connect(addr.to_string()).await.expect("connect");

    for codec in SERDE_CODECS {
        let arith = ArithClient::new(client.clone()).with_options(CallOptions::new().codec(codec));
        let product = within(WAIT, "multiply", arith.multiply(Args { a: 7, b: -8 })).await;
        assert_eq!(product.expect("multiply"), -56, "{codec}");

        let quotient = within(WAIT, "divide", arith.divide(Args { a: 17, b: 5 })).await.expect("divide");
        assert_eq!(quotient, Quotient { quo: 3, rem: 2 }, "{codec}");

        let promoted = within(WAIT, "promote", arith.promote(sample_profile())).await.expect("promote");
        let mut expected = sample_profile();
        expected.id = 42;
        expected.tags.push("promoted".into());
        expected.role = Role::User { level: 4 };
        expected.counters.insert("promotions".into(), 1);
        expected.avatar = vec![255, 254, 2, 1, 0];
        assert_eq!(promoted, expected, "{codec}");

        let version = within(WAIT, "version", arith.version()).await.expect("version");
        assert_eq!(version, "calc/1.0 ✓", "{codec}");

        // Application errors come back as statuses in every codec too.
        let err = within(WAIT, "divide by zero", arith.divide(Args { a: 1, b: 0 })).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{codec}: {err}");
    }

    // Protobuf through a Proto<M> typed method.
    let pinger = PingerClient::new(client.clone()).with_options(CallOptions::new().codec(Codec::Protobuf));
    let msg = PingMsg { id: 21, text: "hello ☃".into(), data: vec![1, 2, 3, 0, 255] };
    let Proto(reply) = within(WAIT, "bounce", pinger.bounce(Proto(msg))).await.expect("bounce");
    assert_eq!(reply, PingMsg { id: 42, text: "pong: hello ☃".into(), data: vec![255, 0, 3, 2, 1] });

    // A serde-typed method asked for Protobuf: a clear codec error, no hang.
    let wrong = ArithClient::new(client.clone()).with_options(CallOptions::new().codec(Codec::Protobuf));
    match within(WAIT, "serde type with protobuf", wrong.multiply(Args { a: 2, b: 3 })).await {
        Err(Error::Codec(e)) => {
            assert_eq!(e.codec(), Codec::Protobuf);
            assert!(e.to_string().contains("Proto"), "error should point at Proto: {e}");
        }
        other => panic!("expected a codec error, got {other:?}"),
    }

    // A Proto message asked for JSON: a clear codec error as well.
    let wrong = PingerClient::new(client.clone()).with_options(CallOptions::new().codec(Codec::Json));
    match within(WAIT, "proto type with json", wrong.bounce(Proto(PingMsg::default()))).await {
        Err(Error::Codec(e)) => assert_eq!(e.codec(), Codec::Json, "{e}"),
        other => panic!("expected a codec error, got {other:?}"),
    }

    // A protobuf payload reaching a serde-typed handler: the server answers
    // InvalidArgument naming the method (no panic, no hang).
    let opts = CallOptions::new().codec(Codec::Protobuf);
    let res: Result<i64, Error> = within(
        WAIT,
        "protobuf to serde handler",
        client.call_with("Arith.Multiply", &Proto(PingMsg::default()), &opts),
    )
    .await;
    match res {
        Err(Error::Status(s)) => {
            assert_eq!(s.code(), Code::InvalidArgument, "{s}");
            assert!(s.message().contains("Arith.Multiply"), "{s}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    // The connection survived all of the above.
    let arith = ArithClient::new(client);
    assert_eq!(within(WAIT, "after errors", arith.multiply(Args { a: 3, b: 3 })).await.expect("multiply"), 9);
}

// ---------------------------------------------------------------------------
// 2. dynamic calls
// ---------------------------------------------------------------------------

#[tokio::test]
async fn dynamic_handlers_answer_untyped_calls_in_every_codec() {
    let server = Server::builder().build();
    server
        .router()
        .add_method("Math.Add", handler_fn(|args: Args| async move { Ok::<_, Status>(args.a + args.b) }))
        .expect("register Math.Add");
    // A raw handler: decodes and encodes itself, and reports the codec it saw.
    server
        .router()
        .add_method(
            "Math.Sum",
            raw_handler_fn(|req: Request| async move {
                let values: Vec<i64> = req.decode()?;
                let reply = (values.iter().sum::<i64>(), req.codec.name().to_owned(), req.method().to_owned());
                Response::encode(req.codec, &reply)
            }),
        )
        .expect("register Math.Sum");
    server
        .router()
        .add_method("Json.Echo", handler_fn(|v: serde_json::Value| async move { Ok::<_, Status>(v) }))
        .expect("register Json.Echo");
    let addr = serve(&server).await;

    for codec in SERDE_CODECS {
        // The client's default codec is what untyped `call` uses.
        let client = Client::builder(addr.to_string()).codec(codec).connect().await.expect("connect");
        let sum = within(WAIT, "Math.Add", client.call::<Args, i64>("Math.Add", &Args { a: 40, b: 2 })).await;
        assert_eq!(sum.expect("Math.Add"), 42, "{codec}");

        let (sum, seen_codec, method) =
            within(WAIT, "Math.Sum", client.call::<[i64], (i64, String, String)>("Math.Sum", &[1, 2, 3, -10][..]))
                .await
                .expect("Math.Sum");
        assert_eq!(sum, -4, "{codec}");
        assert_eq!(seen_codec, codec.name(), "the server decoded with the codec the client chose");
        assert_eq!(method, "Math.Sum");
    }

    // A serde_json::Value round-trips through JSON unchanged.
    let client = Client::builder(addr.to_string()).codec(Codec::Json).connect().await.expect("connect");
    let value = serde_json::json!({
        "name": "switchboard",
        "nested": {"list": [1, 2.5, -3, null, true, "x"], "empty": {}},
        "unicode": "ünïcödé ✓",
        "big": 9007199254740993u64,
    });
    let back: serde_json::Value = within(WAIT, "Json.Echo", client.call("Json.Echo", &value)).await.expect("echo");
    assert_eq!(back, value);
}

// ---------------------------------------------------------------------------
// 3. many concurrent calls on one connection, answered out of order
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_on_one_connection_complete_out_of_order() {
    const N: u32 = 1000;
    let server = Server::builder().build();
    server
        .router()
        .add_method(
            "Slow.Echo",
            handler_fn(|i: u32| async move {
                tokio::time::sleep(Duration::from_millis(u64::from((N - i) % 50))).await;
                let port = Context::current().and_then(|c| c.peer()).map(|p| p.port()).unwrap_or(0);
                Ok::<_, Status>((i, format!("reply-{i}"), port))
            }),
        )
        .expect("register");
    let addr = serve(&server).await;
    let client = Client::connect(addr.to_string()).await.expect("connect");

    let order = Arc::new(Mutex::new(Vec::with_capacity(N as usize)));
    let start = Instant::now();
    let results = within(Duration::from_secs(20), "1000 concurrent calls", async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..N {
            let client = client.clone();
            let order = Arc::clone(&order);
            set.spawn(async move {
                let reply: (u32, String, u16) = client.call("Slow.Echo", &i).await.expect("call");
                order.lock().unwrap().push(i);
                (i, reply)
            });
        }
        let mut results = Vec::with_capacity(N as usize);
        while let Some(joined) = set.join_next().await {
            results.push(joined.expect("task"));
        }
        results
    })
    .await;
    let elapsed = start.elapsed();

    assert_eq!(results.len(), N as usize);
    let mut ports = HashSet::new();
    for (i, (echoed, text, port)) in &results {
        assert_eq!(echoed, i, "reply matched to the wrong request");
        assert_eq!(text, &format!("reply-{i}"));
        ports.insert(*port);
    }
    assert_eq!(ports.len(), 1, "all calls should share one connection (one client port), saw {ports:?}");

    let order = order.lock().unwrap().clone();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..N).collect::<Vec<_>>(), "every call completed exactly once");
    assert_ne!(order, (0..N).collect::<Vec<_>>(), "calls should complete out of issue order");
    // Run one after another they would take ~24 s; concurrently ~50 ms.
    assert!(elapsed < Duration::from_secs(5), "calls did not run concurrently: {elapsed:?}");
}

// ---------------------------------------------------------------------------
// 4. deadline exceeded
// ---------------------------------------------------------------------------

/// Registers `Slow.Sleep`: sleeps 2 s under a drop guard reporting on `tx`.
fn register_sleeper(server: &Server, tx: mpsc::UnboundedSender<Life>) {
    server
        .router()
        .add_method(
            "Slow.Sleep",
            handler_fn(move |(): ()| {
                let guard = DropGuard::start(&tx);
                async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    guard.finish();
                    Ok::<_, Status>(())
                }
            }),
        )
        .expect("register");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_exceeded_fails_fast_and_cancels_the_handler() {
    let server = Server::builder().build();
    let (tx, mut rx) = mpsc::unbounded_channel();
    register_sleeper(&server, tx);
    let addr = serve(&server).await;
    // 50 ms of transit time, as on a real network: the server's deadline
    // (counted from when it decodes the frame) ends clearly after the
    // client's. On bare loopback both end in the same timer tick and which
    // error the caller sees is a race; see
    // `expired_deadline_is_always_reported_as_deadline_exceeded_on_loopback`.
    let (proxy, _) = proxy(addr, Duration::from_millis(50)).await;
    let client = Client::connect(proxy.to_string()).await.expect("connect");

    let start = Instant::now();
    let opts = CallOptions::new().timeout(Duration::from_millis(100));
    let res: Result<(), Error> = within(WAIT, "call with deadline", client.call_with("Slow.Sleep", &(), &opts)).await;
    let elapsed = start.elapsed();
    match &res {
        Err(Error::DeadlineExceeded(d)) => assert_eq!(*d, Duration::from_millis(100)),
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    let err = res.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(err.retry(), Retry::Never);
    assert!(elapsed >= Duration::from_millis(90), "returned before the deadline: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "deadline not enforced promptly: {elapsed:?}");
    assert_eq!(next_life(&mut rx, Duration::from_secs(2)).await, Life::Started);
    assert_eq!(next_life(&mut rx, Duration::from_secs(2)).await, Life::Dropped, "handler was not cancelled");
}

/// Regression test for a race: with the client and server deadlines ending in
/// the same timer tick (loopback), the server's `DeadlineExceeded` status can
/// reach the caller before the client's own timer is polled. The caller must
/// still get `Error::DeadlineExceeded`, whichever side's timer won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_deadline_is_always_reported_as_deadline_exceeded_on_loopback() {
    let server = Server::builder().build();
    let (tx, _rx) = mpsc::unbounded_channel();
    register_sleeper(&server, tx);
    let addr = serve(&server).await;
    let client = Client::connect(addr.to_string()).await.expect("connect");

    // The race does not lose every time: up to 10 rounds of 100 calls
    // (about 100 ms each), stopping at the first wrongly reported call.
    let opts = CallOptions::new().timeout(Duration::from_millis(100));
    for round in 0..10 {
        let outcomes = within(WAIT, "100 calls with deadlines", async {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..100 {
                let (client, opts) = (client.clone(), opts.clone());
                set.spawn(async move { client.call_with::<(), ()>("Slow.Sleep", &(), &opts).await });
            }
            let mut outcomes = Vec::new();
            while let Some(joined) = set.join_next().await {
                outcomes.push(joined.expect("task"));
            }
            outcomes
        })
        .await;
        let wrong: Vec<String> = outcomes
            .iter()
            .filter(|r| !matches!(r, Err(Error::DeadlineExceeded(_))))
            .map(|r| format!("{r:?}"))
            .collect();
        assert!(
            wrong.is_empty(),
            "round {round}: {} of 100 expired calls were not Error::DeadlineExceeded, e.g. {}",
            wrong.len(),
            wrong[0]
        );
    }
}

/// Sets a deadline on the request below the client's own timer, so only the
/// server knows about it.
struct WireDeadlineOnly(Duration);

impl Middleware<Error> for WireDeadlineOnly {
    fn call<'a>(&'a self, mut req: Request, next: Next<'a, Error>) -> BoxFuture<'a, Result<Response, Error>> {
        req.deadline = Some(Instant::now() + self.0);
        next.run(req)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_enforces_the_deadline_it_received() {
    let server = Server::builder().build();
    let (tx, mut rx) = mpsc::unbounded_channel();
    register_sleeper(&server, tx);
    let addr = serve(&server).await;
    // The client itself never times out and never cancels: any deadline
    // error must come from the server.
    let client = Client::builder(addr.to_string())
        .timeout(None)
        .layer(WireDeadlineOnly(Duration::from_millis(100)))
        .connect()
        .await
        .expect("connect");

    let start = Instant::now();
    let res: Result<(), Error> = within(WAIT, "server deadline", client.call("Slow.Sleep", &())).await;
    let elapsed = start.elapsed();
    match res {
        Err(Error::Status(s)) => {
            assert_eq!(s.code(), Code::DeadlineExceeded, "{s}");
            assert!(s.message().contains("server"), "{s}");
        }
        other => panic!("expected a DeadlineExceeded status from the server, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(1), "server did not enforce the deadline promptly: {elapsed:?}");
    assert_eq!(next_life(&mut rx, Duration::from_secs(2)).await, Life::Started);
    assert_eq!(next_life(&mut rx, Duration::from_secs(2)).await, Life::Dropped, "handler was not cancelled");
}

// ---------------------------------------------------------------------------
// 5. dropping a call cancels the handler
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_cancels_its_handler_on_the_server() {
    let server = Server::builder().build();
    let (tx, mut rx) = mpsc::unbounded_channel();
    server
        .router()
        .add_method(
            "Block.Forever",
            handler_fn(move |(): ()| {
                let guard = DropGuard::start(&tx);
                async move {
                    std::future::pending::<()>().await;
                    guard.finish();
                    Ok::<_, Status>(())
                }
            }),
        )
        .expect("register");
    server.router().add_method("Block.Quick", handler_fn(|x: u8| async move { Ok::<_, Status>(x) })).expect("register");
    let addr = serve(&server).await;
    let client = Client::builder(addr.to_string()).timeout(None).connect().await.expect("connect");

    // Drop by aborting the task that owns the call future.
    let c = client.clone();
    let call = tokio::spawn(async move { c.call::<(), ()>("Block.Forever", &()).await });
    assert_eq!(next_life(&mut rx, Duration::from_secs(2)).await, Life::Started);
    call.abort();
    let joined = within(WAIT, "aborted call task", call).await;
    assert!(joined.unwrap_err().is_cancelled());
    assert_eq!(next_life(&mut rx, Duration::from_secs(2)).await, Life::Dropped, "cancel did not reach the handler");

    // Drop by losing a select: the other branch wins once the handler started.
    let outcome = within(WAIT, "select", async {
        tokio::select! {
            res = client.call::<(), ()>("Block.Forever", &()) => Err(res),
            life = rx.recv() => Ok(life),
        }
    })
    .await;
    assert_eq!(outcome.expect("the call itself should not finish"), Some(Life::Started));
    assert_eq!(next_life(&mut rx, Duration::from_secs(2)).await, Life::Dropped, "cancel did not reach the handler");

    // The connection is still fine for other calls.
    assert_eq!(within(WAIT, "quick call", client.call::<u8, u8>("Block.Quick", &7)).await.expect("quick"), 7);
}

// ---------------------------------------------------------------------------
// 6. unknown service / method
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_service_and_method_are_not_found() {
    let server = Server::builder().service(ArithServer::new(Calculator)).build();
    server.router().add_method("Math.Add", handler_fn(|a: Args| async move { Ok::<_, Status>(a.a + a.b) })).unwrap();
    let addr = serve(&server).await;
    let client = Client::connect(addr.to_string()).await.expect("connect");
    let args = Args { a: 1, b: 2 };

    let cases = [
        ("Nope.Add", "Nope"),          // unknown service
        ("Math.Subtract", "Subtract"), // unknown method of a dynamic service
        ("Arith.Power", "Power"),      // unknown method of a service object
    ];
    for (method, named) in cases {
        let res: Result<i64, Error> = within(WAIT, method, client.call(method, &args)).await;
        match res {
            Err(Error::Status(s)) => {
                assert_eq!(s.code(), Code::NotFound, "{method}: {s}");
                assert!(s.message().contains(named), "{method}: message should name {named:?}: {s}");
            }
            other => panic!("{method}: expected NotFound, got {other:?}"),
        }
    }
    // The unknown-method message names the service too.
    let err = client.call::<Args, i64>("Math.Subtract", &args).await.unwrap_err();
    assert!(err.status().unwrap().message().contains("Math"), "{err}");
    assert_eq!(err.retry(), Retry::Never);

    // ...and real methods still answer.
    assert_eq!(client.call::<Args, i64>("Math.Add", &args).await.expect("Math.Add"), 3);
}

// ---------------------------------------------------------------------------
// 7. application errors arrive intact
// ---------------------------------------------------------------------------

#[tokio::test]
async fn application_status_reaches_the_caller_intact() {
    // Details are opaque bytes: include NUL, invalid UTF-8 and a JSON doc.
    let mut details = vec![0u8, 0xff, 0xfe, b'\n'];
    details.extend_from_slice(br#"{"field":"B","reason":"zero"}"#);
    let details = Bytes::from(details);

    let server = Server::builder().build();
    let d = details.clone();
    server
        .router()
        .add_method(
            "Math.Divide",
            handler_fn(move |args: Args| {
                let d = d.clone();
                async move {
                    if args.b == 0 {
                        return Err(Status::invalid_argument("B is zero").with_details(d));
                    }
                    Ok(args.a / args.b)
                }
            }),
        )
        .unwrap();
    let addr = serve(&server).await;

    for codec in SERDE_CODECS {
        let client = Client::builder(addr.to_string()).codec(codec).connect().await.expect("connect");
        let err =
            within(WAIT, "divide", client.call::<Args, i64>("Math.Divide", &Args { a: 1, b: 0 })).await.unwrap_err();
        let Error::Status(status) = &err else { panic!("expected Error::Status, got {err:?}") };
        assert_eq!(status.code(), Code::InvalidArgument, "{codec}");
        assert_eq!(status.message(), "B is zero", "{codec}");
        assert_eq!(status.details(), &details, "{codec}");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.retry(), Retry::Never);
        assert!(!err.is_retryable());
        assert_eq!(&err.to_status(), status);

        assert_eq!(client.call::<Args, i64>("Math.Divide", &Args { a: 9, b: 3 }).await.expect("divide"), 3);
    }
}

// ---------------------------------------------------------------------------
// 8. middleware
// ---------------------------------------------------------------------------

type Log = Arc<Mutex<Vec<String>>>;

/// Records entry and exit around the rest of the chain (either side).
struct Recorder {
    name: &'static str,
    log: Log,
}

impl<E: Send + 'static> Middleware<E> for Recorder {
    fn call<'a>(&'a self, req: Request, next: Next<'a, E>) -> BoxFuture<'a, Result<Response, E>> {
        Box::pin(async move {
            self.log.lock().unwrap().push(format!("{}:before", self.name));
            let res = next.run(req).await;
            self.log.lock().unwrap().push(format!("{}:after", self.name));
            res
        })
    }
}

/// Refuses calls without a `tenant` key.
struct RequireTenant;

impl Middleware<Status> for RequireTenant {
    fn call<'a>(&'a self, req: Request, next: Next<'a, Status>) -> BoxFuture<'a, Result<Response, Status>> {
        Box::pin(async move {
            if req.metadata.get("tenant").is_none() {
                return Err(Status::unauthenticated("missing tenant"));
            }
            next.run(req).await
        })
    }
}

/// Adds a metadata key on the client side.
struct AddKey;

impl Middleware<Error> for AddKey {
    fn call<'a>(&'a self, mut req: Request, next: Next<'a, Error>) -> BoxFuture<'a, Result<Response, Error>> {
        req.metadata.insert("x-added-by", "client-middleware");
        next.run(req)
    }
}

#[tokio::test]
async fn server_and_client_middleware_run_in_order_and_can_short_circuit() {
    let server_log: Log = Arc::default();
    let client_log: Log = Arc::default();
    let server = Server::builder()
        .layer(Recorder { name: "s1", log: Arc::clone(&server_log) })
        .layer(Recorder { name: "s2", log: Arc::clone(&server_log) })
        .layer(RequireTenant)
        .build();
    let handler_log = Arc::clone(&server_log);
    server
        .router()
        .add_method(
            "Who.Am",
            handler_fn(move |(): ()| {
                handler_log.lock().unwrap().push("handler".into());
                async move {
                    let ctx = Context::current().expect("handler runs inside a Context");
                    let meta = ctx.metadata();
                    Ok::<_, Status>((
                        meta.get("tenant").map(str::to_owned),
                        meta.get("x-added-by").map(str::to_owned),
                        meta.method().map(str::to_owned),
                    ))
                }
            }),
        )
        .unwrap();
    let addr = serve(&server).await;
    let client = Client::builder(addr.to_string())
        .layer(Recorder { name: "c1", log: Arc::clone(&client_log) })
        .layer(Recorder { name: "c2", log: Arc::clone(&client_log) })
        .layer(AddKey)
        .connect()
        .await
        .expect("connect");

    type Who = (Option<String>, Option<String>, Option<String>);

    // No tenant: short-circuited before the handler.
    let res: Result<Who, Error> = within(WAIT, "no tenant", client.call("Who.Am", &())).await;
    match res {
        Err(Error::Status(s)) => {
            assert_eq!(s.code(), Code::Unauthenticated, "{s}");
            assert_eq!(s.message(), "missing tenant");
        }
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
    assert_eq!(*server_log.lock().unwrap(), ["s1:before", "s2:before", "s2:after", "s1:after"]);
    assert_eq!(*client_log.lock().unwrap(), ["c1:before", "c2:before", "c2:after", "c1:after"]);
    server_log.lock().unwrap().clear();
    client_log.lock().unwrap().clear();

    // With a tenant: passes, and the handler sees both keys.
    let opts = CallOptions::new().metadata("tenant", "acme");
    let who: Who = within(WAIT, "with tenant", client.call_with("Who.Am", &(), &opts)).await.expect("call");
    assert_eq!(who, (Some("acme".into()), Some("client-middleware".into()), Some("Who.Am".into())));
    assert_eq!(*server_log.lock().unwrap(), ["s1:before", "s2:before", "handler", "s2:after", "s1:after"]);
    assert_eq!(*client_log.lock().unwrap(), ["c1:before", "c2:before", "c2:after", "c1:after"]);
}

// ---------------------------------------------------------------------------
// 9. deadline and trace context propagation through a nested call
// ---------------------------------------------------------------------------

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Sets the W3C trace context on every outgoing request.
struct SetTrace;

impl Middleware<Error> for SetTrace {
    fn call<'a>(&'a self, mut req: Request, next: Next<'a, Error>) -> BoxFuture<'a, Result<Response, Error>> {
        req.metadata.set_trace_context(TRACEPARENT);
        next.run(req)
    }
}

/// What a handler saw: remaining deadline (µs) and trace context.
type Seen = (Option<u64>, Option<String>);

fn seen_here() -> Seen {
    let ctx = Context::current().expect("inside a handler");
    let remaining = ctx.remaining().map(|d| d.as_micros() as u64);
    (remaining, ctx.metadata().trace_context().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_and_trace_context_propagate_to_nested_calls() {
    // Server 2: B reports what it saw.
    let server_b = Server::builder().build();
    server_b.router().add_method("B.Seen", handler_fn(|(): ()| async move { Ok::<_, Status>(seen_here()) })).unwrap();
    let addr_b = serve(&server_b).await;
    // A's client of B has a long default timeout (30 s): B can only see a
    // short deadline if A's own deadline was propagated.
    let to_b = Client::connect(addr_b.to_string()).await.expect("connect to B");
    assert_eq!(to_b.config().timeout, Some(Duration::from_secs(30)));

    // Server 1: A reports what it saw, then calls B.
    let server_a = Server::builder().build();
    server_a
        .router()
        .add_method(
            "A.Forward",
            handler_fn(move |(): ()| {
                let to_b = to_b.clone();
                async move {
                    let a = seen_here();
                    let b: Seen = to_b.call("B.Seen", &()).await.map_err(|e| e.to_status())?;
                    Ok::<_, Status>((a, b))
                }
            }),
        )
        .unwrap();
    let addr_a = serve(&server_a).await;
    let client = Client::builder(addr_a.to_string()).layer(SetTrace).connect().await.expect("connect to A");

    let opts = CallOptions::new().timeout(Duration::from_millis(300));
    let (a, b): (Seen, Seen) = within(WAIT, "nested call", client.call_with("A.Forward", &(), &opts)).await.unwrap();

    let limit = Duration::from_millis(300).as_micros() as u64;
    let a_left = a.0.expect("A should have a deadline");
    let b_left = b.0.expect("B should have a deadline (propagated from A)");
    assert!(a_left > 0 && a_left <= limit, "A saw {a_left} µs");
    assert!(b_left > 0 && b_left <= limit, "B saw {b_left} µs: deadline not propagated");
    assert_eq!(a.1.as_deref(), Some(TRACEPARENT), "A should see the caller's trace context");
    assert_eq!(b.1.as_deref(), Some(TRACEPARENT), "B should see the trace context A was called with");
}

// ---------------------------------------------------------------------------
// 10. ping
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ping_measures_a_round_trip() {
    let server = Server::builder().build();
    let addr = serve(&server).await;
    let client = Client::connect(addr.to_string()).await.expect("connect");
    for _ in 0..3 {
        let rtt = within(WAIT, "ping", client.ping()).await.expect("ping");
        assert!(rtt > Duration::ZERO && rtt < WAIT, "{rtt:?}");
    }

    // Once the server is gone, ping fails rather than pretending.
    within(WAIT, "shutdown", server.shutdown()).await;
    let res = within(WAIT, "ping after shutdown", client.ping()).await;
    assert!(res.is_err(), "ping after shutdown succeeded: {res:?}");
}

// ---------------------------------------------------------------------------
// 11. large payloads
// ---------------------------------------------------------------------------

fn pattern(len: usize) -> Vec<u8> {
    // Not compressible to nothing, not constant: catches reordering and truncation.
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn register_blob_echo(server: &Server, calls: Arc<AtomicUsize>) {
    server
        .router()
        .add_method(
            "Blob.Echo",
            handler_fn(move |blob: Blob| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, Status>(blob) }
            }),
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_round_trip_and_oversized_requests_are_not_sent() {
    let server = Server::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    register_blob_echo(&server, Arc::clone(&calls));
    let addr = serve(&server).await;

    // 4 MiB echoes intact in the binary codec.
    let client = Client::builder(addr.to_string()).codec(Codec::Binary).connect().await.expect("connect");
    let blob = Blob { data: pattern(4 << 20) };
    let back: Blob = within(WAIT, "4 MiB echo", client.call("Blob.Echo", &blob)).await.expect("echo");
    assert_eq!(back.data.len(), blob.data.len());
    assert!(back == blob, "4 MiB payload came back altered");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A client with a 64 KiB frame limit refuses a 100 KiB request before
    // sending it: nothing crosses the (counting) proxy, no handler runs.
    let (proxy, traffic) = counting_proxy(addr).await;
    let max = 64 << 10;
    let small = Client::builder(proxy.to_string())
        .config(ClientConfig::default().max_frame(max))
        .connect()
        .await
        .expect("connect through proxy");
    within(WAIT, "ping", small.ping()).await.expect("ping");
    let up_before = traffic.up();
    let big = Blob { data: pattern(100 << 10) };
    let res: Result<Blob, Error> = within(WAIT, "oversized", small.call("Blob.Echo", &big)).await;
    match res {
        Err(Error::TooLarge { len, max: m }) => {
            assert_eq!(m, max);
            assert!(len > max, "len {len} should exceed {max}");
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|b| b.data.len())),
    }
    assert_eq!(traffic.up(), up_before, "bytes were sent for a request that was too large");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran for a request that was too large");

    // The same client still makes calls that fit.
    let fits = Blob { data: pattern(1000) };
    let back: Blob = within(WAIT, "small echo", small.call("Blob.Echo", &fits)).await.expect("echo");
    assert_eq!(back, fits);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------
// 12. compression
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_and_responses_round_trip_and_shrink_on_the_wire() {
    let server = Server::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    register_blob_echo(&server, calls);
    let addr = serve(&server).await;

    let line = b"switchboard compresses repetitive payloads very well. ";
    let data: Vec<u8> = line.iter().copied().cycle().take(1 << 20).collect();
    let blob = Blob { data };

    // Compression on: intact, and far fewer than 1 MiB on the wire each way.
    let (proxy, traffic) = counting_proxy(addr).await;
    let config = ClientConfig::default().compress_threshold(Some(1024));
    let client = Client::builder(proxy.to_string()).config(config).connect().await.expect("connect");
    let back: Blob = within(WAIT, "compressed echo", client.call("Blob.Echo", &blob)).await.expect("echo");
    assert!(back == blob, "compressed payload came back altered");
    assert!(traffic.up() < 64 << 10, "request was not compressed: {} bytes up", traffic.up());
    assert!(traffic.down() < 64 << 10, "response was not compressed: {} bytes down", traffic.down());

    // Small payloads below the threshold still work.
    let tiny = Blob { data: b"tiny".to_vec() };
    let back: Blob = within(WAIT, "tiny echo", client.call("Blob.Echo", &tiny)).await.expect("echo");
    assert_eq!(back, tiny);

    // Control: without compression the same call moves the full megabyte
    // each way (the proxy counts correctly).
    let (proxy, plain) = counting_proxy(addr).await;
    let client = Client::connect(proxy.to_string()).await.expect("connect");
    let back: Blob = within(WAIT, "plain echo", client.call("Blob.Echo", &blob)).await.expect("echo");
    assert!(back == blob);
    assert!(plain.up() > 1 << 20, "{} bytes up", plain.up());
    assert!(plain.down() > 1 << 20, "{} bytes down", plain.down());
}
