//! One server connection speaking Switchboard frames.
//!
//! The read loop decodes frames and starts a task per request; tasks answer
//! through the connection's [`WriteQueue`] in whatever order they finish.
//! Requests in flight are kept by id so a cancel frame (or the connection
//! closing) can abort their handlers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;

use super::limits::{CallCounter, CallGuard, Charge, ConnClock, Expired};
use super::protocol::{Connection, Detect, Protocol};
use super::Inner;
use crate::call::{BoxFuture, Request, Response};
use crate::codec::Codec;
use crate::frame::{
    self, Decoded, Frame, FrameDecoder, Head, Kind, Metadata, FLAG_COMPRESSED, FLAG_FORWARDED, FLAG_REFUSED,
};
use crate::io::{self, WriteQueue};
use crate::status::{Code, Status};

const READ_CHUNK: usize = 64 << 10;

/// The id of the ping a draining server sends after its go-away. When the
/// pong comes back, TCP ordering guarantees every request the client sent
/// before it saw the go-away has been read (and refused).
const DRAIN_PING_ID: u64 = u64::MAX;
/// How long a draining server waits for that pong from a peer that does not
/// answer pings.
const DRAIN_PONG_GRACE: Duration = Duration::from_secs(1);

struct Conn {
    inner: Arc<Inner>,
    peer: SocketAddr,
    queue: WriteQueue,
    in_flight: Mutex<HashMap<u64, AbortHandle>>,
    /// Calls running in their own task (those that did not finish inline).
    calls: CallCounter,
    tasks: TaskTracker,
}

/// Of a connection's read buffer and of its queued answers, this much each
/// is not charged to the memory budget: a connection with small frames
/// never waits for the budget.
const FREE_PER_CONNECTION: usize = READ_CHUNK;

/// A request payload at least this large is charged to the memory budget
/// while its call runs in a task of its own.
const CHARGED_PAYLOAD: usize = 64 << 10;

/// Why the read loop takes no new frames for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Saturated {
    /// `max_calls_per_connection` calls run.
    Calls,
    /// `max_queued_bytes` of answers wait to be written.
    Queue,
    /// The memory budget cannot cover the answers waiting for this peer.
    Budget,
}

/// Switchboard's own frames: always served, and asked first.
pub(super) struct Native;

impl Protocol for Native {
    fn name(&self) -> &'static str {
        "switchboard"
    }

    /// Every connection starts with a frame, and every frame with the magic.
    fn detect(&self, prefix: &[u8]) -> Detect {
        let [m0, m1] = frame::MAGIC;
        match *prefix {
            [] => Detect::NeedMore,
            [b] if b == m0 => Detect::NeedMore,
            [b0, b1, ..] if b0 == m0 && b1 == m1 => Detect::Mine,
            _ => Detect::NotMine,
        }
    }

    fn serve(&self, conn: Connection) -> BoxFuture<'static, ()> {
        let Connection { stream, peer, clock, dispatcher } = conn;
        Box::pin(serve(dispatcher.inner, stream, peer, clock))
    }
}

async fn serve(inner: Arc<Inner>, stream: TcpStream, peer: SocketAddr, mut clock: ConnClock) {
    let sock = Arc::new(stream);
    let stall_limit = inner.config.frame_timeout;
    let conn = Arc::new(Conn {
        inner,
        peer,
        // A peer that takes none of its answers for the frame timeout is
        // dropped: its queued answers are memory held for nothing.
        queue: WriteQueue::new(Arc::clone(&sock)).with_stall_limit(stall_limit),
        in_flight: Mutex::new(HashMap::new()),
        calls: clock.calls().clone(),
        tasks: TaskTracker::new(),
    });
    let mut writer = {
        let conn = Arc::clone(&conn);
        tokio::spawn(async move { conn.queue.run_writer().await.err() })
    };
    let mut writer_done = false;

    let config = &conn.inner.config;
    let mut decoder = FrameDecoder::new(config.max_frame)
        .with_metadata_limits(config.max_metadata_bytes, config.max_metadata_entries);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // What this connection holds of the server's memory budget: its read
    // buffer (a started frame is charged whole, from its header) and its
    // queued answers, each beyond the first FREE_PER_CONNECTION bytes.
    let mut input = conn.inner.budget.charge();
    let mut output = conn.inner.budget.charge();
    let mut draining = false;
    // Highest request id accepted so far; a go-away carries it so the client
    // knows which later requests never ran (as HTTP/2's GOAWAY does).
    let mut last_id = 0u64;
    // Draining: whether the client acknowledged the go-away (or we gave up
    // waiting for it to).
    let mut drain_acked = false;
    let drain_grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain_grace);
    // Whether a whole frame came out since the clock was last told.
    let mut completed = false;
    let reason = loop {
        // Backpressure: while too many calls run or too many answers wait to
        // be written, take no new frames, neither buffered nor from the
        // socket; TCP flow control then slows the client down.
        // (The wake-up is armed only when saturated: it costs a lock.)
        let progressed = conn.queue.progressed();
        tokio::pin!(progressed);
        let mut saturated = conn.saturation(&mut output);
        if saturated.is_some() {
            progressed.as_mut().enable();
            saturated = conn.saturation(&mut output);
        }
        if saturated.is_none() {
            // Decode what is already buffered before reading again.
            match decoder.decode(&mut buf) {
                Ok(Some(Decoded::Frame(frame))) => {
                    completed = true;
                    let is_call = matches!(frame.head.kind, Kind::Request | Kind::OneWay);
                    if is_call && !draining && conn.inner.shutting_down.load(Ordering::Acquire) {
                        // Shutdown began, but this task has not seen the token
                        // yet: it was not scheduled in between, or select!
                        // below polled the read first. Go away now, so this
                        // request is refused like any other that arrives
                        // during shutdown: run, it would hold the drain up and
                        // its caller would wait for it (tests/robustness.rs,
                        // `a_request_read_after_shutdown_began_is_refused`).
                        draining = true;
                        drain_grace.as_mut().reset(tokio::time::Instant::now() + conn.go_away(last_id));
                    }
                    match frame.head.kind {
                        Kind::Request | Kind::OneWay if !draining => last_id = last_id.max(frame.head.id),
                        Kind::Pong if frame.head.id == DRAIN_PING_ID => drain_acked = true,
                        _ => {}
                    }
                    conn.on_frame(frame, draining);
                    continue;
                }
                Ok(Some(Decoded::Oversized { head, len })) => {
                    completed = true;
                    conn.on_oversized(head, len);
                    continue;
                }
                Ok(Some(Decoded::Refused { head, why })) => {
                    completed = true;
                    conn.on_refused(head, &why);
                    continue;
                }
                Ok(None) => {}
                Err(e) => break format!("protocol error: {e}"),
            }
            // A frame has started: its header says how much finishing it
            // holds, and the budget must cover all of it now, or the frame
            // is refused (its bytes discarded as they come) before any of
            // that is held.
            let pending = decoder.pending_len(&buf);
            if let Some(total) = pending {
                if !input.try_hold(total.saturating_sub(FREE_PER_CONNECTION)) {
                    if let Some((head, len)) = decoder.skip_pending(&mut buf) {
                        conn.on_over_budget(head, len);
                        completed = true;
                        continue;
                    }
                }
            }
            decoder.reserve_for_read(&mut buf, READ_CHUNK);
            // Track the buffer (frames handed to calls no longer count here);
            // read slack the budget cannot cover is not refused.
            let held = buf.capacity().max(pending.unwrap_or(0)).saturating_sub(FREE_PER_CONNECTION);
            if held < input.held() || pending.is_none() {
                let _ = input.try_hold(held);
            }
            clock.decoded(std::mem::take(&mut completed), decoder.in_frame(&buf));
        }
        // Everything decoded so far has been answered (or handed to a
        // task): send the answers of this batch in one write.
        conn.queue.flush();
        tokio::select! {
            _ = progressed, if saturated.is_some() => {}
            _ = output.released(), if saturated == Some(Saturated::Budget) => {}
            failed = &mut writer, if !writer_done => {
                writer_done = true;
                match failed {
                    Ok(Some(e)) if e.kind() == std::io::ErrorKind::TimedOut => break format!("closing: {e}"),
                    Ok(Some(e)) => break format!("write error: {e}"),
                    _ => break "writer ended".to_owned(),
                }
            }
            read = io::read_some(&sock, &mut buf), if saturated.is_none() => match read {
                Ok(0) if buf.is_empty() => break "closed by peer".to_owned(),
                Ok(0) => break format!("closed by peer mid-frame ({} bytes unread)", buf.len()),
                Ok(_) => clock.read(),
                Err(e) => break format!("read error: {e}"),
            },
            expired = clock.expired(|| conn.queue.len() > 0), if !draining => {
                match expired {
                    // Port scanners and TCP health checks do this: not worth a warning.
                    Expired::Handshake(_) => break expired.to_string(),
                    // The process is out of descriptors and this connection is
                    // idle: close now (a go-away first, so the client knows
                    // nothing of its was lost), without waiting for a pong.
                    Expired::Evicted => {
                        conn.go_away(last_id);
                        break expired.to_string();
                    }
                    _ => {}
                }
                if !expired.is_benign() {
                    break format!("closing: {expired}");
                }
                // Idle (or closed for room): go away politely, so the client
                // moves to a new connection without losing a call.
                tracing::debug!(peer = %conn.peer, reason = %expired, "going away");
                draining = true;
                drain_grace.as_mut().reset(tokio::time::Instant::now() + conn.go_away(last_id));
            }
            _ = conn.inner.draining.cancelled(), if !draining => {
                draining = true;
                drain_grace.as_mut().reset(tokio::time::Instant::now() + conn.go_away(last_id));
            }
            _ = &mut drain_grace, if draining && !drain_acked => drain_acked = true,
            _ = conn.tasks.wait(), if draining && drain_acked => break "server shut down".to_owned(),
            _ = conn.inner.stop.cancelled() => break "server stopped".to_owned(),
        }
    };

    if reason.starts_with("protocol error") || reason.starts_with("closing") {
        tracing::warn!(peer = %conn.peer, %reason, "closing connection");
    } else {
        tracing::debug!(peer = %conn.peer, %reason, "connection closed");
    }
    // Nobody is left to read answers: cancel what still runs.
    let handles: Vec<AbortHandle> = lock(&conn.in_flight).drain().map(|(_, h)| h).collect();
    for handle in handles {
        handle.abort();
    }
    conn.tasks.close();
    conn.tasks.wait().await;
    conn.queue.close();
    if !writer_done {
        let _ = writer.await;
    }
    // The budget is released with `input` and `output` here, and the
    // admission ticket with `clock`.
    drop((input, output, clock));
}

/// Turn away a connection over the server's limit: a go-away carrying
/// ResourceExhausted tells the client that nothing it sent ran (so it may
/// retry elsewhere), then the connection closes. What the client already sent
/// is read and discarded first (for at most a second), so closing with unread
/// data does not reset the connection before the client reads the go-away.
pub(super) async fn refuse(mut stream: TcpStream, why: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A flood of refused connections must not become a flood of tasks each
    // holding a descriptor for a second: past this many, close at once.
    const MAX_REFUSING: usize = 256;
    static REFUSING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    struct Refusing;
    impl Drop for Refusing {
        fn drop(&mut self) {
            REFUSING.fetch_sub(1, Ordering::Relaxed);
        }
    }
    if REFUSING.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSING {
        REFUSING.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let _refusing = Refusing;
    let mut meta = Metadata::default();
    meta.set_message(why);
    let head =
        Head { kind: Kind::GoAway, codec: 0, flags: FLAG_REFUSED, status: Code::ResourceExhausted.as_u16(), id: 0 };
    let mut buf = BytesMut::new();
    encode_or_log(&mut buf, head, &meta, &[]);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&buf).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Counts a spawned call down when its task ends, however it ends, wakes a
/// read loop paused on the per-connection call limit, and releases what the
/// call's request held of the memory budget.
struct RunningGuard<'a> {
    conn: &'a Conn,
    call: Option<CallGuard>,
    _charge: Option<Charge>,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.call.take();
        self.conn.queue.notify_progress();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn encode_or_log(buf: &mut BytesMut, head: Head, meta: &Metadata, payload: &[u8]) {
    if let Err(e) = head.encode(buf, meta, payload) {
        tracing::error!(error = %e, "cannot encode frame");
    }
}

impl Conn {
    /// Whether (and why) to take no new frames now. `output` follows the
    /// queued answers' share of the memory budget.
    fn saturation(&self, output: &mut Charge) -> Option<Saturated> {
        let config = &self.inner.config;
        if self.calls.running() >= config.max_calls_per_connection {
            return Some(Saturated::Calls);
        }
        let queued = self.queue.len();
        if queued > config.max_queued_bytes {
            return Some(Saturated::Queue);
        }
        if !output.try_hold(queued.saturating_sub(FREE_PER_CONNECTION)) {
            return Some(Saturated::Budget);
        }
        None
    }

    /// Start draining: tell the client (a go-away carrying `last_id`, the
    /// last request accepted) and ping it to learn when it has seen that;
    /// start no more calls. Returns how long to wait for the pong. The
    /// caller flushes.
    fn go_away(&self, last_id: u64) -> Duration {
        let _ = self.queue.push_deferred(|b| {
            encode_or_log(b, Head::new(Kind::GoAway, last_id), &Metadata::default(), &[]);
            encode_or_log(b, Head::new(Kind::Ping, DRAIN_PING_ID), &Metadata::default(), &[]);
        });
        self.tasks.close();
        DRAIN_PONG_GRACE.min(self.inner.config.shutdown_timeout)
    }

    fn on_frame(self: &Arc<Self>, frame: Frame, draining: bool) {
        let head = frame.head;
        match head.kind {
            Kind::Request | Kind::OneWay if draining => {
                if head.kind == Kind::Request {
                    self.reply_error(head, FLAG_REFUSED, &Status::unavailable("server is shutting down"));
                }
            }
            Kind::Request | Kind::OneWay => self.start_call(frame),
            Kind::Ping => {
                let _ = self
                    .queue
                    .push_deferred(|b| encode_or_log(b, Head::new(Kind::Pong, head.id), &Metadata::default(), &[]));
            }
            Kind::Cancel => {
                if let Some(handle) = lock(&self.in_flight).remove(&head.id) {
                    handle.abort();
                    tracing::debug!(peer = %self.peer, id = head.id, "call cancelled by client");
                }
            }
            Kind::Pong => {}
            Kind::Response | Kind::GoAway => {
                tracing::debug!(peer = %self.peer, kind = ?head.kind, "ignoring frame a client should not send");
            }
        }
    }

    fn on_oversized(&self, head: Head, len: u64) {
        let max = self.inner.config.max_frame;
        tracing::warn!(peer = %self.peer, id = head.id, len, max, "refused oversized frame");
        if head.kind == Kind::Request {
            let status =
                Status::resource_exhausted(format!("request frame of {len} bytes exceeds the limit of {max} bytes"));
            self.reply_error(head, 0, &status);
        }
    }

    fn on_refused(&self, head: Head, why: &frame::FrameError) {
        tracing::warn!(peer = %self.peer, id = head.id, reason = %why, "refused a frame over a metadata limit");
        self.reply_error(head, 0, &Status::resource_exhausted(format!("request refused: {why}")));
    }

    /// A frame the memory budget cannot cover: refused unprocessed (the
    /// client may send it elsewhere).
    fn on_over_budget(&self, head: Head, len: u64) {
        let budget = &self.inner.budget;
        tracing::warn!(peer = %self.peer, id = head.id, len, used = budget.used(), limit = budget.limit(), "memory budget exhausted; refused a frame");
        let status = Status::resource_exhausted(format!(
            "request frame of {len} bytes refused: the server's memory budget of {} bytes is in use; try again later or elsewhere",
            budget.limit()
        ));
        self.reply_error(head, FLAG_REFUSED, &status);
    }

    /// Answer request `req` with an error. One-way frames get no answer.
    fn reply_error(&self, req: Head, flags: u8, status: &Status) {
        if req.kind != Kind::Request {
            tracing::debug!(peer = %self.peer, id = req.id, %status, "one-way call failed");
            return;
        }
        let mut meta = Metadata::default();
        meta.set_message(status.message().to_owned());
        if !status.details().is_empty() {
            meta.set_details(status.details().clone());
        }
        let flags = if status.is_forwarded() { flags | FLAG_FORWARDED } else { flags };
        let head = Head { kind: Kind::Response, codec: req.codec, flags, status: status.code().as_u16(), id: req.id };
        let _ = self.queue.push_deferred(|b| encode_or_log(b, head, &meta, &[]));
    }

    fn start_call(self: &Arc<Self>, mut frame: Frame) {
        let head = frame.head;
        let Some(codec) = Codec::from_id(head.codec).filter(|c| c.is_enabled()) else {
            let known: Vec<String> =
                Codec::ALL.iter().filter(|c| c.is_enabled()).map(|c| format!("{}={}", c.name(), c.id())).collect();
            let status = Status::unimplemented(format!(
                "unknown codec id {} (this server speaks {})",
                head.codec,
                known.join(", ")
            ));
            return self.reply_error(head, 0, &status);
        };
        let payload = match frame.take_payload(self.inner.config.max_frame) {
            Ok(p) => p,
            Err(e @ frame::FrameError::TooLarge { .. }) => {
                return self.reply_error(head, 0, &Status::resource_exhausted(format!("decompressed payload: {e}")))
            }
            Err(e) => return self.reply_error(head, 0, &Status::invalid_argument(e.to_string())),
        };
        // One clock read per call: the deadline becomes a local instant that
        // the request, the handler's Context and the timer all share.
        let deadline = frame.meta.deadline().or(self.inner.config.default_timeout);
        let payload_len = payload.len();
        let req = Request {
            codec,
            metadata: frame.meta,
            payload,
            peer: Some(self.peer),
            deadline: deadline.and_then(|d| tokio::time::Instant::now().checked_add(d)),
        };

        if lock(&self.in_flight).contains_key(&head.id) {
            // Answering would be ambiguous: the reply would reach whichever
            // call the peer has waiting on that id. Drop the duplicate.
            tracing::warn!(peer = %self.peer, id = head.id, "dropping a request whose id is already in flight");
            return;
        }

        // Fast path: poll the call once, right here on the connection task. A
        // handler that answers without waiting (most do) then costs no task
        // spawn and no wake-up of another worker thread. The poll uses a
        // no-op waker: a call that is not ready moves to its own task, whose
        // first poll registers the real waker (futures re-register on every
        // poll, so nothing is lost in between).
        let mut call: BoxFuture<'static, Result<Response, Status>> = {
            let conn = Arc::clone(self);
            Box::pin(async move { conn.inner.dispatch(req).await })
        };
        if let Poll::Ready(result) = call.as_mut().poll(&mut std::task::Context::from_waker(Waker::noop())) {
            if head.kind == Kind::Request {
                self.respond(head, result);
            }
            return;
        }

        // Slow path: the call waits on something; give it a task of its own
        // so the connection keeps reading, and keep its abort handle for
        // cancel frames. Spawned while holding the lock so the task cannot
        // finish (and remove its entry) before the entry exists.
        let conn = Arc::clone(self);
        let charge = (payload_len >= CHARGED_PAYLOAD).then(|| {
            let mut charge = self.inner.budget.charge();
            charge.add_anyway(payload_len);
            charge
        });
        let mut in_flight = lock(&self.in_flight);
        let call_guard = self.calls.enter();
        let task = self.tasks.spawn(async move {
            // Counted down even if the task is aborted (cancel, shutdown).
            let _running = RunningGuard { conn: &conn, call: Some(call_guard), _charge: charge };
            let result = call.await;
            lock(&conn.in_flight).remove(&head.id);
            if head.kind == Kind::Request {
                conn.respond(head, result);
                conn.queue.flush();
            }
        });
        in_flight.insert(head.id, task.abort_handle());
    }

    fn respond(&self, req: Head, result: Result<Response, Status>) {
        let response = match result {
            Ok(r) => r,
            Err(status) => return self.reply_error(req, 0, &status),
        };
        let max = self.inner.config.max_frame;
        let compress =
            req.flags & FLAG_COMPRESSED != 0 && response.payload.len() >= self.inner.config.compress_threshold;
        let (payload, flags) = if compress {
            (Bytes::from(frame::compress(&response.payload)), FLAG_COMPRESSED)
        } else {
            (response.payload, 0)
        };
        let len = frame::HEADER_LEN + response.metadata.encoded_len() + payload.len();
        if len > max {
            let status =
                Status::resource_exhausted(format!("response of {len} bytes exceeds the frame limit of {max} bytes"));
            return self.reply_error(req, 0, &status);
        }
        let head =
            Head { kind: Kind::Response, codec: response.codec.id(), flags, status: Code::Ok.as_u16(), id: req.id };
        let meta = &response.metadata;
        let _ = self.queue.push_frame_deferred(
            |b| {
                if let Err(e) = head.encode_prefix(b, meta, payload.len()) {
                    tracing::error!(error = %e, "cannot encode frame");
                }
            },
            payload.clone(),
        );
    }
}
