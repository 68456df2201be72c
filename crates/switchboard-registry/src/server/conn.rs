//! The registry's own accept loop: HTTP/1 connections served with hyper,
//! with the limits `axum::serve` cannot set.
//!
//! ## What each connection may take
//!
//! Every moment of a connection's life has a deadline, except the one a
//! blocking query legitimately spends waiting (bounded by `max_wait`):
//!
//! | phase | starts | deadline (`RegistryConfig`) | past it |
//! |-------|--------|-----------------------------|---------|
//! | idle | connection opened, or last answer handed over | `idle_timeout` (60 s) | closed |
//! | head | first byte of a request | `header_timeout` (10 s) to the end of its headers | closed |
//! | body | the head is in | `body_timeout` (30 s) to the end of the body | 408 `body_timeout`, closed |
//! | handling | the handler runs (a blocking query waits here) | none: the handler's own (`max_wait`) | — |
//! | answering | the answer is ready | `body_timeout` (30 s) for the client to take it | closed |
//!
//! hyper's own `header_read_timeout` is not used: hyper starts it as soon
//! as a connection goes idle, so it would be an idle timeout too, and
//! idle keep-alive connections would be cut after 10 s instead of 60 s.
//! Instead the socket is wrapped ([`Watched`]) to note the first byte of
//! each request, the service marks where a request is ([`Phase`]), and one
//! watchdog per connection (in [`connection`]) sleeps until the current
//! phase's deadline. Request bodies are wrapped in [`TimeoutBody`].
//!
//! ## The connection cap
//!
//! A semaphore of `max_connections` permits; each connection holds one
//! until it closes. Past the cap a connection is answered with a 503
//! `too_many_connections` as soon as its request head is in, and closed. A
//! small, bounded pool of refusers does that, each spending at most
//! [`REFUSE_TIME`] on a connection (it reads what the client sends, so the
//! close does not reset the answer away); if the pool is busy too, the
//! connection is simply closed. Nothing past the cap waits for a slot.
//!
//! ## Shutdown
//!
//! On the signal the loop stops accepting, connections between requests
//! close at once, connections with a request in progress finish it (blocking
//! queries answer at once, see `server.rs`) and close. Connections still
//! open [`DRAIN`] after the signal are closed.
//!
//! ## Memory per connection
//!
//! A request head may take at most [`MAX_HEAD_BYTES`], the connection's
//! buffers at most [`MAX_BUF_BYTES`]; bodies are bounded by the routes'
//! limits (`max_body_bytes`, config values 512 KiB) and answers by the
//! listing cap.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// Largest request head (request line and headers) accepted; larger gets 431.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest buffer hyper keeps for one connection.
pub(crate) const MAX_BUF_BYTES: usize = 32 * 1024;
/// How long shutdown waits for busy connections before closing them.
pub(crate) const DRAIN: Duration = Duration::from_secs(5);
/// How many refused connections may be answered (503) at once; beyond, they
/// are closed without an answer.
const REFUSERS: usize = 64;
/// How long a refuser spends on one connection.
const REFUSE_TIME: Duration = Duration::from_secs(1);

/// The timeouts and the cap, from the server's `RegistryConfig`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header: Duration,
    pub(crate) body: Duration,
    pub(crate) idle: Duration,
    pub(crate) max_connections: usize,
}

/// A request body that did not arrive within `body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} (body_timeout)")]
pub(crate) struct BodyTimedOut(pub(crate) Duration);

/// Where a connection is (see the module docs' table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests, since then.
    Idle(Instant),
    /// Part of a request head is in, since its first byte.
    Head(Instant),
    /// A handler runs.
    Handling,
    /// The answer is being sent, since it was ready.
    Answering(Instant),
}

/// A connection's phase, shared by its socket wrapper, its service and its
/// watchdog, which `changed` wakes.
#[derive(Debug)]
struct ConnState {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState { phase: Mutex::new(Phase::Idle(Instant::now())), changed: Notify::new() }
    }

    fn get(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = phase;
        self.changed.notify_one();
    }

    /// Bytes arrived: if the connection was idle, a request head has begun.
    fn bytes_in(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// The current phase's deadline and what it is about.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        match self.get() {
            Phase::Idle(since) => Some((since + limits.idle, "idle_timeout: no request")),
            Phase::Head(since) => Some((since + limits.header, "header_timeout: request head incomplete")),
            Phase::Handling => None,
            Phase::Answering(since) => Some((since + limits.body, "body_timeout: answer not taken")),
        }
    }

    fn between_requests(&self) -> bool {
        matches!(self.get(), Phase::Idle(_) | Phase::Head(_))
    }
}

/// The socket, noting the first byte of every request.
struct Watched {
    stream: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.bytes_in();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Marks a request in progress; dropped (with the answer's body, or with
/// the request if the connection went first), the connection is idle again.
struct InProgress(Arc<ConnState>);

impl InProgress {
    fn start(state: Arc<ConnState>) -> InProgress {
        state.set(Phase::Handling);
        InProgress(state)
    }

    fn answering(&self) {
        self.0.set(Phase::Answering(Instant::now()));
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.set(Phase::Idle(Instant::now()));
    }
}

/// An answer's body, holding the request's [`InProgress`] until it is sent.
struct Answer {
    inner: Body,
    _in_progress: InProgress,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails with [`BodyTimedOut`] if it is not complete by
/// its deadline.
pub(crate) struct TimeoutBody {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    /// Made the first time the body is not there yet.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl TimeoutBody {
    fn new(inner: Incoming, limit: Duration) -> TimeoutBody {
        TimeoutBody { inner, deadline: Instant::now() + limit, limit, sleep: None }
    }
}

impl http_body::Body for TimeoutBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Accepts and serves connections on `listener` until `shutdown`, then
/// drains them (see the module docs).
pub(crate) async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: CancellationToken) {
    // Semaphore permits are counted in u32 when acquired together (drain).
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let permits = Arc::new(Semaphore::new(max));
    let refusers = Arc::new(Semaphore::new(REFUSERS));
    let refusal = refusal(max);
    let force = CancellationToken::new();
    let mut refused: u64 = 0;
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: wait a little rather than spin.
                if last_accept_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(target: "switchboard_registry", error = %e, "accepting a connection failed; retrying");
                    last_accept_warning = Some(Instant::now());
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                if refused > 0 {
                    tracing::info!(target: "switchboard_registry", refused, "below the connection cap again");
                    refused = 0;
                }
                tokio::spawn(connection(stream, router.clone(), limits, shutdown.clone(), force.clone(), permit));
            }
            Err(_) => {
                if refused == 0 {
                    tracing::warn!(target: "switchboard_registry", max_connections = max,
                        "connection cap reached: refusing new connections (503) until some close");
                }
                refused += 1;
                refuse(stream, refusal.clone(), &refusers);
            }
        }
    }
    drop(listener);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, permits.acquire_many(all)).await.is_err() {
        let open = max - permits.available_permits();
        tracing::warn!(target: "switchboard_registry", open, "closing connections still busy {DRAIN:?} after shutdown");
        force.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), permits.acquire_many(all)).await;
    }
}

/// Accept errors that concern only the connection being accepted.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// The whole answer a connection past the cap gets.
fn refusal(max: usize) -> Bytes {
    let body = serde_json::json!({
        "error": format!(
            "too many connections: the registry serves at most {max} at once (max_connections); try again later"
        ),
        "code": "too_many_connections",
    })
    .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
         retry-after: 1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    Bytes::from(head + &body)
}

/// Answers a connection past the cap with `answer` and closes it, if a
/// refuser is free; closes it at once otherwise.
fn refuse(stream: TcpStream, answer: Bytes, refusers: &Arc<Semaphore>) {
    let Ok(permit) = refusers.clone().try_acquire_owned() else {
        return; // dropped: closed at once
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSE_TIME, async {
            // Let the request head in first: an HTTP client that gets an
            // answer before it sent its request takes it for a broken
            // connection, not for a 503.
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while head.len() < MAX_HEAD_BYTES && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await? {
                    0 => return Ok(()),
                    n => head.extend_from_slice(&buf[..n]),
                }
            }
            stream.write_all(&answer).await?;
            stream.shutdown().await?;
            // Read what else the client sends (a body), so that closing with
            // unread bytes does not reset the connection under the answer.
            let mut total = 0usize;
            while total < 64 * 1024 {
                match stream.read(&mut buf).await? {
                    0 => break,
                    n => total += n,
                }
            }
            Ok::<(), io::Error>(())
        })
        .await;
    });
}

/// Sleeps until `deadline`, or forever.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Serves one connection, holding its permit, under the watchdog.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
    force: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Watched { stream, state: state.clone() });
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_progress = InProgress::start(service_state.clone());
        let mut router = router.clone();
        let request = request.map(|body| Body::new(TimeoutBody::new(body, limits.body)));
        async move {
            // An axum Router is always ready: no poll_ready needed.
            let response = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            in_progress.answering();
            Ok::<_, Infallible>(response.map(|inner| Answer { inner, _in_progress: in_progress }))
        }
    });
    let mut builder = http1::Builder::new();
    builder.max_buf_size(MAX_BUF_BYTES).max_header_size(MAX_HEAD_BYTES).header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        if draining && state.between_requests() {
            return; // shutting down: nothing in progress to finish
        }
        let deadline = state.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(target: "switchboard_registry", %error, "connection ended with an error");
                }
                return;
            }
            () = state.changed.notified() => {}
            () = until(deadline.map(|(at, _)| at)) => {
                // Still the same deadline (nothing happened meanwhile)?
                if let Some((at, what)) = state.deadline(&limits).filter(|(at, _)| *at <= Instant::now()) {
                    tracing::debug!(target: "switchboard_registry", timeout = what, ?at, "closing a connection");
                    return;
                }
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = force.cancelled() => return,
        }
    }
}
