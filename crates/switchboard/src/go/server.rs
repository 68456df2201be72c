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
//!
//! A connection is held to the server's limits ([`super::conn`]): its
//! buffered input (one message up to `max_frame`, gob type definitions to
//! the stream's [`gob::Limits`] as they arrive, all of it against the memory
//! budget), its time limits (handshake, frame, idle), and its queued
//! answers (`max_queued_bytes`, the memory budget, and writes that must make
//! progress within the frame timeout). Input is parsed incrementally: gob
//! definitions are taken as they arrive and a message's length is read
//! from its first bytes; a JSON-RPC request's end is found by a scanner
//! that carries on where the last read stopped ([`super::scan`]), and
//! serde_json parses it once, whole.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::task::TaskTracker;

use super::conn::{self, Batch, Input, Outbox};
use super::scan::{leading_whitespace, JsonScan};
use crate::call::{Request, Response};
use crate::codec::gob::{self, GobError, Next};
use crate::codec::Codec;
use crate::server::http::Upgraded;
use crate::server::protocol::{CallCounter, Charge, ConnClock, Dispatcher, Expired, Resolution};
use crate::status::Status;

/// Answers waiting for the writer, per connection.
const REPLY_QUEUE: usize = 1024;
/// Flush what the writer has gathered once it is this large.
const WRITE_BATCH: usize = 256 << 10;
/// The path `rpc.DialHTTP` asks for (Go's `rpc.DefaultRPCPath`).
pub(crate) const GO_RPC_PATH: &str = "/_goRPC_";
/// A request payload at least this large is charged to the memory budget
/// while its call runs (as for native connections).
const CHARGED_PAYLOAD: usize = 64 << 10;
/// What an answer costs in the queue beyond its payload (headers, method).
const REPLY_OVERHEAD: usize = 64;

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

impl<Id> Reply<Id> {
    fn new(id: Id, method: String, result: Result<Response, String>) -> Reply<Id> {
        Reply { id, method, result }
    }

    /// About how many bytes the answer takes until it is written: what it
    /// counts in the [`Outbox`].
    fn size(&self) -> usize {
        let payload = match &self.result {
            Ok(response) => response.payload.len(),
            Err(error) => error.len(),
        };
        payload + self.method.len() + REPLY_OVERHEAD
    }
}

/// Why a read loop stopped.
pub(super) enum End {
    /// The peer closed the connection between requests.
    Closed,
    /// The server is draining.
    Draining,
    /// The stream cannot be read further.
    Broken(String),
    /// A time limit passed (or the server needed the descriptor).
    Expired(Expired),
    /// The writer stopped (a write failed, or made no progress for the
    /// frame timeout): answers can no longer be sent.
    WriterStopped,
}

/// The Go error string for a failed call: the handler's message, or Go's
/// own wording for names nobody serves.
fn go_error(inner: &Dispatcher, method: &str, status: &Status) -> String {
    if !method.contains('.') {
        return format!("rpc: service/method request ill-formed: {method}");
    }
    match inner.resolve(method) {
        Resolution::NoService => format!("rpc: can't find service {method}"),
        Resolution::NoMethod => format!("rpc: can't find method {method}"),
        Resolution::Found => status.message().to_owned(),
    }
}

/// The calls of one connection: started as tasks, at most
/// `max_calls_per_connection` at once, answered through the writer.
struct Calls<Id> {
    inner: Dispatcher,
    peer: SocketAddr,
    counter: CallCounter,
    tasks: TaskTracker,
    slots: Arc<Semaphore>,
    replies: mpsc::Sender<Reply<Id>>,
    /// The answers waiting for the writer.
    outbox: Arc<Outbox>,
    /// What they hold of the memory budget.
    output: Charge,
}

impl<Id: Send + 'static> Calls<Id> {
    fn new(
        inner: &Dispatcher,
        peer: SocketAddr,
        clock: &ConnClock,
        outbox: Arc<Outbox>,
    ) -> (Calls<Id>, mpsc::Receiver<Reply<Id>>) {
        let (replies, queue) = mpsc::channel(REPLY_QUEUE);
        let slots = Arc::new(Semaphore::new(inner.config().max_calls_per_connection.max(1)));
        let counter = clock.calls().clone();
        let calls = Calls {
            inner: inner.clone(),
            peer,
            counter,
            tasks: TaskTracker::new(),
            slots,
            replies,
            outbox,
            output: inner.budget().charge(),
        };
        (calls, queue)
    }

    /// Waits until there is room for another call's answer (see
    /// [`Outbox::wait_for_room`]). Nothing is read meanwhile: that is the
    /// backpressure.
    async fn ready<R: AsyncRead + Unpin>(&mut self, input: &mut Input<R>) -> Result<(), End> {
        self.outbox.wait_for_room(&self.inner, &mut self.output, input).await?;
        Ok(())
    }

    /// Waits for a free slot (no reading meanwhile).
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.slots).acquire_owned().await.ok()
    }

    /// Runs one call through the server and hands its answer to the writer.
    fn start(&self, slot: tokio::sync::OwnedSemaphorePermit, id: Id, method: String, codec: Codec, payload: Bytes) {
        let inner = &self.inner;
        // A large request is memory the call holds while it runs.
        let charge = (payload.len() >= CHARGED_PAYLOAD).then(|| {
            let mut charge = inner.budget().charge();
            charge.add_anyway(payload.len());
            charge
        });
        let mut req = Request::new(method.clone(), codec, payload);
        req.peer = Some(self.peer);
        req.deadline = inner.default_deadline();
        let (inner, replies, outbox) = (inner.clone(), self.replies.clone(), Arc::clone(&self.outbox));
        let running = self.counter.enter();
        self.tasks.spawn(async move {
            let _running = running;
            let result = tokio::select! {
                result = inner.dispatch(req) => result.map_err(|status| go_error(&inner, &method, &status)),
                _ = inner.stopped().cancelled() => Err("rpc: the server stopped before the call finished".to_owned()),
            };
            drop(charge);
            let reply = Reply::new(id, method, result);
            outbox.queue(reply.size());
            // (If the writer is gone, so is the connection: nothing to count.)
            let _ = replies.send(reply).await;
            drop(slot);
        });
    }

    /// Answers a request without running it (the writer sends `error`).
    async fn refuse(&self, id: Id, method: String, error: String) {
        let reply = Reply::new(id, method, Err(error));
        self.outbox.queue(reply.size());
        let _ = self.replies.send(reply).await;
    }

    /// Lets the calls already running answer, then closes; logs why the
    /// connection ended.
    async fn finish(self, end: End, protocol: &str, writer: tokio::task::JoinHandle<()>) {
        let peer = self.peer;
        match &end {
            End::Closed => tracing::debug!(%peer, protocol, "net/rpc client closed the connection"),
            End::Draining => tracing::debug!(%peer, protocol, "server draining; closing the net/rpc connection"),
            End::Broken(why) => tracing::warn!(%peer, protocol, reason = %why, "closing a net/rpc connection"),
            End::Expired(why) if why.is_benign() => {
                tracing::debug!(%peer, protocol, reason = %why, "closing a net/rpc connection")
            }
            End::Expired(why) => tracing::warn!(%peer, protocol, reason = %why, "closing a net/rpc connection"),
            End::WriterStopped => {
                tracing::debug!(%peer, protocol, "closing a net/rpc connection whose answers cannot be written")
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
        drop(self.replies);
        let _ = writer.await;
    }
}

/// Serves Go's net/rpc over gob on `rd`/`wr`; `buf` holds bytes already
/// read (the sniffed prefix).
pub(crate) async fn serve_gob<R, W>(inner: Dispatcher, rd: R, wr: W, peer: SocketAddr, buf: BytesMut, clock: ConnClock)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let input = Input::new(&inner, rd, buf, clock);
    let outbox = Arc::new(Outbox::new(&inner));
    gob_loop(inner, input, outbox, wr, peer).await;
}

async fn gob_loop<R, W>(inner: Dispatcher, mut input: Input<R>, outbox: Arc<Outbox>, wr: W, peer: SocketAddr)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (mut calls, queue) = Calls::new(&inner, peer, &input.clock, outbox);
    let writer = tokio::spawn(write_replies(
        wr,
        queue,
        GobReplies { encoder: gob::Encoder::new(), body: Vec::new() },
        peer,
        Arc::clone(&calls.outbox),
        inner.config().frame_timeout,
    ));
    let limits = gob::Limits { max_message: inner.config().max_frame, ..gob::Limits::default() };
    let mut decoder = gob::Decoder::with_limits(limits);
    let end = loop {
        if let Err(end) = calls.ready(&mut input).await {
            break end;
        }
        let outbox = &*calls.outbox;
        let header: RequestHeader =
            match read_gob(&inner, &mut input, outbox, &mut decoder, |d, body| d.decode_value(body)).await {
                Ok(header) => header,
                Err(end) => break end,
            };
        let payload = match read_gob(&inner, &mut input, outbox, &mut decoder, body_payload).await {
            Ok(payload) => payload,
            Err(End::Closed) => break End::Broken("the stream ended between a request header and its body".into()),
            Err(end) => break end,
        };
        input.took_request();
        let Some(slot) = calls.slot().await else { break End::Draining };
        let (codec, payload) = payload;
        calls.start(slot, header.seq, header.service_method, codec, payload);
    };
    calls.finish(end, "gob", writer).await;
}

/// Reads the next value of the gob stream and hands its body to `take`.
/// Type definitions are taken (and held to the stream's limits) as they
/// arrive; each read looks only at the message in progress.
async fn read_gob<R, T>(
    inner: &Dispatcher,
    input: &mut Input<R>,
    outbox: &Outbox,
    decoder: &mut gob::Decoder,
    take: impl Fn(&mut gob::Decoder, &[u8]) -> Result<T, GobError>,
) -> Result<T, End>
where
    R: AsyncRead + Unpin,
{
    loop {
        let need = match decoder.take_value(&input.buf) {
            Ok(Next::Value { body, used }) => {
                let value = take(decoder, body).map_err(|e| End::Broken(format!("bad gob value: {e}")))?;
                input.buf.advance(used);
                return Ok(value);
            }
            Ok(Next::Incomplete { taken, need }) => {
                input.buf.advance(taken);
                need
            }
            Err(e) => return Err(End::Broken(format!("bad gob stream: {e}"))),
        };
        if !input.fill(inner, need, outbox).await? {
            return Err(if input.buf.is_empty() {
                End::Closed
            } else {
                End::Broken(format!("the stream ended inside a message ({} bytes unread)", input.buf.len()))
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

/// How a protocol turns its answers into bytes: the one part of the
/// answer writer ([`write_replies`]) that differs between gob and JSON-RPC.
trait EncodeReply<Id>: Send + 'static {
    /// Appends `reply` to `out`. An error closes the connection (the
    /// stream cannot be continued after a half-written answer).
    fn encode(&mut self, reply: Reply<Id>, out: &mut Vec<u8>) -> Result<(), GobError>;
}

/// gob: the stream's type state (each type is defined once per stream)
/// and scratch space for a body, kept between answers.
struct GobReplies {
    encoder: gob::Encoder,
    body: Vec<u8>,
}

impl EncodeReply<u64> for GobReplies {
    fn encode(&mut self, reply: Reply<u64>, out: &mut Vec<u8>) -> Result<(), GobError> {
        let encoded = encode_gob_reply(&mut self.encoder, reply, out, &mut self.body);
        if self.body.capacity() > WRITE_BATCH {
            self.body = Vec::new(); // not kept after a large answer
        }
        encoded
    }
}

/// JSON-RPC: one line per answer, no state.
struct JsonReplies;

impl EncodeReply<Box<serde_json::value::RawValue>> for JsonReplies {
    fn encode(&mut self, reply: Reply<Box<serde_json::value::RawValue>>, out: &mut Vec<u8>) -> Result<(), GobError> {
        encode_json_reply(reply, out);
        Ok(())
    }
}

/// Writes a connection's answers as they come off `queue`: as many as are
/// ready (up to [`WRITE_BATCH`] bytes) in one write, counted in the
/// [`Outbox`] until written, the write bounded by `limit`; the stream is
/// shut down when the queue ends.
///
/// This is not [`io::WriteQueue`](crate::io), the native connection's
/// writer, by design: that one writes to a `TcpStream` inline from the
/// task that answers (`try_write`) and falls back to a writer task, the
/// native fast path. The Go protocols write to any `AsyncWrite` (a
/// stream after an HTTP `CONNECT`, and TLS next), answer through a
/// bounded queue (the [`Outbox`] counts what waits, for the connection's
/// share of the memory budget) and pay for one task per connection,
/// which their callers (one request at a time per Go client goroutine,
/// mostly) do not notice.
async fn write_replies<W, Id, E>(
    mut wr: W,
    mut queue: mpsc::Receiver<Reply<Id>>,
    mut replies: E,
    peer: SocketAddr,
    outbox: Arc<Outbox>,
    limit: std::time::Duration,
) where
    W: AsyncWrite + Unpin,
    E: EncodeReply<Id>,
{
    let _stop = StopOnDrop(&outbox);
    let mut out = Vec::with_capacity(4096);
    // The answers in `out`: counted as queued until it is written.
    let mut batch = Batch::default();
    while let Some(first) = queue.recv().await {
        out.clear();
        let mut next = Some(first);
        while let Some(reply) = next.take() {
            batch.add(reply.size());
            if let Err(e) = replies.encode(reply, &mut out) {
                tracing::error!(%peer, error = %e, "cannot encode a net/rpc answer; closing the connection");
                return;
            }
            if out.len() < WRITE_BATCH {
                next = queue.try_recv().ok();
            }
        }
        let written = conn::write_all(&mut wr, &out, limit).await;
        outbox.wrote(&mut batch);
        if let Err(e) = written {
            log_write_failure(peer, &e);
            return;
        }
        if out.capacity() > WRITE_BATCH {
            out = Vec::with_capacity(4096); // not kept after a large batch
        }
    }
    conn::shutdown(&mut wr, limit).await;
}

/// Tells the [`Outbox`] its writer stopped, however it stopped.
struct StopOnDrop<'a>(&'a Outbox);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.writer_stopped();
    }
}

fn log_write_failure(peer: SocketAddr, e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::TimedOut {
        tracing::warn!(%peer, error = %e, "closing a net/rpc connection");
    } else {
        tracing::debug!(%peer, error = %e, "write failed; closing the connection");
    }
}

/// Serves Go's net/rpc/jsonrpc.
pub(crate) async fn serve_jsonrpc<R, W>(
    inner: Dispatcher,
    rd: R,
    wr: W,
    peer: SocketAddr,
    buf: BytesMut,
    clock: ConnClock,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut input = Input::new(&inner, rd, buf, clock);
    let (mut calls, queue) = Calls::new(&inner, peer, &input.clock, Arc::new(Outbox::new(&inner)));
    let writer = tokio::spawn(write_replies(
        wr,
        queue,
        JsonReplies,
        peer,
        Arc::clone(&calls.outbox),
        inner.config().frame_timeout,
    ));
    let mut scan = JsonScan::default();
    let end = loop {
        if let Err(end) = calls.ready(&mut input).await {
            break end;
        }
        let request = match next_json(&inner, &mut input, &mut scan, &calls.outbox).await {
            Ok(request) => request,
            Err(end) => break end,
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
                calls.refuse(id, request.method, error).await;
            }
        }
    };
    calls.finish(end, "jsonrpc", writer).await;
}

fn null() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::NULL.to_owned()
}

/// Reads the next request: its end found by `scan`, which carries on from
/// where the last read left off, then parsed once, whole.
async fn next_json<R: AsyncRead + Unpin>(
    inner: &Dispatcher,
    input: &mut Input<R>,
    scan: &mut JsonScan,
    outbox: &Outbox,
) -> Result<JsonRequest, End> {
    let max = inner.config().max_frame;
    loop {
        if scan.is_fresh() {
            // Whitespace between requests (Go's encoder ends each with a
            // newline) is dropped as it comes.
            let blank = leading_whitespace(&input.buf);
            input.buf.advance(blank);
        }
        match json_request(&input.buf, scan, max) {
            Ok(Some((request, used))) => {
                input.buf.advance(used);
                let blank = leading_whitespace(&input.buf);
                input.buf.advance(blank);
                input.took_request();
                return Ok(request);
            }
            Ok(None) => {}
            Err(why) => return Err(End::Broken(why)),
        }
        if !input.fill(inner, None, outbox).await? {
            return Err(if input.buf.is_empty() {
                End::Closed
            } else {
                End::Broken("the stream ended inside a request".into())
            });
        }
    }
}

/// The request at the front of `buf` (no whitespace before it), and the
/// bytes it used; `Ok(None)` if it is not all there yet. `scan` remembers
/// how far `buf` has been looked at.
///
/// A request that is whole when first looked at (the common case: one or
/// more whole requests per read) is parsed at once, with no scan. One that
/// is not is followed by the scanner from then on, across reads, and parsed
/// when whole: at most one parse of its first piece is wasted.
pub(crate) fn json_request(
    buf: &[u8],
    scan: &mut JsonScan,
    max: usize,
) -> Result<Option<(JsonRequest, usize)>, String> {
    if scan.is_fresh() && buf.first() == Some(&b'{') {
        let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<JsonRequest>();
        // Not whole yet, or an error that may only be a cut (serde_json
        // calls `{"id":1.` an invalid number, serde-rs/json#524): then the
        // scanner tells which.
        if let Some(Ok(request)) = stream.next() {
            let end = stream.byte_offset();
            if end > max {
                return Err(format!("a request of {end} bytes is longer than the limit of {max} bytes"));
            }
            return Ok(Some((request, end)));
        }
    }
    match scan.scan(buf).map_err(|e| format!("bad JSON-RPC request: {e}"))? {
        Some(end) if end > max => Err(format!("a request of {end} bytes is longer than the limit of {max} bytes")),
        Some(end) => {
            let request = serde_json::from_slice(buf.get(..end).unwrap_or_default())
                .map_err(|e| format!("bad JSON-RPC request: {e}"))?;
            Ok(Some((request, end)))
        }
        None if buf.len() > max => Err(format!("a request longer than the limit of {max} bytes")),
        None => Ok(None),
    }
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

/// Serves a connection `rpc.DialHTTP` opened, after its `CONNECT
/// /_goRPC_` head (the HTTP row's route, [`GO_RPC_PATH`]): answers what
/// Go's `rpc.HandleHTTP` answers, then speaks gob.
pub(crate) async fn serve_connect(up: Upgraded) {
    let Upgraded { request, stream, buffered, clock, dispatcher } = up;
    let peer = request.peer();
    let limit = dispatcher.config().frame_timeout;
    let (rd, mut wr) = stream.into_split();
    if conn::write_all(&mut wr, b"HTTP/1.0 200 Connected to Go RPC\n\n", limit).await.is_err() {
        return;
    }
    tracing::debug!(%peer, "Go net/rpc over HTTP CONNECT");
    let input = Input::new(&dispatcher, rd, buffered, clock);
    let outbox = Arc::new(Outbox::new(&dispatcher));
    gob_loop(dispatcher, input, outbox, wr, peer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_requests_are_read_whole_or_not_at_all() {
        let line = br#"{"method":"Arith.Multiply","params":[{"A":7,"B":8}],"id":0}"#;
        let (request, used) = json_request(line, &mut JsonScan::default(), 1 << 20).expect("valid").expect("whole");
        assert_eq!((request.method.as_str(), used), ("Arith.Multiply", line.len()));
        let mut scan = JsonScan::default();
        assert!(json_request(&line[..20], &mut scan, 1 << 20).expect("valid so far").is_none());
        assert!(json_request(line, &mut scan, 1 << 20).expect("valid").is_some(), "carries on where it stopped");
        assert!(json_request(b"{\"method\": nonsense}", &mut JsonScan::default(), 1 << 20).is_err());
        assert!(json_request(b"[1,2]", &mut JsonScan::default(), 1 << 20).is_err());
        let err = json_request(line, &mut JsonScan::default(), 20).expect_err("too long");
        assert!(err.contains("longer than the limit of 20 bytes"), "{err}");
        let err = json_request(&line[..30], &mut JsonScan::default(), 20).expect_err("too long");
        assert!(err.contains("longer than the limit of 20 bytes"), "{err}");
    }

    #[test]
    fn a_request_cut_inside_a_number_waits_for_the_rest() {
        // Found by fuzz/fuzz_targets/jsonrpc_request.rs: serde_json reads
        // `1.` at the end of its input as an invalid number, so a request
        // split there across reads broke the connection.
        let line = br#"{"method":"Arith.Add","params":[{"A":-1.5e+3,"B":2E-1}],"id":1}"#;
        let read = |buf: &[u8]| json_request(buf, &mut JsonScan::default(), 1 << 20);
        for cut in 0..line.len() {
            assert!(read(&line[..cut]).expect("valid so far").is_none(), "cut at {cut}");
        }
        assert!(read(line).expect("valid").is_some());
        assert!(read(b"{\"id\":1.}").is_err());
        assert!(read(b"{\"method\":-1}").is_err(), "a number where a string belongs");
    }

    #[test]
    fn whitespace_alone_is_held_to_the_limit() {
        // Found by fuzz/fuzz_targets/jsonrpc_request.rs: a buffer of only
        // whitespace was never checked against the limit, so a peer sending
        // nothing but spaces grew the connection's buffer without bound.
        // The reader now drops whitespace between requests as it arrives.
        assert_eq!(super::super::scan::leading_whitespace(&[b' '; 65]), 65);
        let buf = b"\r\n\t {\"method\":\"A.B\"";
        let blank = super::super::scan::leading_whitespace(buf);
        assert!(json_request(&buf[blank..], &mut JsonScan::default(), 64).expect("incomplete").is_none());
    }

    #[test]
    fn json_requests_split_anywhere_read_as_whole_ones() {
        let requests: [&[u8]; 3] = [
            br#"{"method":"Arith.Multiply","params":[{"A":7,"B":8}],"id":0}"#,
            br#"{"method":"Echo.Text","params":["} \"{ ]"],"id":"seven"}"#,
            br#"{"id":3,"params":[[1,[2,[3]]]],"method":"Deep.Nest"}"#,
        ];
        for request in requests {
            let (whole, used) =
                json_request(request, &mut JsonScan::default(), 1 << 20).expect("valid").expect("whole");
            assert_eq!(used, request.len());
            for at in 1..request.len() {
                let mut scan = JsonScan::default();
                assert!(
                    json_request(&request[..at], &mut scan, 1 << 20).expect("valid so far").is_none(),
                    "cut at {at}"
                );
                let (split, used) = json_request(request, &mut scan, 1 << 20).expect("valid").expect("whole");
                assert_eq!(used, request.len());
                assert_eq!(
                    (
                        split.method.as_str(),
                        split.params.map(|p| p.get().to_owned()),
                        split.id.map(|i| i.get().to_owned())
                    ),
                    (
                        whole.method.as_str(),
                        whole.params.as_ref().map(|p| p.get().to_owned()),
                        whole.id.as_ref().map(|i| i.get().to_owned())
                    ),
                    "cut at {at}"
                );
            }
        }
    }

    #[test]
    fn json_replies_are_what_go_reads() {
        let id = serde_json::value::RawValue::from_string("7".into()).expect("json");
        let mut out = Vec::new();
        let ok = Reply::new(id, "Arith.Multiply".into(), Ok(Response::new(Codec::Json, Bytes::from_static(b"56"))));
        encode_json_reply(ok, &mut out);
        assert_eq!(out, b"{\"id\":7,\"result\":56,\"error\":null}\n");
        out.clear();
        let failed = Reply::new(null(), "Arith.Divide".into(), Err("divide by \"zero\"".into()));
        encode_json_reply(failed, &mut out);
        assert_eq!(out, b"{\"id\":null,\"result\":null,\"error\":\"divide by \\\"zero\\\"\"}\n");
    }
}
