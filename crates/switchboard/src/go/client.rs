//! The client side of Go's net/rpc: [`GoClient`] calls a Go server (or any
//! net/rpc server) over gob, JSON-RPC or `rpc.HandleHTTP`'s CONNECT, through
//! the same [`Channel`] trait as Switchboard's own [`Client`](crate::Client),
//! so typed stubs, `call::<Req, Resp>` and untyped JSON calls all work.
//!
//! One connection, many calls in flight: each call takes the next `Seq`,
//! its request is written under the connection's write lock (gob's stream
//! state must see messages in the order they are written), and a reader
//! task matches answers to callers by `Seq`, in whatever order they come. A
//! broken connection fails the calls in flight with
//! [`Error::ConnectionLost`]; the next call dials again.
//!
//! ```no_run
//! use switchboard::go::{GoClient, GoProtocol};
//! use switchboard::Channel; // call, call_with
//!
//! #[derive(serde::Serialize)]
//! struct Args { #[serde(rename = "A")] a: i64, #[serde(rename = "B")] b: i64 }
//!
//! # async fn run() -> Result<(), switchboard::Error> {
//! let go = GoClient::connect("127.0.0.1:9100", GoProtocol::Gob).await?;
//! let product: i64 = go.call("Arith.Multiply", &Args { a: 7, b: 8 }).await?;
//! assert_eq!(product, 56);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::scan::{leading_whitespace, JsonScan};
use crate::call::{BoxFuture, Context, Request, Response};
use crate::client::{CallOptions, Channel};
use crate::codec::gob;
use crate::codec::Codec;
use crate::error::Error;
use crate::status::Status;

/// The longest JSON-RPC answer read (gob answers are held to
/// [`gob::DEFAULT_MAX_MESSAGE`] by the decoder's limits).
const MAX_JSON_ANSWER: usize = gob::DEFAULT_MAX_MESSAGE;

/// Which of Go's net/rpc wire forms to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoProtocol {
    /// `rpc.ServeConn`: gob over TCP (`rpc.Dial`'s peer).
    Gob,
    /// `jsonrpc.ServeConn`: JSON-RPC 1.0 (`jsonrpc.Dial`'s peer).
    JsonRpc,
    /// `rpc.HandleHTTP`: `CONNECT /_goRPC_`, then gob (`rpc.DialHTTP`'s peer).
    Http,
}

impl FromStr for GoProtocol {
    type Err = String;

    /// `go-gob`, `go-jsonrpc`, `go-http` (or without the `go-`).
    fn from_str(s: &str) -> Result<GoProtocol, String> {
        match s.strip_prefix("go-").unwrap_or(s) {
            "gob" => Ok(GoProtocol::Gob),
            "jsonrpc" => Ok(GoProtocol::JsonRpc),
            "http" => Ok(GoProtocol::Http),
            _ => Err(format!("unknown Go protocol {s:?} (go-gob, go-jsonrpc, go-http)")),
        }
    }
}

/// A client of one Go net/rpc server.
#[derive(Debug, Clone)]
pub struct GoClient {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    addr: String,
    protocol: GoProtocol,
    timeout: Option<Duration>,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

/// Callers waiting for their answers, by `Seq`; `None` once the connection
/// is over.
type Pending = Option<HashMap<u64, oneshot::Sender<Result<Response, Error>>>>;

/// One connection: the write side under a lock, the answers awaited.
struct Conn {
    writer: tokio::sync::Mutex<Writer>,
    pending: Mutex<Pending>,
    /// The codec each gob call was made in, for its reply.
    codecs: Mutex<HashMap<u64, Codec>>,
    next_seq: AtomicU64,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

struct Writer {
    wr: OwnedWriteHalf,
    /// The gob stream's encoder (`None` for JSON-RPC).
    encoder: Option<gob::Encoder>,
    out: Vec<u8>,
}

#[derive(Serialize)]
struct RequestHeader<'a> {
    #[serde(rename = "ServiceMethod")]
    service_method: &'a str,
    #[serde(rename = "Seq")]
    seq: u64,
}

#[derive(Deserialize)]
struct ResponseHeader {
    #[serde(rename = "ServiceMethod", default)]
    _service_method: String,
    #[serde(rename = "Seq", default)]
    seq: u64,
    #[serde(rename = "Error", default)]
    error: String,
}

#[derive(Deserialize)]
struct JsonResponse {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    result: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl GoClient {
    /// Connects to the net/rpc server at `addr`.
    pub async fn connect(addr: impl Into<String>, protocol: GoProtocol) -> Result<GoClient, Error> {
        let client = GoClient::lazy(addr, protocol);
        client.connection().await?;
        Ok(client)
    }

    /// A client that dials on its first call.
    pub fn lazy(addr: impl Into<String>, protocol: GoProtocol) -> GoClient {
        GoClient {
            inner: Arc::new(Shared {
                addr: addr.into(),
                protocol,
                timeout: Some(Duration::from_secs(30)),
                conn: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The same client with another default timeout (`None`: wait forever).
    pub fn with_timeout(self, timeout: Option<Duration>) -> GoClient {
        let shared = &self.inner;
        GoClient {
            inner: Arc::new(Shared {
                addr: shared.addr.clone(),
                protocol: shared.protocol,
                timeout,
                conn: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The open connection, dialling one if there is none (or it broke).
    async fn connection(&self) -> Result<Arc<Conn>, Error> {
        let mut slot = self.inner.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(Arc::clone(conn));
        }
        let addr = &self.inner.addr;
        let connect = |source| Error::Connect { addr: addr.clone(), source };
        let stream = TcpStream::connect(addr).await.map_err(connect)?;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let mut buf = BytesMut::with_capacity(8 << 10);
        if self.inner.protocol == GoProtocol::Http {
            handshake(&mut rd, &mut wr, &mut buf).await.map_err(connect)?;
        }
        let gob = self.inner.protocol != GoProtocol::JsonRpc;
        let conn = Arc::new(Conn {
            writer: tokio::sync::Mutex::new(Writer {
                wr,
                encoder: gob.then(gob::Encoder::new),
                out: Vec::with_capacity(4096),
            }),
            pending: Mutex::new(Some(HashMap::new())),
            codecs: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(0),
        });
        let reader = Arc::clone(&conn);
        let addr = addr.clone();
        tokio::spawn(async move {
            let reason = match gob {
                true => read_gob(&reader, rd, buf).await,
                false => read_json(&reader, rd, buf).await,
            };
            reader.fail_all(&addr, &reason);
        });
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }
}

/// `rpc.DialHTTP`'s handshake.
async fn handshake(rd: &mut OwnedReadHalf, wr: &mut OwnedWriteHalf, buf: &mut BytesMut) -> std::io::Result<()> {
    wr.write_all(b"CONNECT /_goRPC_ HTTP/1.0\n\n").await?;
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\n\n").map(|at| at + 2) {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end);
            let status = head.lines().next().unwrap_or_default();
            if status.contains("200 Connected to Go RPC") {
                return Ok(());
            }
            return Err(std::io::Error::other(format!("not a net/rpc HTTP endpoint: {status:?}")));
        }
        if buf.len() > 8 << 10 || rd.read_buf(buf).await? == 0 {
            return Err(std::io::Error::other("the server closed the connection during the HTTP handshake"));
        }
    }
}

impl Conn {
    fn is_open(&self) -> bool {
        lock(&self.pending).is_some()
    }

    /// Hands `seq`'s answer to its caller.
    fn complete(&self, seq: u64, result: Result<Response, Error>) {
        let waiter = lock(&self.pending).as_mut().and_then(|p| p.remove(&seq));
        if let Some(waiter) = waiter {
            let _ = waiter.send(result);
        }
    }

    /// The connection is over: every call still waiting fails.
    fn fail_all(&self, addr: &str, reason: &str) {
        let pending = lock(&self.pending).take().unwrap_or_default();
        for (_, waiter) in pending {
            let _ = waiter.send(Err(Error::ConnectionLost { addr: addr.to_owned(), reason: reason.to_owned() }));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Go error string as a status: Go's own "can't find" wording is
/// NotFound, anything else the application's error.
fn go_status(error: &str) -> Status {
    if error.starts_with("rpc: can't find") {
        Status::not_found(error)
    } else if error.starts_with("rpc: service/method request ill-formed") {
        Status::invalid_argument(error)
    } else {
        Status::unknown(error)
    }
}

async fn read_gob(conn: &Conn, mut rd: OwnedReadHalf, mut buf: BytesMut) -> String {
    let mut decoder = gob::Decoder::new();
    loop {
        let header: ResponseHeader = match next_gob(&mut rd, &mut buf, &mut decoder, |d, b| d.decode_value(b)).await {
            Ok(header) => header,
            Err(reason) => return reason,
        };
        let body = next_gob(&mut rd, &mut buf, &mut decoder, |d, b| {
            if header.error.is_empty() {
                let codec = lock(&conn.codecs).remove(&header.seq).unwrap_or(Codec::Gob);
                reply_payload(d, b, codec).map(Some)
            } else {
                lock(&conn.codecs).remove(&header.seq);
                Ok(None) // the empty struct Go sends with an error
            }
        })
        .await;
        match body {
            Ok(Some(response)) => conn.complete(header.seq, Ok(response)),
            Ok(None) => conn.complete(header.seq, Err(Error::Status(go_status(&header.error)))),
            Err(reason) => return reason,
        }
    }
}

/// The reply body as a payload in the codec the call was made in: a
/// standalone gob payload for typed calls (exact Go types: bytes, unsigned,
/// structs), JSON for untyped ones.
fn reply_payload(decoder: &mut gob::Decoder, body: &[u8], codec: Codec) -> Result<Response, gob::GobError> {
    match codec {
        Codec::Json => {
            let value: serde_json::Value = decoder.decode_value(body)?;
            let bytes = serde_json::to_vec(&value).map_err(|e| gob::GobError::Custom(e.to_string()))?;
            Ok(Response::new(Codec::Json, Bytes::from(bytes)))
        }
        _ => Ok(Response::new(Codec::Gob, Bytes::from(decoder.to_standalone_cached(body)?))),
    }
}

async fn next_gob<T>(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    decoder: &mut gob::Decoder,
    take: impl Fn(&mut gob::Decoder, &[u8]) -> Result<T, gob::GobError>,
) -> Result<T, String> {
    loop {
        // Definitions are taken as they arrive: each read looks only at the
        // message in progress.
        match decoder.take_value(buf) {
            Ok(gob::Next::Value { body, used }) => {
                let value = take(decoder, body).map_err(|e| format!("bad gob answer: {e}"))?;
                buf.advance(used);
                return Ok(value);
            }
            Ok(gob::Next::Incomplete { taken, .. }) => buf.advance(taken),
            Err(e) => return Err(format!("bad gob stream: {e}")),
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err("the server closed the connection".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

async fn read_json(conn: &Conn, mut rd: OwnedReadHalf, mut buf: BytesMut) -> String {
    // Where the answer in progress ends is found across reads (no byte is
    // looked at twice); serde_json parses each answer once, whole.
    let mut scan = JsonScan::default();
    loop {
        if scan.is_fresh() {
            let blank = leading_whitespace(&buf);
            buf.advance(blank);
        }
        let end = match scan.scan(&buf) {
            Ok(Some(end)) => end,
            Ok(None) if buf.len() > MAX_JSON_ANSWER => {
                return format!("a JSON-RPC answer longer than the limit of {MAX_JSON_ANSWER} bytes")
            }
            Ok(None) => match rd.read_buf(&mut buf).await {
                Ok(0) => return "the server closed the connection".to_owned(),
                Ok(_) => continue,
                Err(e) => return format!("read failed: {e}"),
            },
            Err(e) => return format!("bad JSON-RPC answer: {e}"),
        };
        let answer = match serde_json::from_slice::<JsonResponse>(buf.get(..end).unwrap_or_default()) {
            Ok(answer) => answer,
            Err(e) => return format!("bad JSON-RPC answer: {e}"),
        };
        let Some(seq) = answer.id else { return "a JSON-RPC answer without a numeric id".to_owned() };
        let result = match (answer.error, answer.result) {
            (Some(serde_json::Value::String(e)), _) => Err(Error::Status(go_status(&e))),
            (Some(serde_json::Value::Null) | None, Some(result)) => {
                Ok(Response::new(Codec::Json, Bytes::copy_from_slice(result.get().as_bytes())))
            }
            (Some(serde_json::Value::Null) | None, None) => Ok(Response::new(Codec::Json, Bytes::from_static(b"null"))),
            (Some(other), _) => Err(Error::Status(go_status(&other.to_string()))),
        };
        buf.advance(end);
        conn.complete(seq, result);
    }
}

impl Channel for GoClient {
    fn call_raw<'a>(&'a self, req: Request, opts: &'a CallOptions) -> BoxFuture<'a, Result<Response, Error>> {
        Box::pin(async move {
            let method = req.metadata.method().unwrap_or_default().to_owned();
            // The native client's rules: this call's timeout (or the
            // client's), capped by what is left of the handler's deadline
            // when called from inside one.
            let timeout = crate::client::budget(opts.timeout.or(self.inner.timeout), Context::current().as_ref());
            let conn = self.connection().await?;
            let seq = conn.next_seq.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            match lock(&conn.pending).as_mut() {
                Some(pending) => pending.insert(seq, tx),
                None => {
                    // Nothing left this process: safe to retry anywhere,
                    // as the native client classifies it.
                    return Err(Error::Connect {
                        addr: self.inner.addr.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotConnected,
                            "connection closed (before the call was sent)",
                        ),
                    });
                }
            };
            if let Err(e) = self.send(&conn, &method, seq, &req).await {
                conn.complete(seq, Err(e));
            }
            let answer = match timeout {
                Some(limit) => match tokio::time::timeout(limit, rx).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        // Go's protocol cannot cancel: forget the call; its
                        // answer, if it comes, is dropped.
                        lock(&conn.pending).as_mut().map(|p| p.remove(&seq));
                        return Err(Error::DeadlineExceeded(limit));
                    }
                },
                None => rx.await,
            };
            answer.unwrap_or_else(|_| {
                Err(Error::ConnectionLost { addr: self.inner.addr.clone(), reason: "the reader stopped".into() })
            })
        })
    }

    /// Gob for gob servers (exact Go types both ways), JSON for JSON-RPC.
    fn default_codec(&self) -> Codec {
        match self.inner.protocol {
            GoProtocol::JsonRpc => Codec::Json,
            GoProtocol::Gob | GoProtocol::Http => Codec::Gob,
        }
    }
}

impl GoClient {
    /// Writes one request: header and argument.
    async fn send(&self, conn: &Conn, method: &str, seq: u64, req: &Request) -> Result<(), Error> {
        let protocol_error = |reason: String| Error::Protocol { addr: self.inner.addr.clone(), reason };
        let json = |payload: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(payload)
                .map_err(|e| protocol_error(format!("the argument is not JSON: {e}")))
        };
        let mut writer = conn.writer.lock().await;
        let Writer { wr, encoder, out } = &mut *writer;
        out.clear();
        match encoder {
            Some(encoder) => {
                let header = RequestHeader { service_method: method, seq };
                // Encode the argument before the header: a failed encode
                // leaves the stream as it was.
                let mut body = Vec::new();
                let encoded = match req.codec {
                    Codec::Gob => encoder.encode_standalone(&req.payload, &mut body),
                    Codec::Json => encoder.encode_json("Args", &json(&req.payload)?, &mut body),
                    other => {
                        return Err(protocol_error(format!(
                            "Go's net/rpc over gob takes gob or JSON arguments, not {other:?}"
                        )))
                    }
                };
                encoded.map_err(|e| protocol_error(format!("cannot encode the argument as gob: {e}")))?;
                encoder.encode(&header, out).map_err(|e| protocol_error(e.to_string()))?;
                out.extend_from_slice(&body);
                lock(&conn.codecs).insert(seq, req.codec);
            }
            None => {
                let arg = match req.codec {
                    Codec::Json => json(&req.payload)?,
                    other => return Err(protocol_error(format!("Go's JSON-RPC takes JSON arguments, not {other:?}"))),
                };
                let request = serde_json::json!({ "method": method, "params": [arg], "id": seq });
                serde_json::to_writer(&mut *out, &request).map_err(|e| protocol_error(e.to_string()))?;
                out.push(b'\n');
            }
        }
        wr.write_all(out)
            .await
            .map_err(|e| Error::ConnectionLost { addr: self.inner.addr.clone(), reason: format!("write failed: {e}") })
    }
}
