//! Connection I/O shared by server and client: a write queue that coalesces
//! frames into few syscalls.
//!
//! Producers (handler tasks on the server, callers on the client) append
//! encoded frames to one buffer under a short, never-awaited lock. A single
//! writer task swaps the buffer out and writes it whole. Under load many
//! frames pile up while a write is in flight, so the next write carries all
//! of them: one syscall per batch rather than per frame. When idle, a frame
//! goes out as soon as the writer wakes.
//!
//! The writer wakes only when the buffer goes from empty to non-empty, so a
//! busy connection does not pay a wake-up per frame.
//!
//! Backpressure: the queue does not refuse bytes, but it reports its length
//! and signals [`WriteQueue::progressed`] after every write, so producers can
//! wait for it to drain ([`WriteQueue::wait_below`]) and a server can stop
//! reading from a peer that does not read its answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Buffers above this capacity are dropped after a write rather than kept
/// for reuse, so one huge frame does not pin its memory forever.
const KEEP_CAPACITY: usize = 1 << 20;
const INITIAL_CAPACITY: usize = 16 << 10;

/// The queue has been closed: the connection is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

#[derive(Debug)]
struct State {
    buf: BytesMut,
    closed: bool,
}

/// A per-connection outgoing byte queue. See the module docs.
#[derive(Debug)]
pub(crate) struct WriteQueue {
    state: Mutex<State>,
    /// `state.buf.len()`, readable without the lock.
    queued: AtomicUsize,
    wake: Notify,
    progress: Notify,
}

impl WriteQueue {
    pub(crate) fn new() -> WriteQueue {
        WriteQueue {
            state: Mutex::new(State { buf: BytesMut::with_capacity(INITIAL_CAPACITY), closed: false }),
            queued: AtomicUsize::new(0),
            wake: Notify::new(),
            progress: Notify::new(),
        }
    }

    /// Bytes queued and not yet handed to the socket.
    pub(crate) fn len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Wakes every waiter: the writer flushed a batch, or (server) a call
    /// finished. Waiters must `enable()` their `Notified` before checking the
    /// condition they wait for, so a wake between check and wait is not lost.
    pub(crate) fn progressed(&self) -> tokio::sync::futures::Notified<'_> {
        self.progress.notified()
    }

    pub(crate) fn notify_progress(&self) {
        self.progress.notify_waiters();
    }

    /// Wait until at most `limit` bytes are queued (or the queue closed).
    pub(crate) async fn wait_below(&self, limit: usize) {
        loop {
            let progressed = self.progressed();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            if self.len() <= limit || self.is_closed() {
                return;
            }
            progressed.await;
        }
    }

    /// Append bytes with `write`, which runs under the queue's lock and must
    /// be quick (it copies an already encoded frame in). Returns what `write`
    /// returned.
    pub(crate) fn push<R>(&self, write: impl FnOnce(&mut BytesMut) -> R) -> Result<R, Closed> {
        let (result, was_empty) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.closed {
                return Err(Closed);
            }
            let was_empty = state.buf.is_empty();
            let result = write(&mut state.buf);
            self.queued.store(state.buf.len(), Ordering::Relaxed);
            (result, was_empty)
        };
        if was_empty {
            self.wake.notify_one();
        }
        Ok(result)
    }

    /// Stop accepting frames. The writer flushes what is queued and exits.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.wake.notify_one();
        self.progress.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed
    }

    /// The writer loop: runs until the queue is closed and drained, or the
    /// socket fails. Returns the write error, if any.
    pub(crate) async fn run_writer<W: AsyncWrite + Unpin>(&self, mut io: W) -> std::io::Result<()> {
        let mut spare = BytesMut::with_capacity(INITIAL_CAPACITY);
        loop {
            let closed = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::swap(&mut state.buf, &mut spare);
                self.queued.store(0, Ordering::Relaxed);
                state.closed
            };
            if spare.is_empty() {
                if closed {
                    let _ = io.shutdown().await;
                    return Ok(());
                }
                self.wake.notified().await;
                continue;
            }
            let result = io.write_all(&spare).await;
            self.progress.notify_waiters();
            if spare.capacity() > KEEP_CAPACITY {
                spare = BytesMut::with_capacity(INITIAL_CAPACITY);
            } else {
                spare.clear();
            }
            if let Err(e) = result {
                self.close();
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn frames_pushed_while_a_write_is_pending_go_out_together() {
        let queue = Arc::new(WriteQueue::new());
        let (client, mut server) = tokio::io::duplex(1 << 20);
        for i in 0..100u8 {
            queue.push(|b| b.extend_from_slice(&[i; 10])).unwrap();
        }
        queue.close();
        assert_eq!(queue.push(|_| ()), Err(Closed));
        queue.run_writer(client).await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 1000);
        assert!(got.chunks(10).enumerate().all(|(i, c)| c.iter().all(|b| *b == i as u8)));
    }
}
