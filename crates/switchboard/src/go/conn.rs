//! What every Go net/rpc connection of the server is held to, whichever of
//! gob, JSON-RPC or HTTP it speaks: a read buffer that grows no further
//! than the message in progress needs and the server's memory budget
//! allows ([`Input`]), time limits on its reads (the [`ConnClock`] inside
//! it), and a count of the answers waiting to be written, bounded by
//! `max_queued_bytes` and the memory budget, with writes that give up on a
//! peer that reads nothing ([`Outbox`], [`write_all`]).
//!
//! The pieces are the server's own (`server::limits`); this is how the Go
//! loops use them, as the native protocol's loop (`server/conn.rs`) does:
//! the first [`FREE_PER_CONNECTION`] bytes of input and of output are not
//! charged, a started message is charged whole as soon as its length is
//! known, and what the budget cannot cover is not read until it can (the
//! frame timeout ends the wait).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::server::End;
use crate::server::protocol::Dispatcher;
use crate::server::protocol::{Charge, ConnClock};

/// Read at most this much at a time, when the message's length is unknown.
pub(super) const READ_CHUNK: usize = 64 << 10;
/// Of a connection's read buffer and of its queued answers, this much each
/// is not charged to the memory budget (as for native connections).
pub(super) const FREE_PER_CONNECTION: usize = READ_CHUNK;
/// A message of known length grows the buffer at most this far ahead of
/// what has arrived (or by what has arrived, if more): a peer announcing a
/// large message gets memory as it sends, not on its word.
const AHEAD: usize = 1 << 20;
/// A buffer grown past this is replaced by a small one once what it holds
/// is small, so one large message does not pin its memory.
const SHRINK_ABOVE: usize = 1 << 20;

/// The read side of one connection.
pub(super) struct Input<R> {
    pub(super) rd: R,
    /// Bytes read and not yet taken: a message in progress, or several.
    pub(super) buf: BytesMut,
    /// The allocation behind `buf`, as far as this side knows.
    alloc: usize,
    /// What `buf` holds of the server's memory budget.
    charge: Charge,
    pub(super) clock: ConnClock,
}

impl<R: AsyncRead + Unpin> Input<R> {
    pub(super) fn new(inner: &Dispatcher, rd: R, buf: BytesMut, clock: ConnClock) -> Input<R> {
        let alloc = buf.capacity();
        Input { rd, buf, alloc, charge: inner.budget().charge(), clock }
    }

    /// Reads more into the buffer: `Ok(false)` at the end of the stream.
    /// `need`, if known, is the length of the message the buffer starts
    /// with, all of it within the message size limit: the budget must cover
    /// it all (as for native frames), and the buffer grows toward it as its
    /// bytes arrive. Otherwise the buffer grows a read at a time, and the
    /// budget must cover that.
    ///
    /// Without budget, nothing is read until another connection releases
    /// some; the clock's limits bound the wait (a message in progress must
    /// finish within the frame timeout). Stops early when the server
    /// drains, a time limit passes, or `outbox`'s writer has stopped.
    pub(super) async fn fill(&mut self, inner: &Dispatcher, need: Option<usize>, outbox: &Outbox) -> Result<bool, End> {
        let len = self.buf.len();
        // What must be covered before reading: the whole message when its
        // length is known, else the buffer grown by one read.
        let must = need.unwrap_or(0).max(len.saturating_add(READ_CHUNK));
        self.clock.decoded(false, len > 0);
        // The buffer's allocation is held too if the budget allows (then a
        // steady connection holds the same amount read after read, and
        // touches the shared budget not at all).
        let charged = |n: usize| n.saturating_sub(FREE_PER_CONNECTION);
        while !(self.charge.try_hold(charged(must.max(self.alloc))) || self.charge.try_hold(charged(must))) {
            let budget = &inner.budget();
            if charged(must) > budget.limit() {
                return Err(End::Broken(format!(
                    "a message of {must} bytes needs more than the server's whole memory budget of {} bytes",
                    budget.limit()
                )));
            }
            tracing::debug!(
                used = budget.used(),
                limit = budget.limit(),
                must,
                "memory budget exhausted; reading waits"
            );
            tokio::select! {
                _ = self.charge.released() => {}
                _ = outbox.stop.cancelled() => return Err(outbox.why_stopped()),
                expired = self.clock.expired(|| outbox.queued() > 0) => return Err(End::Expired(expired)),
            }
        }
        let spare = match need {
            Some(need) if need > len => (need - len).min(AHEAD.max(len)),
            _ => READ_CHUNK,
        };
        if self.buf.capacity() - len < spare {
            self.buf.reserve(spare);
            if self.buf.capacity() > self.alloc {
                self.alloc = self.buf.capacity();
                let _ = self.charge.try_hold(charged(must.max(self.alloc)));
            }
        }
        tokio::select! {
            read = self.rd.read_buf(&mut self.buf) => match read {
                Ok(0) => Ok(false),
                Ok(_) => {
                    self.clock.read();
                    Ok(true)
                }
                Err(e) => Err(End::Broken(format!("read failed: {e}"))),
            },
            _ = outbox.stop.cancelled() => Err(outbox.why_stopped()),
            expired = self.clock.expired(|| outbox.queued() > 0) => Err(End::Expired(expired)),
        }
    }

    /// A whole request was taken from the front of the buffer: tell the
    /// clock, and trade a large buffer for a small one once little is left.
    pub(super) fn took_request(&mut self) {
        if self.alloc > SHRINK_ABOVE && self.buf.len() <= READ_CHUNK {
            let mut small = BytesMut::with_capacity(READ_CHUNK);
            small.extend_from_slice(&self.buf);
            self.buf = small;
            self.alloc = self.buf.capacity();
            let _ = self.charge.try_hold(0);
        }
        self.clock.decoded(true, !self.buf.is_empty());
    }
}

/// The answers of one connection that wait to be written: bytes queued
/// (counted from when a call finishes until its answer has been written),
/// a wake-up when some are written, and the connection's stop signal.
pub(super) struct Outbox {
    /// Bytes of answers waiting.
    queued: AtomicUsize,
    /// Of those, the bytes of answers under [`CHARGED_ANSWER`]: the
    /// connection's output charge covers them, beyond its free floor.
    uncharged: AtomicUsize,
    /// What the larger answers hold of the memory budget: charged as soon
    /// as each exists, so that other connections see it at once.
    large: Mutex<Charge>,
    written: Notify,
    /// Cancelled when the server drains or the writer stops. A child of
    /// the server's draining token, one per connection: a read waiting on
    /// it touches nothing other connections touch.
    stop: CancellationToken,
    writer_stopped: AtomicBool,
}

/// An answer this large is charged to the memory budget on its own, as
/// soon as it exists.
const CHARGED_ANSWER: usize = 64 << 10;

/// What the writer has taken from the queue and not yet written.
#[derive(Default)]
pub(super) struct Batch {
    bytes: usize,
    large: usize,
}

impl Batch {
    /// An answer of `size` (as [`Outbox::queue`]d) is in the batch.
    pub(super) fn add(&mut self, size: usize) {
        self.bytes += size;
        if size >= CHARGED_ANSWER {
            self.large += size;
        }
    }
}

impl Outbox {
    pub(super) fn new(inner: &Dispatcher) -> Outbox {
        Outbox {
            queued: AtomicUsize::new(0),
            uncharged: AtomicUsize::new(0),
            large: Mutex::new(inner.budget().charge()),
            written: Notify::new(),
            stop: inner.draining().child_token(),
            writer_stopped: AtomicBool::new(false),
        }
    }

    /// An answer of about `size` bytes is on its way to the writer: it
    /// counts until a [`Batch`] holding it is [`wrote`](Self::wrote).
    pub(super) fn queue(&self, size: usize) {
        self.queued.fetch_add(size, Ordering::AcqRel);
        if size >= CHARGED_ANSWER {
            lock(&self.large).add_anyway(size);
        } else {
            self.uncharged.fetch_add(size, Ordering::AcqRel);
        }
    }

    /// The writer wrote the answers of `batch` (and starts a new one).
    pub(super) fn wrote(&self, batch: &mut Batch) {
        let Batch { bytes, large } = std::mem::take(batch);
        if bytes == 0 {
            return;
        }
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        self.uncharged.fetch_sub(bytes - large, Ordering::AcqRel);
        if large > 0 {
            let mut charge = lock(&self.large);
            let held = charge.held().saturating_sub(large);
            charge.try_hold(held); // shrinking always works
        }
        self.written.notify_waiters();
    }

    /// Bytes of answers waiting.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The writer has stopped: nothing more will be written.
    pub(super) fn writer_stopped(&self) {
        self.writer_stopped.store(true, Ordering::Release);
        self.stop.cancel();
    }

    /// Why the stop signal fired.
    fn why_stopped(&self) -> End {
        if self.writer_stopped.load(Ordering::Acquire) {
            End::WriterStopped
        } else {
            End::Draining
        }
    }

    /// Waits until there is room for more answers, keeping `output` (this
    /// connection's charge for its small queued answers) in step; meanwhile
    /// nothing is read, so TCP holds the client back. There is no room
    /// while more than `max_queued_bytes` wait, nor, once more than
    /// [`FREE_PER_CONNECTION`] wait, while the memory budget is spent.
    /// The writer's own time limit ends a wait on a peer that reads nothing.
    pub(super) async fn wait_for_room<R: AsyncRead + Unpin>(
        &self,
        inner: &Dispatcher,
        output: &mut Charge,
        input: &mut Input<R>,
    ) -> Result<(), End> {
        let max = inner.config().max_queued_bytes;
        let budget = &inner.budget();
        let has_room = |output: &mut Charge| {
            let queued = self.queued();
            let uncharged = self.uncharged.load(Ordering::Acquire);
            queued <= max
                && output.try_hold(uncharged.saturating_sub(FREE_PER_CONNECTION))
                && (queued <= FREE_PER_CONNECTION || budget.used() <= budget.limit())
        };
        if has_room(output) {
            return Ok(());
        }
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            if has_room(output) {
                return Ok(());
            }
            tokio::select! {
                _ = written => {}
                _ = output.released() => {}
                _ = self.stop.cancelled() => return Err(self.why_stopped()),
                expired = input.clock.expired(|| true) => return Err(End::Expired(expired)),
            }
        }
    }
}

/// Writes all of `bytes`, giving up when a write makes no progress for
/// `limit` (a peer that reads none of its answers).
pub(super) async fn write_all<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut bytes: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match tokio::time::timeout(limit, wr.write(bytes)).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => bytes = bytes.get(n..).unwrap_or_default(),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no write made progress for the frame timeout of {limit:?}: the peer reads none of its answers"
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// Flushes and shuts down the write side, within `limit`.
pub(super) async fn shutdown<W: AsyncWrite + Unpin>(wr: &mut W, limit: Duration) {
    let _ = tokio::time::timeout(limit, wr.shutdown()).await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
