//! One client connection: many calls multiplexed over one TCP stream.
//!
//! A call takes the next request id, parks a oneshot sender in the pending
//! map, and pushes its frame onto the write queue. Whoever reads the socket
//! (usually a waiting caller: see [`super::read`]) hands each response to the
//! sender with its id. A call dropped before its answer
//! arrives (timeout, or the caller lost interest) removes itself and sends a
//! cancel frame, so the server stops working on it. When the connection ends,
//! every pending call fails with [`Error::ConnectionLost`], which is
//! retryable for idempotent calls.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::read::Reader;
use crate::call::{Request, Response};
use crate::codec::Codec;
use crate::error::Error;
use crate::frame::{self, Frame, Head, Kind, Metadata, FLAG_COMPRESSED, FLAG_FORWARDED, FLAG_REFUSED};
use crate::io::WriteQueue;
use crate::status::{Code, Status};

pub(super) type Reply = Result<Frame, Error>;

/// Callers wait while more than this many bytes are queued for the server.
const MAX_QUEUED_BYTES: usize = 8 << 20;

/// The owning handle: when the last clone of the `Arc<Connection>` goes
/// (the client dropped it, or replaced it after a failure), the connection is
/// closed and its tasks end.
pub(crate) struct Connection {
    shared: Arc<Shared>,
}

impl std::ops::Deref for Connection {
    type Target = Arc<Shared>;
    fn deref(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.queue.close();
        // Nobody calls any more: let the background reader watch the
        // socket, see the server close it, and end.
        self.shared.reader.quiet_now();
    }
}

/// The state the reader and writer tasks share with callers.
pub(crate) struct Shared {
    pub(super) addr: Arc<str>,
    pub(super) sock: Arc<TcpStream>,
    queue: WriteQueue,
    pub(super) reader: Reader,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    going_away: AtomicBool,
    /// The last request id the server accepted, from its go-away frame
    /// (`u64::MAX` until one arrives). Calls above it never ran.
    last_accepted: AtomicU64,
    /// Set when the server refused the whole connection with a status.
    refusal: Mutex<Option<Status>>,
    max_frame: usize,
    compress_threshold: Option<usize>,
}

struct Pending {
    calls: HashMap<u64, oneshot::Sender<Reply>>,
    /// Why the connection ended; set once, after which no call is admitted.
    closed: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connection {
    pub(crate) async fn open(
        addr: Arc<str>,
        connect_timeout: Duration,
        max_frame: usize,
        compress_threshold: Option<usize>,
    ) -> Result<Arc<Connection>, Error> {
        let connect_err = |source: io::Error| Error::Connect { addr: addr.to_string(), source };
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(&*addr))
            .await
            .map_err(|_| connect_err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))?
            .map_err(connect_err)?;
        let _ = stream.set_nodelay(true);
        let sock = Arc::new(stream);
        let conn = Arc::new(Shared {
            addr,
            queue: WriteQueue::new(Arc::clone(&sock)),
            sock,
            reader: Reader::new(max_frame),
            pending: Mutex::new(Pending { calls: HashMap::new(), closed: None }),
            next_id: AtomicU64::new(1),
            going_away: AtomicBool::new(false),
            last_accepted: AtomicU64::new(u64::MAX),
            refusal: Mutex::new(None),
            max_frame,
            compress_threshold,
        });
        let writer = Arc::clone(&conn);
        tokio::spawn(async move {
            if let Err(e) = writer.queue.run_writer().await {
                writer.fail_all(format!("write error: {e}"));
            }
        });
        let reader = Arc::clone(&conn);
        tokio::spawn(async move { reader.background_reader().await });
        Ok(Arc::new(Connection { shared: conn }))
    }
}

impl Shared {
    /// Whether new calls may use this connection.
    pub(crate) fn is_usable(&self) -> bool {
        !self.going_away.load(Ordering::Relaxed) && !self.queue.is_closed()
    }

    /// Send `req` and wait for its answer. `deadline` is sent as the time
    /// remaining at the moment the frame is queued.
    pub(crate) async fn call(self: &Arc<Self>, req: Request, deadline: Option<Instant>) -> Result<Response, Error> {
        // Backpressure: a server that does not read makes callers wait here
        // (bounded by their deadline) instead of growing the queue forever.
        if self.queue.len() > MAX_QUEUED_BYTES {
            self.queue.wait_below(MAX_QUEUED_BYTES).await;
        }
        let rx = self.send(Kind::Request, req, deadline)?;
        let (id, mut rx) = rx;
        let mut guard = CancelOnDrop { conn: self, id, armed: true };
        let reply = self.wait_reply(&mut rx).await;
        guard.armed = false;
        let frame = reply.unwrap_or_else(|_| {
            Err(Error::ConnectionLost { addr: self.addr.to_string(), reason: "connection dropped".into() })
        })?;
        self.response_from(frame)
    }

    /// Round-trip a ping frame.
    pub(crate) async fn ping(self: &Arc<Self>) -> Result<Duration, Error> {
        let start = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        self.admit(id, tx)?;
        self.push_frame(id, |b| Head::new(Kind::Ping, id).encode(b, &Metadata::default(), &[]), Bytes::new())?;
        let mut guard = CancelOnDrop { conn: self, id, armed: true };
        let reply = self.wait_reply(&mut rx).await;
        guard.armed = false;
        reply.unwrap_or_else(|_| Err(self.lost("connection dropped")))?;
        Ok(start.elapsed())
    }

    fn send(
        &self,
        kind: Kind,
        mut req: Request,
        deadline: Option<Instant>,
    ) -> Result<(u64, oneshot::Receiver<Reply>), Error> {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::DeadlineExceeded(Duration::ZERO));
            }
            req.metadata.set_deadline(Some(left));
        }
        let (payload, flags) = match self.compress_threshold {
            Some(min) if req.payload.len() >= min => (Bytes::from(frame::compress(&req.payload)), FLAG_COMPRESSED),
            _ => (req.payload, 0),
        };
        let len = frame::HEADER_LEN + req.metadata.encoded_len() + payload.len();
        if len > self.max_frame {
            return Err(Error::TooLarge { len, max: self.max_frame });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.admit(id, tx)?;
        let head = Head { kind, codec: req.codec.id(), flags, status: 0, id };
        let payload_len = payload.len();
        self.push_frame(id, |b| head.encode_prefix(b, &req.metadata, payload_len), payload)?;
        Ok((id, rx))
    }

    /// Park the reply sender for `id`, unless the connection has ended.
    fn admit(&self, id: u64, tx: oneshot::Sender<Reply>) -> Result<(), Error> {
        let mut pending = lock(&self.pending);
        if let Some(reason) = &pending.closed {
            return Err(self.unsent(reason));
        }
        pending.calls.insert(id, tx);
        Ok(())
    }

    /// Queue a frame: `encode` writes its header and metadata, `payload`
    /// follows (queued by reference if large).
    fn push_frame(
        &self,
        id: u64,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), frame::FrameError>,
        payload: Bytes,
    ) -> Result<(), Error> {
        let pushed = self.queue.push_frame(encode, payload);
        let result = match pushed {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => Err(Error::protocol(&self.addr, e)),
            Err(_) => Err(self.unsent("connection closed")),
        };
        lock(&self.pending).calls.remove(&id);
        result
    }

    /// An error for a request that never left this process: always retryable.
    fn unsent(&self, reason: &str) -> Error {
        Error::Connect {
            addr: self.addr.to_string(),
            source: io::Error::new(io::ErrorKind::NotConnected, format!("connection closed ({reason})")),
        }
    }

    fn lost(&self, reason: &str) -> Error {
        Error::ConnectionLost { addr: self.addr.to_string(), reason: reason.to_owned() }
    }

    fn response_from(&self, mut frame: Frame) -> Result<Response, Error> {
        let head = frame.head;
        if head.status != Code::Ok.as_u16() {
            let mut status = Status::new(Code::from_u16(head.status), frame.meta.message().unwrap_or(""));
            if let Some(details) = frame.meta.details() {
                status = status.with_details(details.clone());
            }
            if head.flags & FLAG_FORWARDED != 0 {
                status = status.forwarded();
            }
            return Err(if head.flags & FLAG_REFUSED != 0 {
                Error::Refused { addr: self.addr.to_string(), status }
            } else {
                Error::Status(status)
            });
        }
        let codec = Codec::from_id(head.codec).ok_or_else(|| Error::Protocol {
            addr: self.addr.to_string(),
            reason: format!("response in unknown codec id {}", head.codec),
        })?;
        let payload = frame.take_payload(self.max_frame).map_err(|e| Error::protocol(&self.addr, e))?;
        Ok(Response { codec, payload, metadata: frame.meta })
    }

    pub(super) fn on_oversized(&self, id: u64, len: u64) {
        let err = Error::Status(Status::resource_exhausted(format!(
            "response frame of {len} bytes exceeds this client's limit of {} bytes",
            self.max_frame
        )));
        self.complete(id, Err(err));
    }

    /// A response over a metadata limit: its call fails, the connection
    /// carries on.
    pub(super) fn on_refused(&self, head: frame::Head, why: &frame::FrameError) {
        if head.kind == Kind::Response {
            let status = Status::resource_exhausted(format!("response refused by this client: {why}"));
            self.complete(head.id, Err(Error::Status(status)));
        }
    }

    pub(super) fn has_pending(&self) -> bool {
        !lock(&self.pending).calls.is_empty()
    }

    pub(super) fn on_frame(&self, frame: Frame) {
        match frame.head.kind {
            Kind::Response | Kind::Pong => self.complete(frame.head.id, Ok(frame)),
            Kind::GoAway => {
                let head = frame.head;
                if head.status != Code::Ok.as_u16() {
                    // The server refused the whole connection (e.g. its
                    // connection limit): nothing sent on it ran.
                    let status = Status::new(Code::from_u16(head.status), frame.meta.message().unwrap_or(""));
                    tracing::warn!(addr = %self.addr, %status, "server refused the connection");
                    *lock(&self.refusal) = Some(status);
                } else {
                    tracing::debug!(addr = %self.addr, last = head.id, "server is going away; new calls will reconnect");
                }
                self.last_accepted.store(head.id, Ordering::Relaxed);
                self.going_away.store(true, Ordering::Relaxed);
            }
            Kind::Ping => {
                // Servers ping after a go-away to learn when we have seen it.
                let id = frame.head.id;
                let _ = self.queue.push(|b| Head::new(Kind::Pong, id).encode(b, &Metadata::default(), &[]));
            }
            other => tracing::debug!(addr = %self.addr, kind = ?other, "ignoring unexpected frame"),
        }
    }

    fn complete(&self, id: u64, reply: Reply) {
        let tx = lock(&self.pending).calls.remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(reply);
        }
    }

    /// End the connection: fail every pending call, admit no more.
    pub(super) fn fail_all(&self, reason: String) {
        self.queue.close();
        let calls = {
            let mut pending = lock(&self.pending);
            if pending.closed.is_none() {
                pending.closed = Some(reason.clone());
            }
            std::mem::take(&mut pending.calls)
        };
        if !calls.is_empty() {
            tracing::debug!(addr = %self.addr, %reason, failed = calls.len(), "connection ended with calls in flight");
        }
        let last_accepted = self.last_accepted.load(Ordering::Relaxed);
        let refusal = lock(&self.refusal).clone();
        for (id, tx) in calls {
            // Past the go-away's last id the server never ran the call.
            let err = match &refusal {
                Some(status) => Error::Refused { addr: self.addr.to_string(), status: status.clone() },
                None if id > last_accepted => self.unsent(&reason),
                None => self.lost(&reason),
            };
            let _ = tx.send(Err(err));
        }
    }
}

/// Removes an unanswered call and tells the server to cancel it.
struct CancelOnDrop<'a> {
    conn: &'a Arc<Shared>,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let was_pending = lock(&self.conn.pending).calls.remove(&self.id).is_some();
        if was_pending {
            let id = self.id;
            let _ = self.conn.queue.push(|b| Head::new(Kind::Cancel, id).encode(b, &Metadata::default(), &[]));
        }
    }
}
