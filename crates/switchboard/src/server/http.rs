//! The HTTP/1.x row of the protocol layer: requests that reach the RPC
//! port over HTTP, routed by method and path to whoever added a route.
//!
//! Nothing is served over HTTP until an extension adds a route
//! ([`ServerBuilder::http_route`](super::ServerBuilder::http_route)); then
//! a connection whose first bytes are an upper-case method and a space
//! (`GET `, `CONNECT `) is read as HTTP/1.0 or 1.1. Two kinds of route:
//!
//! - [`HttpRoute::respond`]: the handler gets the request (head and a
//!   `Content-Length` body) and returns a response; the connection then
//!   stays open for the next request as HTTP/1.1 keep-alive says;
//! - [`HttpRoute::upgrade`]: the handler takes the connection over after
//!   the head, as Go's `rpc.DialHTTP` needs (`CONNECT /_goRPC_` switches
//!   to gob), and writes its own answer.
//!
//! A path no route has is answered `404 Not Found`, a method the path's
//! routes lack `405 Method Not Allowed` (with `Allow`). Limits: a head of
//! at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields (`431` past them),
//! a body of at most [`MAX_BODY`] bytes (`413`; past 64 KiB it is charged
//! to the memory budget, `503` when that is spent), no chunked request
//! bodies (`501`), and the connection's time limits as for every protocol:
//! the handshake timeout until the first whole head, the frame timeout for
//! a head or body once started, the idle timeout between requests.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::protocol::{Charge, ConnClock, Connection, Detect, Dispatcher, Expired, Protocol};
use crate::call::BoxFuture;

/// Longest request head (request line and header fields) accepted.
pub const MAX_HEAD: usize = 8 << 10;
/// Most header fields in one request head.
pub const MAX_HEADERS: usize = 64;
/// Longest request body accepted by a [`HttpRoute::respond`] route.
pub const MAX_BODY: usize = 1 << 20;
/// Of a body, this much is not charged to the server's memory budget (as
/// each native connection's first 64 KiB of input is not).
const FREE_BODY: usize = 64 << 10;

/// An HTTP request: its head, and for [`HttpRoute::respond`] routes its
/// body.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    method: String,
    target: String,
    minor_version: u8,
    headers: Vec<(String, String)>,
    body: Bytes,
    peer: SocketAddr,
}

impl HttpRequest {
    /// The method (`GET`, `CONNECT`, ...).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target as sent (path and query).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The path: the target without its query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(path, _)| path)
    }

    /// The query (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// The first header field named `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header field, in order, as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The body (empty for upgrade routes and requests without one).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the client asked to keep the connection open after this
    /// request (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`).
    pub fn keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or_default();
        let has = |token: &str| connection.split(',').any(|t| t.trim().eq_ignore_ascii_case(token));
        if self.minor_version == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }
}

/// An HTTP response from a [`HttpRoute::respond`] handler.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl HttpResponse {
    /// A response with `status` and `body` (no `Content-Type` yet).
    pub fn new(status: u16, body: impl Into<Bytes>) -> HttpResponse {
        HttpResponse { status, headers: Vec::new(), body: body.into() }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> HttpResponse {
        HttpResponse::new(status, body.into()).header("Content-Type", "text/plain; charset=utf-8")
    }

    /// Adds a header field. `Content-Length` and `Connection` are written
    /// by the server and must not be set here.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> HttpResponse {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The response as sent in answer to an HTTP/1.`minor` request.
    fn encode(&self, minor: u8, keep_alive: bool) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut head = String::with_capacity(128);
        let _ = write!(head, "HTTP/1.{minor} {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            // A CR or LF in a field would split the response: drop them.
            let clean = |s: &str| s.replace(['\r', '\n'], " ");
            let _ = write!(head, "{}: {}\r\n", clean(name), clean(value));
        }
        let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        head.push_str(match (keep_alive, minor) {
            (true, 0) => "Connection: keep-alive\r\n",
            (true, _) => "",
            (false, _) => "Connection: close\r\n",
        });
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// The reason phrase of the status codes this module and its users send.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A connection taken over by an [`HttpRoute::upgrade`] handler, just
/// after the request head.
pub struct Upgraded {
    /// The request head (its body is empty: whatever followed the head is
    /// in `buffered`).
    pub request: HttpRequest,
    /// The socket. Nothing has been written to it yet.
    pub stream: TcpStream,
    /// Bytes read past the head.
    pub buffered: BytesMut,
    /// The connection's time limits; the head counted as its first request.
    pub clock: ConnClock,
    /// The server's side of calls.
    pub dispatcher: Dispatcher,
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded").field("request", &self.request).finish_non_exhaustive()
    }
}

type RespondFn = dyn Fn(HttpRequest) -> BoxFuture<'static, HttpResponse> + Send + Sync;
type UpgradeFn = dyn Fn(Upgraded) -> BoxFuture<'static, ()> + Send + Sync;

#[derive(Clone)]
enum Handler {
    Respond(Arc<RespondFn>),
    Upgrade(Arc<UpgradeFn>),
}

/// A method and exact path served over HTTP on the RPC port.
#[derive(Clone)]
pub struct HttpRoute {
    method: String,
    path: String,
    handler: Handler,
}

impl HttpRoute {
    /// Answer `method path` with what `handler` returns.
    pub fn respond<F, Fut>(method: impl Into<String>, path: impl Into<String>, handler: F) -> HttpRoute
    where
        F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = HttpResponse> + Send + 'static,
    {
        let handler: Arc<RespondFn> = Arc::new(move |req| Box::pin(handler(req)));
        HttpRoute { method: method.into(), path: path.into(), handler: Handler::Respond(handler) }
    }

    /// Hand the connection of a `method path` request to `handler` after
    /// its head (a protocol switch, such as `CONNECT`).
    pub fn upgrade<F, Fut>(method: impl Into<String>, path: impl Into<String>, handler: F) -> HttpRoute
    where
        F: Fn(Upgraded) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let handler: Arc<UpgradeFn> = Arc::new(move |up| Box::pin(handler(up)));
        HttpRoute { method: method.into(), path: path.into(), handler: Handler::Upgrade(handler) }
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Debug for HttpRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.handler {
            Handler::Respond(_) => "respond",
            Handler::Upgrade(_) => "upgrade",
        };
        write!(f, "{} {} ({kind})", self.method, self.path)
    }
}

/// The HTTP/1.x protocol over a set of routes.
pub(super) struct Http {
    routes: Arc<[HttpRoute]>,
}

impl Http {
    pub(super) fn new(routes: Vec<HttpRoute>) -> Http {
        Http { routes: routes.into() }
    }
}

/// What the first bytes of an HTTP/1.x request look like: an upper-case
/// method of at least three letters, then a space, within the first eight
/// bytes (`CONNECT ` is the longest method there is in use here). A longer
/// upper-case word is not HTTP: more bytes never change the answer.
pub(crate) fn detect(prefix: &[u8]) -> Detect {
    let prefix = &prefix[..prefix.len().min(8)];
    match prefix.first() {
        Some(b) if b.is_ascii_uppercase() => {}
        _ => return Detect::NotMine,
    }
    match prefix.iter().position(|b| !b.is_ascii_uppercase()) {
        None if prefix.len() < 8 => Detect::NeedMore,
        Some(at) if at >= 3 && prefix[at] == b' ' => Detect::Mine,
        _ => Detect::NotMine,
    }
}

impl Protocol for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn detect(&self, prefix: &[u8]) -> Detect {
        detect(prefix)
    }

    fn serve(&self, conn: Connection) -> BoxFuture<'static, ()> {
        let routes = Arc::clone(&self.routes);
        Box::pin(serve(routes, conn))
    }
}

/// Why a request could not be read.
enum ReadEnd {
    /// Closed, drained or timed out: close without an answer.
    Quiet,
    /// Answer this status, then close.
    Answer(u16, &'static str),
}

async fn serve(routes: Arc<[HttpRoute]>, conn: Connection) {
    let peer = conn.peer;
    let (mut stream, mut clock, dispatcher) = conn.into_parts();
    let write_limit = dispatcher.config().frame_timeout;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let mut request = match read_head(&mut stream, &mut buf, &mut clock, &dispatcher, peer).await {
            Ok(request) => request,
            Err(ReadEnd::Quiet) => return,
            Err(ReadEnd::Answer(status, why)) => {
                tracing::debug!(%peer, status, why, "refusing an HTTP request");
                let response = HttpResponse::text(status, format!("{why}\n"));
                return answer_and_close(stream, &response.encode(1, false), write_limit).await;
            }
        };
        let matching = || routes.iter().filter(|r| r.path == request.path());
        let Some(route) = matching().find(|r| r.method == request.method) else {
            let allowed: Vec<&str> = matching().map(|r| r.method.as_str()).collect();
            let response = if allowed.is_empty() {
                HttpResponse::text(404, format!("404 page not found: {}\n", request.path()))
            } else {
                let allow = allowed.join(", ");
                HttpResponse::text(405, format!("405 method not allowed: {} takes {allow}\n", request.path()))
                    .header("Allow", allow)
            };
            tracing::debug!(%peer, method = %request.method, target = %request.target, status = response.status, "HTTP request with no route");
            // Whatever body came with it is unread: close rather than
            // guess where the next request starts.
            return answer_and_close(stream, &response.encode(request.minor_version, false), write_limit).await;
        };
        match &route.handler {
            Handler::Upgrade(handler) => {
                let handler = Arc::clone(handler);
                let up = Upgraded { request, stream, buffered: buf, clock, dispatcher };
                return handler(up).await;
            }
            Handler::Respond(handler) => {
                // A body past the free allowance is charged to the server's
                // memory budget, as every protocol's buffered input is, and
                // stays charged while its handler runs.
                let mut charge = dispatcher.budget().charge();
                match read_body(&mut stream, &mut buf, &mut clock, &request, &mut charge).await {
                    Ok(body) => request.body = body,
                    Err(ReadEnd::Quiet) => return,
                    Err(ReadEnd::Answer(status, why)) => {
                        tracing::debug!(%peer, status, why, "refusing an HTTP request");
                        let response = HttpResponse::text(status, format!("{why}\n"));
                        let answer = response.encode(request.minor_version, false);
                        return answer_and_close(stream, &answer, write_limit).await;
                    }
                }
                clock.decoded(true, !buf.is_empty());
                let keep_alive = request.keep_alive() && !dispatcher.is_draining();
                let minor = request.minor_version;
                let response = {
                    let _running = clock.calls().enter();
                    handler(request).await
                };
                drop(charge);
                let keep_alive = keep_alive && !dispatcher.is_draining();
                let answer = response.encode(minor, keep_alive);
                if !keep_alive {
                    return answer_and_close(stream, &answer, write_limit).await;
                }
                if write_all(&mut stream, &answer, write_limit).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads the next request head into `buf` and parses it.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    clock: &mut ConnClock,
    dispatcher: &Dispatcher,
    peer: SocketAddr,
) -> Result<HttpRequest, ReadEnd> {
    let mut scanned = 0;
    let head_len = loop {
        if let Some(end) = head_end(buf, scanned) {
            if end > MAX_HEAD {
                return Err(ReadEnd::Answer(431, "the request head is too long"));
            }
            break end;
        }
        scanned = buf.len();
        if buf.len() > MAX_HEAD {
            return Err(ReadEnd::Answer(431, "the request head is too long"));
        }
        clock.decoded(false, !buf.is_empty());
        if buf.is_empty() && dispatcher.is_draining() {
            return Err(ReadEnd::Quiet);
        }
        read_more(stream, buf, clock, Some(dispatcher)).await?;
    };
    let head = buf.split_to(head_len);
    clock.decoded(true, !buf.is_empty());
    let (method, target, minor_version, headers) = parse_head(&head).map_err(|why| ReadEnd::Answer(400, why))?;
    Ok(HttpRequest { method, target, minor_version, headers, body: Bytes::new(), peer })
}

/// Reads the body `request` announces (`Content-Length`).
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    clock: &mut ConnClock,
    request: &HttpRequest,
    charge: &mut Charge,
) -> Result<Bytes, ReadEnd> {
    if request.header("transfer-encoding").is_some() {
        return Err(ReadEnd::Answer(501, "chunked request bodies are not supported; send Content-Length"));
    }
    let len = match request.header("content-length") {
        None => 0,
        Some(text) => text.parse::<usize>().map_err(|_| ReadEnd::Answer(400, "Content-Length is not a number"))?,
    };
    if len > MAX_BODY {
        return Err(ReadEnd::Answer(413, "the request body is too long"));
    }
    // The buffer grows as the body arrives (read_more), not on the
    // header's word.
    if !charge.try_hold(len.saturating_sub(FREE_BODY)) {
        return Err(ReadEnd::Answer(503, "the server's memory budget is spent; try again later"));
    }
    while buf.len() < len {
        clock.decoded(false, true);
        read_more(stream, buf, clock, None).await?;
    }
    Ok(buf.split_to(len).freeze())
}

/// One read into `buf`, within the connection's time limits (and, between
/// requests, until the server drains).
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    clock: &mut ConnClock,
    draining: Option<&Dispatcher>,
) -> Result<(), ReadEnd> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    let between_requests = buf.is_empty();
    let drain = async {
        match draining {
            Some(d) if between_requests => d.draining().cancelled().await,
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        read = stream.read_buf(buf) => match read {
            Ok(0) | Err(_) => Err(ReadEnd::Quiet),
            Ok(_) => {
                clock.read();
                Ok(())
            }
        },
        () = drain => Err(ReadEnd::Quiet),
        expired = clock.expired(|| false) => match expired {
            Expired::Frame(_) => Err(ReadEnd::Answer(408, "the request was not finished within the frame timeout")),
            _ => Err(ReadEnd::Quiet),
        },
    }
}

/// Writes a last answer and closes so that the peer reads it: shut the
/// write side, then take (and drop) what the peer still sends for a
/// moment, since closing a socket with unread input resets it and the
/// peer may lose the answer.
async fn answer_and_close(mut stream: TcpStream, answer: &[u8], limit: Duration) {
    if write_all(&mut stream, answer, limit).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = MAX_BODY;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Writes `bytes`, giving up when the peer takes none of them for `limit`.
async fn write_all(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
    match tokio::time::timeout(limit, stream.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Where an HTTP request head ends (after its blank line: `\n\n` or
/// `\r\n\r\n`), if it does yet. `from` is how much of `buf` an earlier call
/// looked at without finding the end: only later bytes are looked at, so
/// a head that arrives in pieces is scanned once.
pub(crate) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    // (The blank line's last byte is new; the bytes before it are looked
    // behind at.)
    let start = from.min(buf.len());
    let at = buf.get(start..)?.iter().enumerate().position(|(i, &b)| {
        let i = start + i;
        b == b'\n' && (i >= 1 && buf[i - 1] == b'\n' || i >= 3 && &buf[i - 3..i] == b"\r\n\r")
    })?;
    Some(start + at + 1)
}

/// A parsed request head: method, target, minor version, header fields.
pub(crate) type Head = (String, String, u8, Vec<(String, String)>);

/// Parses a whole request head (request line and header fields, lines
/// ended by LF or CRLF, up to its blank line). Strict where it matters:
/// the method is upper-case letters, the target has no whitespace or
/// control bytes, the version is `HTTP/1.0` or `HTTP/1.1`, a field is
/// `name: value` with a token name; at most [`MAX_HEADERS`] fields.
pub(crate) fn parse_head(head: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8")?;
    let mut lines = text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line));
    let line = lines.next().unwrap_or_default();
    let mut words = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (words.next(), words.next(), words.next(), words.next())
    else {
        return Err("the request line is not `METHOD TARGET HTTP/1.x`");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("the request method is not an upper-case word");
    }
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("the request target is empty or holds control bytes");
    }
    let minor_version = match version {
        "HTTP/1.0" => 0,
        "HTTP/1.1" => 1,
        _ => return Err("the HTTP version is not 1.0 or 1.1"),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break; // the blank line
        }
        if headers.len() == MAX_HEADERS {
            return Err("too many header fields");
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err("a header field has no colon");
        };
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err("a header field name is not a token");
        }
        if value.bytes().any(|b| b < b' ' && b != b'\t' || b == 0x7f) {
            return Err("a header field value holds control bytes");
        }
        headers.push((name.to_owned(), value.trim_matches([' ', '\t']).to_owned()));
    }
    Ok((method.to_owned(), target.to_owned(), minor_version, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_told_from_its_first_eight_bytes() {
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detect::Mine);
        assert_eq!(detect(b"CONNECT "), Detect::Mine);
        assert_eq!(detect(b"CONNECT"), Detect::NeedMore);
        assert_eq!(detect(b"CO"), Detect::NeedMore);
        assert_eq!(detect(b"AB CD"), Detect::NotMine);
        assert_eq!(detect(b"ABCDEFGHIJ"), Detect::NotMine);
        assert_eq!(detect(b"PROPFIND / HTTP/1.1\r\n"), Detect::NotMine);
        assert_eq!(detect(&[0xC5, 0xB0]), Detect::NotMine);
        assert_eq!(detect(b"{\"a\""), Detect::NotMine);
    }

    #[test]
    fn http_heads_end_at_the_first_blank_line() {
        assert_eq!(head_end(b"CONNECT /_goRPC_ HTTP/1.0\n\nrest", 0), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0), Some(27));
        assert_eq!(head_end(b"CONNECT /_goRPC_ HTTP/1.0\n", 0), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nX\n\n", 0), Some(18));
    }

    #[test]
    fn http_heads_split_anywhere_end_in_the_same_place() {
        for head in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"[..], b"CONNECT /_goRPC_ HTTP/1.0\n\nrest"] {
            let expected = head_end(head, 0);
            for at in 0..=head.len() {
                let got = head_end(&head[..at], 0).or_else(|| head_end(head, at));
                assert_eq!(got, expected, "split at {at}");
            }
            // A byte at a time, each call looking only at the new byte.
            let mut from = 0;
            let found = (1..=head.len()).find_map(|n| {
                let end = head_end(&head[..n], from);
                from = n;
                end
            });
            assert_eq!(found, expected);
        }
    }

    #[test]
    fn heads_parse_strictly() {
        let (method, target, minor, headers) =
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept:  text/plain \r\n\r\n").expect("valid");
        assert_eq!((method.as_str(), target.as_str(), minor), ("GET", "/metrics?x=1", 1));
        assert_eq!(headers, [("Host".to_owned(), "a".to_owned()), ("Accept".to_owned(), "text/plain".to_owned())]);
        assert!(parse_head(b"CONNECT /_goRPC_ HTTP/1.0\n\n").is_ok());
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            parse_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).err(),
            Some("too many header fields")
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_field() {
        let req = |minor, connection: Option<&str>| HttpRequest {
            method: "GET".into(),
            target: "/".into(),
            minor_version: minor,
            headers: connection.map(|c| ("Connection".to_owned(), c.to_owned())).into_iter().collect(),
            body: Bytes::new(),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        };
        assert!(req(1, None).keep_alive());
        assert!(!req(1, Some("close")).keep_alive());
        assert!(!req(0, None).keep_alive());
        assert!(req(0, Some("Keep-Alive")).keep_alive());
        assert!(!req(1, Some("upgrade, close")).keep_alive());
    }

    #[test]
    fn responses_carry_their_length_and_no_injected_lines() {
        let response = HttpResponse::text(200, "hi").header("X-A", "1\r\nX-Evil: 2");
        let text = String::from_utf8(response.encode(1, true)).expect("utf-8");
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nX-A: 1  X-Evil: 2\r\nContent-Length: 2\r\n\r\nhi"
        );
        let closing = String::from_utf8(HttpResponse::new(404, "").encode(0, false)).expect("utf-8");
        assert_eq!(closing, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
}
