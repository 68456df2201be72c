//! Wire compatibility with Go's net/rpc, against real Go programs
//! (tests/go/netrpc, standard library only): unmodified Go clients (rpc.Dial,
//! jsonrpc.Dial, rpc.DialHTTP) call a Switchboard server on the port it
//! serves its own protocol on, and the Switchboard client (`GoClient`) calls
//! Go servers.

mod common;
#[path = "support/go.rs"]
mod go;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{serve, start};
use serde::{Deserialize, Serialize};
use switchboard::go::{GoClient, GoProtocol, NetRpc};
use switchboard::server::handler_fn;
use switchboard::Channel;
use switchboard::{Client, Code, Error, Server, Status};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Args {
    #[serde(rename = "A")]
    a: i64,
    #[serde(rename = "B")]
    b: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Quotient {
    #[serde(rename = "Quo")]
    quo: i64,
    #[serde(rename = "Rem")]
    rem: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inner {
    name: String,
    tags: Vec<String>,
    score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Nested {
    title: String,
    count: i64,
    ratio: f64,
    flag: bool,
    #[serde(with = "switchboard::codec::gob::bytes")]
    data: Vec<u8>,
    items: Vec<Inner>,
    labels: BTreeMap<String, i64>,
    ptr: Option<Inner>,
    neg: i32,
    big: u64,
}

/// The services the Go peer's server has, in Rust: one set of handlers for
/// Switchboard and Go callers alike.
fn server() -> Server {
    let server = Server::builder().with(NetRpc::default()).build();
    let router = server.router();
    let add = |name: &str, handler| router.add_method(name, handler).expect("valid name");
    add("Arith.Multiply", handler_fn(|a: Args| async move { Ok::<_, Status>(a.a * a.b) }));
    add(
        "Arith.Divide",
        handler_fn(|a: Args| async move {
            if a.b == 0 {
                return Err(Status::invalid_argument("divide by zero"));
            }
            Ok(Quotient { quo: a.a / a.b, rem: a.a % a.b })
        }),
    );
    add("Echo.Nested", handler_fn(|n: Nested| async move { Ok::<_, Status>(n) }));
    add("Echo.Bytes", handler_fn(|b: switchboard::codec::gob::Bytes| async move { Ok::<_, Status>(b) }));
    add("Echo.Text", handler_fn(|s: String| async move { Ok::<_, Status>(s) }));
    server
}

/// Runs a Go client case against `addr` and checks it printed what it
/// prints against Go's own server (`go::NETRPC_CASES`).
async fn go_case(proto: &str, addr: &str, case: &str) -> String {
    let (proto, addr, case) = (proto.to_owned(), addr.to_owned(), case.to_owned());
    tokio::task::spawn_blocking(move || go::check_case(&proto, &addr, &case)).await.expect("go client")
}

const PROTOCOLS: [&str; 3] = ["gob", "jsonrpc", "http"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_call_a_switchboard_server_on_its_own_port() {
    let (server, addr) = start(server()).await;
    for proto in PROTOCOLS {
        for case in ["multiply", "divide", "apperror", "unknown", "unknownservice", "illformed", "text"] {
            go_case(proto, &addr, case).await;
        }
    }
    // The same port still speaks Switchboard's own protocol.
    let native = Client::connect(addr.clone()).await.expect("connect");
    assert_eq!(native.call::<Args, i64>("Arith.Multiply", &Args { a: 6, b: 7 }).await.expect("native call"), 42);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_structs_maps_non_ascii_text_and_a_mebibyte_of_bytes_round_trip() {
    let (server, addr) = start(server()).await;
    for proto in PROTOCOLS {
        go_case(proto, &addr, "nested").await;
        go_case(proto, &addr, "bytes").await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pipelined_calls_on_one_go_connection_are_answered() {
    let (server, addr) = start(server()).await;
    for proto in PROTOCOLS {
        go_case(proto, &addr, "concurrent").await;
    }
    server.shutdown().await;
}

/// Captures the server's log lines.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_mid_stream_closes_that_connection_logs_why_and_others_carry_on() {
    let logs = Logs::default();
    let sink = logs.clone();
    let _ = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .try_init();
    let (server, addr) = start(server()).await;
    // A Switchboard client keeps its connection across the whole test.
    let native = Client::connect(addr.clone()).await.expect("connect");
    for proto in PROTOCOLS {
        go_case(proto, &addr, "garbage").await;
        go_case(proto, &addr, "multiply").await; // new connections are served
    }
    assert_eq!(native.call::<Args, i64>("Arith.Multiply", &Args { a: 2, b: 3 }).await.expect("still connected"), 6);
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let closings: Vec<&str> = logged.lines().filter(|l| l.contains("closing a net/rpc connection")).collect();
    assert!(closings.len() >= 3, "one warning per garbage connection, with the reason:\n{logged}");
    assert!(closings.iter().any(|l| l.contains("gob")) && closings.iter().any(|l| l.contains("JSON")), "{logged}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switchboard_client_calls_go_servers_typed_and_untyped() {
    for proto in ["gob", "jsonrpc", "http"] {
        let go_server = tokio::task::spawn_blocking(move || go::GoServer::start(proto)).await.expect("go server");
        let protocol: GoProtocol = proto.parse().expect("protocol");
        let go = GoClient::connect(go_server.addr(), protocol).await.expect("connect");
        let product: i64 = go.call("Arith.Multiply", &Args { a: 7, b: 8 }).await.expect("multiply");
        assert_eq!(product, 56, "{proto}");
        let q: Quotient = go.call("Arith.Divide", &Args { a: 17, b: 5 }).await.expect("divide");
        assert_eq!(q, Quotient { quo: 3, rem: 2 }, "{proto}");
        // Untyped, as `switchboard call --protocol` does: in the JSON codec,
        // whose objects go to Go as structs.
        let json = switchboard::CallOptions::new().codec(switchboard::Codec::Json);
        let any: serde_json::Value =
            go.call_with("Arith.Divide", &serde_json::json!({"A": 9, "B": 2}), &json).await.expect("untyped");
        assert_eq!(any, serde_json::json!({"Quo": 4, "Rem": 1}), "{proto}");
        // The Go server's errors arrive as statuses.
        match go.call::<Args, Quotient>("Arith.Divide", &Args { a: 1, b: 0 }).await {
            Err(Error::Status(s)) => assert_eq!((s.code(), s.message()), (Code::Unknown, "divide by zero"), "{proto}"),
            other => panic!("{proto}: {other:?}"),
        }
        match go.call::<Args, i64>("Arith.Nope", &Args { a: 1, b: 0 }).await {
            Err(Error::Status(s)) => assert_eq!(s.code(), Code::NotFound, "{proto}: {s}"),
            other => panic!("{proto}: {other:?}"),
        }
        let text: String = go.call("Echo.Text", "héllo wörld ✓ 日本").await.expect("text");
        assert_eq!(text, "héllo wörld ✓ 日本");
        // 1,000 calls in flight on the one connection.
        let calls = (0..1000i64).map(|i| {
            let go = go.clone();
            async move { go.call::<Args, i64>("Arith.Multiply", &Args { a: i, b: 3 }).await.map(|p| (i, p)) }
        });
        let answers = futures::future::join_all(calls).await;
        for answer in answers {
            let (i, p) = answer.expect("every call answered");
            assert_eq!(p, i * 3, "{proto}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switchboard_client_sends_go_servers_nested_values_and_bytes() {
    let nested = Nested {
        title: "héllo wörld ✓ 日本".into(),
        count: -12_345_678_901,
        ratio: 0.25,
        flag: true,
        data: (0..=255u8).cycle().take(4096).collect(),
        items: vec![
            Inner { name: "a".into(), tags: vec!["x".into(), "ÿ".into()], score: 1.5 },
            Inner { name: "b".into(), tags: vec!["z".into()], score: -2.0 },
        ],
        labels: BTreeMap::from([("one".into(), 1), ("two".into(), 2)]),
        ptr: Some(Inner { name: "p".into(), tags: vec!["q".into()], score: 3.25 }),
        neg: -7,
        big: u64::MAX,
    };
    let mebibyte: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    for proto in ["gob", "jsonrpc", "http"] {
        let go_server = tokio::task::spawn_blocking(move || go::GoServer::start(proto)).await.expect("go server");
        let go = GoClient::connect(go_server.addr(), proto.parse().expect("protocol")).await.expect("connect");
        let back: Nested = go.call("Echo.Nested", &nested).await.expect("nested");
        assert_eq!(back, nested, "{proto}");
        let bytes: switchboard::codec::gob::Bytes =
            go.call("Echo.Bytes", &switchboard::codec::gob::Bytes(mebibyte.clone())).await.expect("bytes");
        assert_eq!(bytes.len(), mebibyte.len(), "{proto}");
        assert!(bytes.0 == mebibyte, "{proto}: the mebibyte came back changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_gob_connection_run_concurrently_and_are_answered_as_they_finish() {
    let (server, addr) = start(server()).await;
    // The handler says when a slow call (longer than 1 ms) has arrived, so
    // the fast one is sent while the slow one is surely running.
    let slow_arrived = Arc::new(tokio::sync::Notify::new());
    let arrived = slow_arrived.clone();
    server
        .router()
        .add_method(
            "Sleep.For",
            handler_fn(move |ms: u64| {
                if ms > 1 {
                    arrived.notify_one();
                }
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    Ok::<_, Status>(ms)
                }
            }),
        )
        .expect("valid name");
    for protocol in [GoProtocol::Gob, GoProtocol::JsonRpc, GoProtocol::Http] {
        // Our own Go-protocol client against our own server: one connection.
        let go = GoClient::connect(addr.clone(), protocol).await.expect("connect");
        let slow = tokio::spawn({
            let go = go.clone();
            async move { go.call::<u64, u64>("Sleep.For", &800).await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), slow_arrived.notified())
            .await
            .unwrap_or_else(|_| panic!("{protocol:?}: the slow call never reached its handler"));
        let began = std::time::Instant::now();
        assert_eq!(go.call::<u64, u64>("Sleep.For", &1).await.expect("fast"), 1);
        assert!(began.elapsed() < std::time::Duration::from_millis(500), "{protocol:?}: the fast call waited");
        assert!(!slow.is_finished(), "{protocol:?}: answered out of order, the slow one still running");
        assert_eq!(slow.await.expect("join").expect("slow"), 800);
    }
    server.shutdown().await;
}

/// `GoClient` follows the native client's deadline rule: called from inside
/// a handler, its wait is capped by what is left of that handler's
/// deadline, not its own 30 s default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_call_inside_a_handler_gives_up_at_the_handler_s_deadline() {
    // The Go-speaking server: one method that never answers in time.
    let quick_stop = std::time::Duration::from_millis(100);
    let slow = Server::builder().with(NetRpc::default()).shutdown_timeout(quick_stop).build();
    slow.router()
        .add_method(
            "Slow.Wait",
            handler_fn(|_: i64| async move {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                Ok::<_, Status>(0i64)
            }),
        )
        .expect("valid name");
    let slow_addr = serve(&slow).await.to_string();

    // The front: its handler calls the slow server over gob and reports
    // what the GoClient said, and when.
    let go = GoClient::connect(slow_addr, GoProtocol::Gob).await.expect("connect");
    let (report, mut reported) = tokio::sync::mpsc::channel(1);
    let front = Server::builder().shutdown_timeout(quick_stop).build();
    front
        .router()
        .add_method(
            "Front.Call",
            handler_fn(move |_: i64| {
                let (go, report) = (go.clone(), report.clone());
                async move {
                    // The call runs on a task of its own, inside this
                    // handler's context, so it outlives the handler (which
                    // the server drops at the deadline) and can report.
                    let ctx = switchboard::Context::current().expect("inside a handler");
                    tokio::spawn(ctx.scope(async move {
                        let started = std::time::Instant::now();
                        let result: Result<i64, Error> = go.call("Slow.Wait", &1i64).await;
                        let _ = report.send((result.map_err(|e| e.to_string()), started.elapsed())).await;
                    }));
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    Ok::<_, Status>(0i64)
                }
            }),
        )
        .expect("valid name");
    let front_addr = serve(&front).await.to_string();

    let client = Client::connect(front_addr).await.expect("connect");
    let opts = switchboard::CallOptions::new().timeout(std::time::Duration::from_millis(300));
    let outer: Result<i64, Error> = client.call_with("Front.Call", &0i64, &opts).await;
    assert!(matches!(outer, Err(Error::DeadlineExceeded(_))), "{outer:?}");
    let (result, took) = tokio::time::timeout(std::time::Duration::from_secs(10), reported.recv())
        .await
        .expect("the handler's Go call gave up well before its own 30 s")
        .expect("a report");
    let error = result.expect_err("the slow call cannot succeed");
    assert!(error.contains("deadline"), "{error}");
    assert!(took < std::time::Duration::from_secs(5), "gave up after {took:?}");
    slow.shutdown().await;
    front.shutdown().await;
}
