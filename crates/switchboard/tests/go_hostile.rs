//! Hostile peers on Go's net/rpc protocols (gob, JSON-RPC, HTTP `CONNECT`),
//! over real sockets against a real server on 127.0.0.1: floods of gob type
//! definitions, input in small pieces, connections that stall or go idle,
//! clients that read none of their answers. Each server runs with short time
//! limits, so the tests take seconds; every wait has a deadline.
//!
//! The server runs in this process, so its memory is the process's resident
//! set (`/proc/self/status`; the peak is reset through
//! `/proc/self/clear_refs`), and its CPU time the process's
//! (`/proc/self/stat`). The tests of this file take a lock, so that run as
//! threads of one process (`cargo test`) they do not measure each other;
//! nextest runs each in a process of its own anyway.

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use common::start;
use serde::Serialize;
use switchboard::codec::gob::{self, Decoder, Encoder};
use switchboard::go::NetRpc;
use switchboard::server::{handler_fn, ServerConfig};
use switchboard::Channel;
use switchboard::{Server, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: usize = 1 << 20;

/// Limits long enough never to fire in a test unless it waits for them.
fn config() -> ServerConfig {
    ServerConfig::default()
        .handshake_timeout(Duration::from_secs(30))
        .frame_timeout(Duration::from_secs(30))
        .idle_timeout(None)
}

#[derive(Serialize)]
struct Args {
    #[serde(rename = "A")]
    a: i64,
    #[serde(rename = "B")]
    b: i64,
}

/// A server held to `config` that speaks Go's net/rpc, with the methods the
/// hostile peers call (start it with `common::start`).
fn server(config: ServerConfig) -> Server {
    let server = Server::builder().config(config).with(NetRpc::default()).build();
    let router = server.router();
    let add = |name: &str, handler| router.add_method(name, handler).expect("valid name");
    add(
        "Arith.Multiply",
        handler_fn(|a: serde_json::Value| async move {
            let (x, y) = (a["A"].as_i64().unwrap_or(0), a["B"].as_i64().unwrap_or(0));
            Ok::<_, Status>(x * y)
        }),
    );
    add("Echo.Bytes", handler_fn(|b: switchboard::codec::gob::Bytes| async move { Ok::<_, Status>(b) }));
    add("Echo.Text", handler_fn(|s: String| async move { Ok::<_, Status>(s) }));
    // Answers after the given number of milliseconds.
    add(
        "Slow.Sleep",
        handler_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Status>(ms)
        }),
    );
    server
}

// --- gob by hand ---------------------------------------------------------------

/// Go's `rpc.Request`.
#[derive(Serialize)]
struct RequestHeader<'a> {
    #[serde(rename = "ServiceMethod")]
    service_method: &'a str,
    #[serde(rename = "Seq")]
    seq: u64,
}

/// One net/rpc call on the gob stream `enc` writes: header, then argument.
fn gob_call<T: Serialize>(enc: &mut Encoder, seq: u64, method: &str, arg: &T) -> Vec<u8> {
    let mut out = Vec::new();
    enc.encode(&RequestHeader { service_method: method, seq }, &mut out).expect("header");
    enc.encode(arg, &mut out).expect("argument");
    out
}

fn put_uint(out: &mut Vec<u8>, x: u64) {
    if x < 0x80 {
        out.push(x as u8);
        return;
    }
    let bytes = x.to_be_bytes();
    let skip = (x.leading_zeros() / 8) as usize;
    out.push(((bytes.len() - skip) as u8).wrapping_neg());
    out.extend_from_slice(&bytes[skip..]);
}

/// `n` type definitions, each of a struct of its own, numbered on after
/// what `enc` has defined (so they continue its stream): the values the
/// encoder writes with them are left out.
fn gob_definitions(enc: &mut Encoder, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut one = Vec::new();
        let value = serde_json::json!({ format!("F{i}"): 1 });
        enc.encode_json("T", &value, &mut one).expect("encode");
        let mut at = 0;
        while let Some((header, len)) = gob::message_len(&one[at..], 1 << 20).expect("framing") {
            let message = &one[at..at + header + len];
            // A definition's type id is negative: gob's sign bit, the low
            // bit of the id's unsigned form, is set.
            let id = &message[header..];
            let last = if id[0] < 0x80 { id[0] } else { id[usize::from(id[0].wrapping_neg())] };
            if last & 1 == 1 {
                out.extend_from_slice(message);
            }
            at += header + len;
        }
    }
    out
}

/// Reads the next gob value of the stream as JSON.
async fn gob_value(stream: &mut TcpStream, buf: &mut Vec<u8>, dec: &mut Decoder) -> serde_json::Value {
    loop {
        if let Some((value, used)) = dec.decode_json(buf).expect("a gob answer") {
            buf.drain(..used);
            return value;
        }
        let mut chunk = vec![0u8; 64 << 10];
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("an answer within 30 s")
            .expect("read");
        assert!(n > 0, "the server closed the connection instead of answering");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one gob answer (header, body) as JSON.
async fn gob_reply(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    dec: &mut Decoder,
) -> (serde_json::Value, serde_json::Value) {
    let header = gob_value(stream, buf, dec).await;
    let body = gob_value(stream, buf, dec).await;
    (header, body)
}

// --- observing ---------------------------------------------------------------

/// Reads (and drops) whatever arrives until the server closes the
/// connection; how long that took, or `None` if it did not within `limit`.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut sink = vec![0u8; 64 << 10];
    let read_to_end = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_to_end).await.ok().map(|()| start.elapsed())
}

fn status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} line"));
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number of kB")
}

/// The resident set now, in bytes.
fn rss() -> usize {
    status_kib("VmRSS:") * 1024
}

/// Starts measuring the peak resident set from now.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak resident set (/proc/self/clear_refs)");
}

/// The peak resident set since [`reset_peak`], in bytes.
fn peak() -> usize {
    status_kib("VmHWM:") * 1024
}

/// CPU time this process has used (all threads, user and system).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses): state is the
    // first, utime and stime the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).expect("stat format");
    let fields: Vec<u64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let ticks = fields[11] + fields[12];
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// How a client sends its bytes: the first `at_once` in one write, the
/// rest in writes of `piece` bytes (each its own TCP segment), one every
/// `pace` (the pause paces the pieces; it waits for nothing).
#[derive(Clone, Copy)]
struct Pieces {
    at_once: usize,
    piece: usize,
    pace: Duration,
}

const AT_ONCE: Pieces = Pieces { at_once: usize::MAX, piece: 1, pace: Duration::ZERO };

/// Sends `bytes` to `addr` as `how` says (a blocking socket with no
/// delay), and waits for the answer to start with `answer` (for an empty
/// `answer`, for its first byte); returns the CPU time the process spent
/// meanwhile.
async fn cost_of_sending(addr: &str, bytes: Vec<u8>, how: Pieces, answer: &[u8]) -> Duration {
    let addr = addr.to_owned();
    let answer = answer.to_vec();
    let before = cpu();
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
        let (first, rest) = bytes.split_at(how.at_once.min(bytes.len()));
        stream.write_all(first).expect("write");
        for chunk in rest.chunks(how.piece) {
            std::thread::sleep(how.pace);
            stream.write_all(chunk).expect("write");
        }
        let mut got = vec![0u8; answer.len().max(1)];
        stream.read_exact(&mut got).expect("an answer");
        assert!(got.starts_with(&answer), "the answer starts as expected");
    })
    .await
    .expect("sender");
    cpu() - before
}

// --- gob type definitions ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_gob_type_definitions_is_refused_as_it_arrives() {
    let _serial = SERIAL.lock().await;
    let (server, addr) = start(server(config())).await;
    let stream = TcpStream::connect(&addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    // A definition of type 65 (id -65 is ff 81) announcing almost 16 MiB:
    // under the frame limit, far over the 4 MiB gob allows for the type
    // definitions of a stream. Sixteen of them, 256 MiB, and never a value.
    let len = 16 * MIB - 64;
    let mut header = Vec::new();
    put_uint(&mut header, len as u64);
    header.extend_from_slice(&[0xff, 0x81]);
    // The rest of the body, in pieces of 1 MiB.
    let filler = vec![0u8; MIB];
    let mut pieces = vec![MIB; (len - 2) / MIB];
    pieces.push((len - 2) % MIB);
    reset_peak();
    let base = rss();
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        for _ in 0..16 {
            if wr.write_all(&header).await.is_err() {
                return sent;
            }
            sent += header.len();
            for &piece in &pieces {
                match tokio::time::timeout(Duration::from_secs(10), wr.write_all(&filler[..piece])).await {
                    Ok(Ok(())) => sent += piece,
                    _ => return sent,
                }
            }
        }
        sent
    });
    let closed = closed_within(&mut rd, Duration::from_secs(20)).await;
    let sent = writer.await.expect("writer");
    let grew = peak().saturating_sub(base);
    eprintln!("type definition flood: {sent} bytes accepted, closed after {closed:?}, peak memory +{grew} bytes");
    assert!(closed.is_some(), "the server kept a connection flooding it with type definitions open");
    assert!(sent < 64 * MIB, "the server read {sent} bytes of type definitions before closing");
    // (Less than one of the messages it announced.)
    assert!(grew < 8 * MIB, "the flood grew the server's memory by {grew} bytes");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_gob_type_definitions_than_a_stream_may_make_close_it() {
    let _serial = SERIAL.lock().await;
    let (server, addr) = start(server(config())).await;
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let mut enc = Encoder::new();
    stream.write_all(&gob_call(&mut enc, 1, "Arith.Multiply", &Args { a: 6, b: 7 })).await.expect("write");
    let (mut buf, mut dec) = (Vec::new(), Decoder::new());
    let (_, product) = gob_reply(&mut stream, &mut buf, &mut dec).await;
    assert_eq!(product, 42);
    // 5,000 small, valid definitions (the limit is 4,096), and no value: the
    // stream is over its limit long before any call would use them.
    let definitions = gob_definitions(&mut enc, 5000);
    assert!(definitions.len() < MIB, "small definitions ({} bytes)", definitions.len());
    let _ = stream.write_all(&definitions).await;
    let closed = closed_within(&mut stream, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "5,000 type definitions did not close the stream");
    server.shutdown().await;
}

// --- input in small pieces ---------------------------------------------------

/// A JSON-RPC `Echo.Text` call of about `len` bytes.
fn json_echo(len: usize) -> Vec<u8> {
    // Quotes and braces inside the string, escaped, as a scanner must see them.
    let text: String = "ab\"{}[]\\ ".chars().cycle().take(len).collect();
    let mut out =
        serde_json::to_vec(&serde_json::json!({"method": "Echo.Text", "params": [text], "id": 1})).expect("json");
    out.push(b'\n');
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_input_in_small_pieces_costs_about_what_it_costs_at_once() {
    let _serial = SERIAL.lock().await;
    let (server, addr) = start(server(config())).await;
    let request = json_echo(512 << 10);
    let answer = b"{\"id\":1,\"result\":\"ab";
    // 512 pieces of 1 KiB, over about 2 s: a server that parses all it has
    // buffered on every read is busy all that time.
    let trickle = Pieces { at_once: 0, piece: 1024, pace: Duration::from_millis(4) };
    // Warm up (first-use allocations, the handler), then measure.
    cost_of_sending(&addr, request.clone(), AT_ONCE, answer).await;
    let whole = cost_of_sending(&addr, request.clone(), AT_ONCE, answer).await;
    let pieces = cost_of_sending(&addr, request.clone(), trickle, answer).await;
    // What reading that many pieces costs anyway (syscalls, wake-ups): a gob
    // call of the same size in the same pieces, one message whose length
    // is known from its first bytes.
    let gob = gob_call(&mut Encoder::new(), 1, "Echo.Bytes", &switchboard::codec::gob::Bytes(vec![7; request.len()]));
    let reading = cost_of_sending(&addr, gob, trickle, &[]).await;
    eprintln!(
        "JSON-RPC, {} bytes: CPU at once {whole:?}, in 1 KiB pieces {pieces:?} (gob in the same pieces {reading:?})",
        request.len()
    );
    let bound = (whole + reading) * 2 + Duration::from_millis(100);
    assert!(pieces <= bound, "in pieces the request cost {pieces:?}, over {bound:?} (at once {whole:?})");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gob_input_in_small_pieces_after_many_definitions_costs_about_what_it_costs_at_once() {
    let _serial = SERIAL.lock().await;
    let (server, addr) = start(server(config())).await;
    // 4,000 type definitions (a Go program with many types defines each on
    // first use), then a request header that trickles in (its method name
    // is long): a reader that looks at its whole buffer on every read goes
    // over every definition again for every piece.
    let long_name = "x".repeat(512 << 10);
    let mut enc = Encoder::new();
    let mut stream = gob_definitions(&mut enc, 4000);
    let definitions = stream.len();
    stream.extend(gob_call(&mut enc, 1, &long_name, &Args { a: 6, b: 7 }));
    let trickle = Pieces { at_once: definitions + 64, piece: 64, pace: Duration::from_micros(200) };
    cost_of_sending(&addr, stream.clone(), AT_ONCE, &[]).await;
    let whole = cost_of_sending(&addr, stream.clone(), AT_ONCE, &[]).await;
    let pieces = cost_of_sending(&addr, stream.clone(), trickle, &[]).await;
    // The same call in the same pieces without the definitions before it.
    let alone = gob_call(&mut Encoder::new(), 1, &long_name, &Args { a: 6, b: 7 });
    let reading = cost_of_sending(&addr, alone, Pieces { at_once: 64, ..trickle }, &[]).await;
    eprintln!(
        "gob, {definitions} bytes of definitions then a 512 KiB header: CPU at once {whole:?}, in 64-byte pieces {pieces:?} (without the definitions {reading:?})"
    );
    // Going over 4,000 definitions per read costs about twice what the
    // read itself does: the margin sits between the two.
    let bound = whole * 2 + reading * 3 / 2 + Duration::from_millis(100);
    assert!(pieces <= bound, "in pieces the stream cost {pieces:?}, over {bound:?} (at once {whole:?})");
    server.shutdown().await;
}

// --- time limits -------------------------------------------------------------

/// Opens a connection, sends `bytes`, and says how long the server took to
/// close it (at most `limit`).
async fn stall_with(addr: &str, bytes: &[u8], limit: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    closed_within(&mut stream, limit).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_stall_before_a_whole_request_are_closed_at_the_handshake_timeout() {
    let _serial = SERIAL.lock().await;
    let handshake = Duration::from_millis(300);
    let (server, addr) = start(server(config().handshake_timeout(handshake))).await;
    let mut enc = Encoder::new();
    let call = gob_call(&mut enc, 1, "Arith.Multiply", &Args { a: 6, b: 7 });
    let cases: [(&str, &[u8]); 6] = [
        ("a lone {", b"{"),
        ("half a JSON-RPC request", br#"{"method":"Arith.Multiply","par"#),
        ("GET and a space", b"GET "),
        ("an HTTP head without its blank line", b"CONNECT /_goRPC_ HTTP/1.0\n"),
        ("half a gob message", &call[..call.len() / 2]),
        ("a gob request header without its body", &call[..call.len() - 8]),
    ];
    for (what, bytes) in cases {
        let closed = stall_with(&addr, bytes, Duration::from_secs(10)).await;
        let Some(after) = closed else { panic!("{what}: not closed within 10 s") };
        assert!(after >= handshake - Duration::from_millis(50), "{what}: closed after {after:?}, before the timeout");
    }
    // A JSON-RPC request trickled in a byte at a time keeps arriving, but is
    // not whole within the handshake timeout either.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let request = br#"{"method":"Arith.Multiply","params":[{"A":6,"B":7}],"id":1}"#.repeat(4);
    let start = Instant::now();
    let trickle = async {
        for b in request.iter() {
            if stream.write_all(std::slice::from_ref(b)).await.is_err() {
                return;
            }
            // Paces the trickle; waits for nothing.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), trickle).await.expect("the trickle ends");
    let after = start.elapsed();
    assert!(after < Duration::from_secs(4), "a trickled request kept its connection for {after:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_started_after_the_first_must_finish_within_the_frame_timeout() {
    let _serial = SERIAL.lock().await;
    let frame = Duration::from_millis(300);
    let (server, addr) = start(server(config().frame_timeout(frame))).await;

    // gob: one call answered, then half of the next.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let mut enc = Encoder::new();
    stream.write_all(&gob_call(&mut enc, 1, "Arith.Multiply", &Args { a: 6, b: 7 })).await.expect("write");
    let (mut buf, mut dec) = (Vec::new(), Decoder::new());
    let (_, product) = gob_reply(&mut stream, &mut buf, &mut dec).await;
    assert_eq!(product, 42);
    let next = gob_call(&mut enc, 2, "Arith.Multiply", &Args { a: 2, b: 3 });
    stream.write_all(&next[..next.len() - 3]).await.expect("write");
    let closed = closed_within(&mut stream, Duration::from_secs(10)).await;
    let after = closed.expect("a half-sent gob call is closed");
    assert!(after >= frame - Duration::from_millis(50), "closed after {after:?}");

    // JSON-RPC: the same.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(b"{\"method\":\"Arith.Multiply\",\"params\":[{\"A\":6,\"B\":7}],\"id\":1}\n{\"meth")
        .await
        .expect("write");
    let mut answer = vec![0u8; 34];
    stream.read_exact(&mut answer).await.expect("the first call's answer");
    assert_eq!(answer, b"{\"id\":1,\"result\":42,\"error\":null}\n");
    let closed = closed_within(&mut stream, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "a half-sent JSON-RPC call is closed");

    // HTTP CONNECT, then half a gob call.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let mut enc = Encoder::new();
    let call = gob_call(&mut enc, 1, "Arith.Multiply", &Args { a: 6, b: 7 });
    let mut bytes = b"CONNECT /_goRPC_ HTTP/1.0\n\n".to_vec();
    bytes.extend_from_slice(&call[..call.len() - 3]);
    stream.write_all(&bytes).await.expect("write");
    let closed = closed_within(&mut stream, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "a half-sent call after CONNECT is closed");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_go_connection_is_closed_but_not_while_a_call_runs() {
    let _serial = SERIAL.lock().await;
    let idle = Duration::from_millis(400);
    // (The handshake timeout is shorter: the clock arms its first timer for
    // the handshake limit and looks at the idle limit from then on.)
    let config = config().idle_timeout(Some(idle)).handshake_timeout(idle / 2);
    let (server, addr) = start(server(config)).await;
    for protocol in ["gob", "jsonrpc"] {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        // A call that runs three idle periods is answered: a running call
        // is not idleness.
        let slow = 3 * idle.as_millis() as u64;
        let start = Instant::now();
        if protocol == "gob" {
            let mut enc = Encoder::new();
            stream.write_all(&gob_call(&mut enc, 1, "Slow.Sleep", &slow)).await.expect("write");
            let (mut buf, mut dec) = (Vec::new(), Decoder::new());
            let (header, ms) = gob_reply(&mut stream, &mut buf, &mut dec).await;
            assert_eq!((header["Error"].as_str(), ms.as_u64()), (Some(""), Some(slow)), "{header}");
        } else {
            let request = format!("{{\"method\":\"Slow.Sleep\",\"params\":[{slow}],\"id\":1}}\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            let expected = format!("{{\"id\":1,\"result\":{slow},\"error\":null}}\n");
            let mut answer = vec![0u8; expected.len()];
            stream.read_exact(&mut answer).await.expect("the slow call's answer");
            assert_eq!(String::from_utf8_lossy(&answer), expected);
        }
        assert!(start.elapsed() >= Duration::from_millis(slow));
        // Then nothing: closed one idle period later.
        let closed = closed_within(&mut stream, Duration::from_secs(10)).await;
        let after = closed.unwrap_or_else(|| panic!("{protocol}: an idle connection stayed open"));
        assert!(after >= idle - Duration::from_millis(50), "{protocol}: closed after {after:?}");
    }
    server.shutdown().await;
}

// --- clients that read nothing -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_read_none_of_their_answers_hold_a_bounded_total() {
    let _serial = SERIAL.lock().await;
    let budget = 16 * MIB;
    let (server, addr) =
        start(server(config().memory_budget(budget).max_queued_bytes(2 * MIB).frame_timeout(Duration::from_secs(1))))
            .await;
    // 40 clients, each sending 8 calls echoing 1 MiB and reading nothing:
    // 320 MiB of answers if the server took them all.
    let mut enc = Encoder::new();
    let first = gob_call(&mut enc, 0, "Echo.Bytes", &switchboard::codec::gob::Bytes(vec![1; MIB]));
    let more = gob_call(&mut enc, 1, "Echo.Bytes", &switchboard::codec::gob::Bytes(vec![1; MIB]));
    let (first, more) = (std::sync::Arc::new(first), std::sync::Arc::new(more));
    reset_peak();
    let base = rss();
    let began = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..40 {
        let (first, more) = (first.clone(), more.clone());
        let addr = addr.clone();
        clients.push(tokio::spawn(async move {
            // A small receive buffer: the kernel takes few of the answers
            // off the server's hands (each costs the debug build ~0.1 s).
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_recv_buffer_size(64 << 10).expect("SO_RCVBUF");
            let mut stream = socket.connect(addr.parse().expect("addr")).await.expect("connect");
            let mut sent = 0;
            for i in 0..8 {
                let call = if i == 0 { &first } else { &more };
                // A write blocked for half a second: the server reads no more.
                match tokio::time::timeout(Duration::from_millis(500), stream.write_all(call)).await {
                    Ok(Ok(())) => sent += 1,
                    _ => break,
                }
            }
            (stream, sent)
        }));
    }
    let mut streams = Vec::new();
    let mut calls = 0;
    for client in clients {
        let (stream, sent) = client.await.expect("client");
        calls += sent;
        streams.push(stream);
    }
    let grew = peak().saturating_sub(base);
    eprintln!(
        "40 clients reading nothing: {calls} calls of 1 MiB sent in {:?}, peak memory +{} MiB",
        began.elapsed(),
        grew / MIB
    );
    // The budget (16 MiB), and what each connection may hold beyond it
    // (about one answer: the one its writer is stuck on); 320 MiB if the
    // server took every call.
    assert!(grew < 80 * MIB, "40 clients that read nothing grew the server by {} MiB", grew / MIB);

    // And those connections end once the frame timeout passes without a
    // write making progress: the clients, still reading nothing, see their
    // writes fail (reading would let the server make progress).
    let start = Instant::now();
    for mut stream in streams {
        let left = Duration::from_secs(20).saturating_sub(start.elapsed());
        let chunk = vec![0u8; 64 << 10];
        let refused = tokio::time::timeout(left, async { while stream.write_all(&chunk).await.is_ok() {} });
        assert!(refused.await.is_ok(), "a connection whose peer reads nothing stayed open for 20 s");
    }
    eprintln!("closed {:?} later", start.elapsed());
    server.shutdown().await;
}

// --- the client side ---------------------------------------------------------

/// A net/rpc "server" that answers one call with `answer` (gob or JSON, the
/// answer to Seq 0), sent a byte at a time.
async fn trickling_server(answer: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let mut request = vec![0u8; 4096];
        let _ = stream.read(&mut request).await;
        for b in answer {
            if stream.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        // Keep the connection open until the client closes it.
        let _ = stream.read(&mut request).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_read_answers_that_arrive_a_byte_at_a_time() {
    use switchboard::go::{GoClient, GoProtocol};
    let _serial = SERIAL.lock().await;
    // JSON-RPC, with quotes and braces in a string.
    let addr = trickling_server(b"{\"id\":0,\"result\":\"a \\\"}{\\\" b\",\"error\":null}\n".to_vec()).await;
    let client = GoClient::connect(addr, GoProtocol::JsonRpc).await.expect("connect");
    let text: String = client.call("Echo.Text", &"x").await.expect("an answer in pieces");
    assert_eq!(text, "a \"}{\" b");

    // gob: the answer's type definitions, header and body.
    let mut enc = Encoder::new();
    #[derive(Serialize)]
    struct ResponseHeader<'a> {
        #[serde(rename = "ServiceMethod")]
        service_method: &'a str,
        #[serde(rename = "Seq")]
        seq: u64,
        #[serde(rename = "Error")]
        error: &'a str,
    }
    let mut answer = Vec::new();
    enc.encode(&ResponseHeader { service_method: "Arith.Multiply", seq: 0, error: "" }, &mut answer).expect("header");
    enc.encode(&42i64, &mut answer).expect("body");
    let addr = trickling_server(answer).await;
    let client = GoClient::connect(addr, GoProtocol::Gob).await.expect("connect");
    let product: i64 = client.call("Arith.Multiply", &Args { a: 6, b: 7 }).await.expect("an answer in pieces");
    assert_eq!(product, 42);

    // Garbage instead of a JSON-RPC answer: the call fails, and says why.
    let addr = trickling_server(b"[1,2,3]".to_vec()).await;
    let client = GoClient::connect(addr, GoProtocol::JsonRpc).await.expect("connect");
    let err = client.call::<_, i64>("Arith.Multiply", &Args { a: 6, b: 7 }).await.expect_err("garbage");
    assert!(err.to_string().contains("bad JSON-RPC answer"), "{err}");
}
