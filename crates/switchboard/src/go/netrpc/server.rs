//! The server side of Go's net/rpc: one loop per connection for gob (plain
//! or after an HTTP `CONNECT`) and for JSON-RPC. See the [module
//! docs](super) for the protocols and how a connection's is told.
//!
//! Each loop reads one request at a time, starts its call as a task, and
//! reads on; a writer task encodes answers as the calls finish, several per
//! write when they finish together. At most `max_calls_per_connection`
//! calls run at once: past that the loop stops reading, and TCP holds the
//! client back. When the server drains, the loop stops reading, the calls
//! already running answer, and the connection closes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::task::TaskTracker;

use crate::call::{Request, Response};
use crate::codec::Codec;
use crate::go::gob::{self, GobError};
use crate::server::{Inner, Resolved};
use crate::status::Status;

/// Read at most this much at a time.
const READ_CHUNK: usize = 64 << 10;
/// Longest HTTP request head accepted before the `CONNECT` switch.
const MAX_HTTP_HEAD: usize = 8 << 10;
/// Answers waiting for the writer, per connection.
const REPLY_QUEUE: usize = 1024;
/// Flush what the writer has gathered once it is this large.
const WRITE_BATCH: usize = 256 << 10;
/// The path `rpc.DialHTTP` asks for (Go's `rpc.DefaultRPCPath`).
const GO_RPC_PATH: &str = "/_goRPC_";

/// Go's `rpc.Request` header.
#[derive(Debug, Deserialize)]
struct RequestHeader {
    #[serde(rename = "ServiceMethod", default)]
    service_method: String,
    #[serde(rename = "Seq", default)]
    seq: u64,
}

/// Go's `rpc.Response` header.
#[derive(Debug, Serialize)]
struct ResponseHeader<'a> {
    #[serde(rename = "ServiceMethod")]
    service_method: &'a str,
    #[serde(rename = "Seq")]
    seq: u64,
    #[serde(rename = "Error")]
    error: &'a str,
}

/// A JSON-RPC 1.0 request as Go's `jsonrpc` client sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct JsonRequest {
    #[serde(default)]
    pub(crate) method: String,
    #[serde(default)]
    pub(crate) params: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub(crate) id: Option<Box<serde_json::value::RawValue>>,
}

/// One finished call, for the writer.
struct Reply<Id> {
    id: Id,
    method: String,
    result: Result<Response, String>,
}

/// Why a read loop stopped.
enum End {
    /// The peer closed the connection between requests.
    Closed,
    /// The server is draining.
    Draining,
    /// The stream cannot be read further.
    Broken(String),
}

/// The Go error string for a failed call: the handler's message, or Go's
/// own wording for names nobody serves.
fn go_error(inner: &Inner, method: &str, status: &Status) -> String {
    if !method.contains('.') {
        return format!("rpc: service/method request ill-formed: {method}");
    }
    match inner.router.resolve(method) {
        Resolved::NoService => format!("rpc: can't find service {method}"),
        Resolved::NoMethod => format!("rpc: can't find method {method}"),
        Resolved::Found => status.message().to_owned(),
    }
}

/// The calls of one connection: started as tasks, at most
/// `max_calls_per_connection` at once, answered through the writer.
struct Calls<Id> {
    inner: Arc<Inner>,
    peer: SocketAddr,
    tasks: TaskTracker,
    slots: Arc<Semaphore>,
    replies: mpsc::Sender<Reply<Id>>,
}

impl<Id: Send + 'static> Calls<Id> {
    fn new(inner: &Arc<Inner>, peer: SocketAddr, replies: mpsc::Sender<Reply<Id>>) -> Calls<Id> {
        let slots = Arc::new(Semaphore::new(inner.config.max_calls_per_connection.max(1)));
        Calls { inner: Arc::clone(inner), peer, tasks: TaskTracker::new(), slots, replies }
    }

    /// Waits for a free slot (the backpressure: no reading meanwhile).
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.slots).acquire_owned().await.ok()
    }

    /// Runs one call through the server and hands its answer to the writer.
    fn start(&self, slot: tokio::sync::OwnedSemaphorePermit, id: Id, method: String, codec: Codec, payload: Bytes) {
        let inner = &self.inner;
        let mut req = Request::new(method.clone(), codec, payload);
        req.peer = Some(self.peer);
        req.deadline = inner.config.default_timeout.and_then(|d| tokio::time::Instant::now().checked_add(d));
        let (inner, replies) = (Arc::clone(inner), self.replies.clone());
        self.tasks.spawn(async move {
            let result = tokio::select! {
                result = inner.dispatch(req) => result.map_err(|status| go_error(&inner, &method, &status)),
                _ = inner.stop.cancelled() => Err("rpc: the server stopped before the call finished".to_owned()),
            };
            let _ = replies.send(Reply { id, method, result }).await;
            drop(slot);
        });
    }

    /// Lets the calls already running answer, then closes; logs why the
    /// connection ended.
    async fn finish(self, end: End, protocol: &str, writer: tokio::task::JoinHandle<()>) {
        let peer = self.peer;
        match &end {
            End::Closed => tracing::debug!(%peer, protocol, "net/rpc client closed the connection"),
            End::Draining => tracing::debug!(%peer, protocol, "server draining; closing the net/rpc connection"),
            End::Broken(why) => tracing::warn!(%peer, protocol, reason = %why, "closing a net/rpc connection"),
        }
        self.tasks.close();
        self.tasks.wait().await;
        drop(self.replies);
        let _ = writer.await;
    }
}

/// Reads more bytes into `buf`; `Ok(false)` at end of stream. Stops early
/// (returning `Err(End::Draining)`) when the server drains.
async fn fill<R: AsyncRead + Unpin>(inner: &Inner, rd: &mut R, buf: &mut BytesMut) -> Result<bool, End> {
    buf.reserve(READ_CHUNK);
    tokio::select! {
        read = rd.read_buf(buf) => match read {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(End::Broken(format!("read failed: {e}"))),
        },
        _ = inner.draining.cancelled() => Err(End::Draining),
    }
}

/// Serves Go's net/rpc over gob on `rd`/`wr`; `buf` holds bytes already
/// read (the sniffed prefix, or what followed an HTTP head).
pub(crate) async fn serve_gob<R, W>(inner: Arc<Inner>, mut rd: R, wr: W, peer: SocketAddr, mut buf: BytesMut)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (replies, queue) = mpsc::channel::<Reply<u64>>(REPLY_QUEUE);
    let writer = tokio::spawn(gob_writer(wr, queue, peer));
    let calls = Calls::new(&inner, peer, replies);
    let limits = gob::Limits { max_message: inner.config.max_frame, ..gob::Limits::default() };
    let mut decoder = gob::Decoder::with_limits(limits);
    let end = loop {
        let header: RequestHeader =
            match read_gob(&inner, &mut rd, &mut buf, &mut decoder, |d, body| d.decode_value(body)).await {
                Ok(header) => header,
                Err(end) => break end,
            };
        let payload = match read_gob(&inner, &mut rd, &mut buf, &mut decoder, body_payload).await {
            Ok(payload) => payload,
            Err(End::Closed) => break End::Broken("the stream ended between a request header and its body".into()),
            Err(end) => break end,
        };
        let Some(slot) = calls.slot().await else { break End::Draining };
        let (codec, payload) = payload;
        calls.start(slot, header.seq, header.service_method, codec, payload);
    };
    calls.finish(end, "gob", writer).await;
}

/// Reads the next value of the gob stream and hands its body to `take`.
async fn read_gob<R, T>(
    inner: &Inner,
    rd: &mut R,
    buf: &mut BytesMut,
    decoder: &mut gob::Decoder,
    take: impl Fn(&mut gob::Decoder, &[u8]) -> Result<T, GobError>,
) -> Result<T, End>
where
    R: AsyncRead + Unpin,
{
    loop {
        match decoder.next_value(buf) {
            Ok(Some((body, used))) => {
                let value = take(decoder, body).map_err(|e| End::Broken(format!("bad gob value: {e}")))?;
                buf.advance(used);
                return Ok(value);
            }
            Ok(None) => {}
            Err(e) => return Err(End::Broken(format!("bad gob stream: {e}"))),
        }
        if !fill(inner, rd, buf).await? {
            return Err(if buf.is_empty() {
                End::Closed
            } else {
                End::Broken(format!("the stream ended inside a message ({} bytes unread)", buf.len()))
            });
        }
    }
}

/// The argument of a call, as the payload the router hands a handler: a
/// standalone gob payload ([`Codec::Gob`]), the value with exactly the wire
/// types the Go client sent, decodable on its own by the handler's serde
/// types.
fn body_payload(decoder: &mut gob::Decoder, body: &[u8]) -> Result<(Codec, Bytes), GobError> {
    Ok((Codec::Gob, Bytes::from(decoder.to_standalone_cached(body)?)))
}

/// Encodes one answer (header, then body) on the gob stream. An answer that
/// cannot be encoded becomes an error answer: the caller hears why.
/// `body` is scratch space, kept between calls.
fn encode_gob_reply(
    encoder: &mut gob::Encoder,
    reply: Reply<u64>,
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> Result<(), GobError> {
    let mut error = match reply.result {
        Ok(response) => {
            body.clear();
            match reply_body(encoder, &response, body) {
                Ok(()) => {
                    let header = ResponseHeader { service_method: &reply.method, seq: reply.id, error: "" };
                    encoder.encode(&header, out)?;
                    out.extend_from_slice(body);
                    return Ok(());
                }
                Err(e) => format!("rpc: cannot encode the reply as gob: {e}"),
            }
        }
        Err(error) => error,
    };
    if error.is_empty() {
        // Go reads an empty Error as success.
        error = "rpc: the call failed".to_owned();
    }
    let header = ResponseHeader { service_method: &reply.method, seq: reply.id, error: &error };
    encoder.encode(&header, out)?;
    // Go's server sends an empty struct as the body of an error answer.
    encoder.encode(&(), out)
}

/// The reply's payload as a gob value on this stream. Handlers answer in
/// the request's codec, gob; a middleware that answered in JSON is
/// converted, objects as structs.
fn reply_body(encoder: &mut gob::Encoder, response: &Response, out: &mut Vec<u8>) -> Result<(), GobError> {
    match response.codec {
        Codec::Gob => encoder.encode_standalone(&response.payload, out),
        Codec::Json => {
            let value: serde_json::Value =
                serde_json::from_slice(&response.payload).map_err(|e| GobError::Custom(e.to_string()))?;
            encoder.encode_json("Reply", &value, out)
        }
        other => Err(GobError::Custom(format!("a reply in the {other:?} codec"))),
    }
}

async fn gob_writer<W: AsyncWrite + Unpin>(mut wr: W, mut queue: mpsc::Receiver<Reply<u64>>, peer: SocketAddr) {
    let mut encoder = gob::Encoder::new();
    let mut out = Vec::with_capacity(4096);
    let mut body = Vec::new();
    while let Some(first) = queue.recv().await {
        out.clear();
        let mut next = Some(first);
        while let Some(reply) = next.take() {
            if let Err(e) = encode_gob_reply(&mut encoder, reply, &mut out, &mut body) {
                tracing::error!(%peer, error = %e, "cannot encode a net/rpc answer; closing the connection");
                return;
            }
            if body.capacity() > WRITE_BATCH {
                body = Vec::new(); // not kept after a large answer
            }
            if out.len() < WRITE_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if let Err(e) = wr.write_all(&out).await {
            tracing::debug!(%peer, error = %e, "write failed; closing the connection");
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// Serves Go's net/rpc/jsonrpc.
pub(crate) async fn serve_jsonrpc<R, W>(inner: Arc<Inner>, mut rd: R, wr: W, peer: SocketAddr, mut buf: BytesMut)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (replies, queue) = mpsc::channel::<Reply<Box<serde_json::value::RawValue>>>(REPLY_QUEUE);
    let writer = tokio::spawn(json_writer(wr, queue, peer));
    let calls = Calls::new(&inner, peer, replies);
    let end = loop {
        let request = match next_json(&buf, inner.config.max_frame) {
            Ok(Some((request, used))) => {
                buf.advance(used);
                request
            }
            Ok(None) => match fill(&inner, &mut rd, &mut buf).await {
                Ok(true) => continue,
                Ok(false) if buf.iter().all(u8::is_ascii_whitespace) => break End::Closed,
                Ok(false) => break End::Broken("the stream ended inside a request".into()),
                Err(end) => break end,
            },
            Err(why) => break End::Broken(why),
        };
        let id = request.id.unwrap_or_else(null);
        let Some(slot) = calls.slot().await else { break End::Draining };
        // Go's client sends the argument as a one-element array.
        let param =
            request.params.as_deref().map(|p| serde_json::from_str::<[&serde_json::value::RawValue; 1]>(p.get()));
        match param {
            Some(Ok([arg])) => {
                let payload = Bytes::copy_from_slice(arg.get().as_bytes());
                calls.start(slot, id, request.method, Codec::Json, payload);
            }
            other => {
                let error = match other {
                    None => "jsonrpc: request body missing params".to_owned(),
                    _ => "jsonrpc: params must be an array of one argument".to_owned(),
                };
                let _ = calls.replies.send(Reply { id, method: request.method, result: Err(error) }).await;
            }
        }
    };
    calls.finish(end, "jsonrpc", writer).await;
}

fn null() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::NULL.to_owned()
}

/// The next request in `buf`, and the bytes it used; `Ok(None)` if it is not
/// all there yet.
pub(crate) fn next_json(buf: &[u8], max: usize) -> Result<Option<(JsonRequest, usize)>, String> {
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<JsonRequest>();
    match stream.next() {
        Some(Ok(request)) => Ok(Some((request, stream.byte_offset()))),
        Some(Err(e)) if !e.is_eof() && !ends_inside_a_number(buf) => Err(format!("bad JSON-RPC request: {e}")),
        // Not all there yet, or only whitespace so far: either way bounded.
        _ if buf.len() > max => Err(format!("a request longer than the limit of {max} bytes")),
        _ => Ok(None),
    }
}

/// Whether `buf` ends inside a number that more bytes could complete
/// (`1.`, `-`, `2e`, `2e+`): serde_json calls that an invalid number, not
/// the end of its input (serde-rs/json#524), so a request cut there by TCP
/// would break the connection. One more digit tells.
fn ends_inside_a_number(buf: &[u8]) -> bool {
    if !matches!(buf.last(), Some(b'-' | b'+' | b'.' | b'e' | b'E')) {
        return false;
    }
    let more = [buf, b"0"].concat();
    let next = serde_json::Deserializer::from_slice(&more).into_iter::<JsonRequest>().next();
    matches!(next, Some(Err(e)) if e.is_eof())
}

async fn json_writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut queue: mpsc::Receiver<Reply<Box<serde_json::value::RawValue>>>,
    peer: SocketAddr,
) {
    let mut out = Vec::with_capacity(4096);
    while let Some(first) = queue.recv().await {
        out.clear();
        let mut next = Some(first);
        while let Some(reply) = next.take() {
            encode_json_reply(reply, &mut out);
            if out.len() < WRITE_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if let Err(e) = wr.write_all(&out).await {
            tracing::debug!(%peer, error = %e, "write failed; closing the connection");
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// `{"id":…,"result":…,"error":…}` and a newline, as Go's `jsonrpc` writes it.
fn encode_json_reply(reply: Reply<Box<serde_json::value::RawValue>>, out: &mut Vec<u8>) {
    let result = match reply.result {
        Ok(response)
            if response.codec == Codec::Json
                && serde_json::from_slice::<serde::de::IgnoredAny>(&response.payload).is_ok() =>
        {
            Ok(response.payload)
        }
        Ok(response) => Err(format!("rpc: a reply in the {:?} codec cannot be sent as JSON", response.codec)),
        Err(error) => Err(error),
    };
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(reply.id.get().as_bytes());
    match result {
        Ok(payload) => {
            out.extend_from_slice(b",\"result\":");
            out.extend_from_slice(&payload);
            out.extend_from_slice(b",\"error\":null}\n");
        }
        Err(error) => {
            out.extend_from_slice(b",\"result\":null,\"error\":");
            // A JSON string never fails to encode.
            out.extend_from_slice(serde_json::to_string(&error).unwrap_or_default().as_bytes());
            out.extend_from_slice(b"}\n");
        }
    }
}

/// Serves HTTP the way Go's `rpc.HandleHTTP` does: `CONNECT /_goRPC_`
/// switches the connection to gob; any other request is refused.
pub(crate) async fn serve_http<R, W>(inner: Arc<Inner>, mut rd: R, mut wr: W, peer: SocketAddr, mut buf: BytesMut)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let head_len = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HTTP_HEAD {
            tracing::warn!(%peer, "closing an HTTP connection whose request head passed {MAX_HTTP_HEAD} bytes");
            let _ = wr.write_all(b"HTTP/1.0 431 Request Header Fields Too Large\r\n\r\n").await;
            return;
        }
        match fill(&inner, &mut rd, &mut buf).await {
            Ok(true) => {}
            _ => return,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    buf.advance(head_len);
    let (method, path) = request_line(&head);
    if method != "CONNECT" || path != GO_RPC_PATH {
        tracing::debug!(%peer, %method, %path, "refusing an HTTP request that is not net/rpc's CONNECT");
        let _ = wr
            .write_all(
                b"HTTP/1.0 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n405 must CONNECT\n",
            )
            .await;
        let _ = wr.shutdown().await;
        return;
    }
    if wr.write_all(b"HTTP/1.0 200 Connected to Go RPC\n\n").await.is_err() {
        return;
    }
    serve_gob(inner, rd, wr, peer, buf).await;
}

/// The method and path of an HTTP request head (empty if missing).
pub(crate) fn request_line(head: &str) -> (&str, &str) {
    let mut words = head.split_whitespace();
    (words.next().unwrap_or_default(), words.next().unwrap_or_default())
}

/// Where an HTTP request head ends (after its blank line), if it does yet.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|at| at + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_heads_end_at_the_first_blank_line() {
        assert_eq!(head_end(b"CONNECT /_goRPC_ HTTP/1.0\n\nrest"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Some(27));
        assert_eq!(head_end(b"CONNECT /_goRPC_ HTTP/1.0\n"), None);
    }

    #[test]
    fn json_requests_are_read_whole_or_not_at_all() {
        let line = br#"{"method":"Arith.Multiply","params":[{"A":7,"B":8}],"id":0}"#;
        let (request, used) = next_json(line, 1 << 20).expect("valid").expect("whole");
        assert_eq!((request.method.as_str(), used), ("Arith.Multiply", line.len()));
        assert!(next_json(&line[..20], 1 << 20).expect("valid so far").is_none());
        assert!(next_json(b"{\"method\": nonsense}", 1 << 20).is_err());
        assert!(next_json(b"[1,2]", 1 << 20).is_err());
    }

    #[test]
    fn a_request_cut_inside_a_number_waits_for_the_rest() {
        // Found by fuzz/fuzz_targets/jsonrpc_request.rs: serde_json reads
        // `1.` at the end of its input as an invalid number, so a request
        // split there across reads broke the connection.
        let line = br#"{"method":"Arith.Add","params":[{"A":-1.5e+3,"B":2E-1}],"id":1}"#;
        for cut in 0..line.len() {
            assert!(next_json(&line[..cut], 1 << 20).expect("valid so far").is_none(), "cut at {cut}");
        }
        assert!(next_json(line, 1 << 20).expect("valid").is_some());
        assert!(next_json(b"{\"id\":1.}", 1 << 20).is_err());
        assert!(next_json(b"{\"method\":-1}", 1 << 20).is_err(), "a number where a string belongs");
    }

    #[test]
    fn whitespace_alone_is_held_to_the_limit() {
        // Found by fuzz/fuzz_targets/jsonrpc_request.rs: a buffer of only
        // whitespace was never checked against the limit, so a peer sending
        // nothing but spaces grew the connection's buffer without bound.
        assert!(next_json(&[b' '; 64], 64).expect("within the limit").is_none());
        assert!(next_json(&[b' '; 65], 64).is_err());
        assert!(next_json(b"\r\n\t {\"method\":\"A.B\"", 64).expect("incomplete").is_none());
    }

    #[test]
    fn json_replies_are_what_go_reads() {
        let id = serde_json::value::RawValue::from_string("7".into()).expect("json");
        let mut out = Vec::new();
        let ok = Reply {
            id,
            method: "Arith.Multiply".into(),
            result: Ok(Response::new(Codec::Json, Bytes::from_static(b"56"))),
        };
        encode_json_reply(ok, &mut out);
        assert_eq!(out, b"{\"id\":7,\"result\":56,\"error\":null}\n");
        out.clear();
        let failed = Reply { id: null(), method: "Arith.Divide".into(), result: Err("divide by \"zero\"".into()) };
        encode_json_reply(failed, &mut out);
        assert_eq!(out, b"{\"id\":null,\"result\":null,\"error\":\"divide by \\\"zero\\\"\"}\n");
    }
}
