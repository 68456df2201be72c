//! Connection I/O shared by server and client: a write queue that coalesces
//! frames into few syscalls and, when the socket is idle, writes them from
//! the producer's own task.
//!
//! Producers (the server's connection task and handler tasks, the client's
//! callers) append encoded frames to one buffer under a short, never-awaited
//! lock. Then they flush: whoever finds no write in progress becomes the
//! writer and hands the queued bytes to the socket with a non-blocking
//! `try_write`, right there; producers that arrive while it writes just
//! append, and the writer takes their frames along on its next pass (flat
//! combining). Under load one syscall carries many frames; when idle a frame
//! costs no task switch at all, which matters most for latency at low
//! concurrency. Only when the socket is full (`WouldBlock`) do the remaining
//! bytes go to a writer task, which waits for the socket to drain.
//!
//! The server's connection task appends the answers of a whole batch of
//! decoded requests with [`WriteQueue::push_deferred`] and flushes once, so a
//! pipelined burst goes out in one write.
//!
//! Large payloads are not copied into the queue: small frames and frame
//! headers are appended to a contiguous tail, while a payload of at least
//! [`SEGMENT_MIN`] bytes joins the queue as its own [`Bytes`] segment (a
//! reference, not a copy), and the writer hands the segments to the socket
//! in one vectored write.
//!
//! Backpressure: the queue does not refuse bytes, but it reports its length
//! and signals [`WriteQueue::progressed`] after every write, so producers can
//! wait for it to drain ([`WriteQueue::wait_below`]) and a server can stop
//! reading from a peer that does not read its answers.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A writer stops combining after this many passes and leaves the rest to
/// the writer task, so one producer is not kept writing for others forever.
const MAX_PASSES: usize = 4;
const INITIAL_CAPACITY: usize = 16 << 10;
/// Payloads at least this long are queued by reference; shorter ones are
/// copied into the tail (a copy is cheaper than another I/O slice).
pub(crate) const SEGMENT_MIN: usize = 4 << 10;
/// Most slices handed to one vectored write.
const MAX_SLICES: usize = 64;
/// A buffer that grew past this is dropped once empty rather than kept, so
/// one huge frame does not pin its memory forever.
const KEEP_CAPACITY: usize = 1 << 20;

/// The queue has been closed: the connection is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

#[derive(Debug)]
struct State {
    /// Queued bytes in order: the segments, then the tail.
    segments: VecDeque<Bytes>,
    tail: BytesMut,
    /// Total bytes in `segments` and `tail`.
    len: usize,
    closed: bool,
    /// Someone (a producer or the writer task) is writing to the socket.
    writing: bool,
    /// What a producer could not write (the socket was full), handed to the
    /// writer task. While it is here `writing` stays set, so producers only
    /// append until the writer task has drained the socket.
    handoff: Option<Batch>,
}

impl State {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Take everything queued, in order.
    fn take(&mut self) -> Batch {
        let mut segments = std::mem::take(&mut self.segments);
        if !self.tail.is_empty() {
            segments.push_back(self.tail.split().freeze());
        }
        self.len = 0;
        Batch { segments }
    }
}

/// Bytes taken from the queue for one write.
#[derive(Debug)]
struct Batch {
    segments: VecDeque<Bytes>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    fn len(&self) -> usize {
        self.segments.iter().map(Bytes::len).sum()
    }

    /// Write as much as the socket takes now; `Ok(false)` if it would block.
    fn write_now(&mut self, sock: &TcpStream) -> io::Result<bool> {
        while !self.is_empty() {
            let slices: Vec<IoSlice<'_>> = self.segments.iter().take(MAX_SLICES).map(|b| IoSlice::new(b)).collect();
            match sock.try_write_vectored(&slices) {
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.segments.front_mut() else { return };
            if n >= front.len() {
                n -= front.len();
                self.segments.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

/// A per-connection outgoing byte queue. See the module docs.
#[derive(Debug)]
pub(crate) struct WriteQueue {
    sock: Arc<TcpStream>,
    state: Mutex<State>,
    /// `state.buf.len()`, readable without the lock.
    queued: AtomicUsize,
    /// Bytes handed to the writer task and not yet written (a full socket).
    handed: AtomicUsize,
    /// How long the writer task waits for a full socket to take a byte
    /// before it gives up on the connection (`None`: for ever).
    stall_limit: Option<std::time::Duration>,
    /// Wakes the writer task: bytes were handed to it, or the queue closed.
    wake: Notify,
    progress: Notify,
}

impl WriteQueue {
    pub(crate) fn new(sock: Arc<TcpStream>) -> WriteQueue {
        WriteQueue {
            sock,
            state: Mutex::new(State {
                segments: VecDeque::new(),
                tail: BytesMut::with_capacity(INITIAL_CAPACITY),
                len: 0,
                closed: false,
                writing: false,
                handoff: None,
            }),
            queued: AtomicUsize::new(0),
            handed: AtomicUsize::new(0),
            stall_limit: None,
            wake: Notify::new(),
            progress: Notify::new(),
        }
    }

    /// The same queue, whose writer gives up (failing the queue) when the
    /// peer has taken no byte for `limit`.
    pub(crate) fn with_stall_limit(mut self, limit: std::time::Duration) -> WriteQueue {
        self.stall_limit = Some(limit);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append bytes with `write` (which runs under the lock and must be
    /// quick: it copies an encoded frame in), then flush. Returns what
    /// `write` returned.
    pub(crate) fn push<R>(&self, write: impl FnOnce(&mut BytesMut) -> R) -> Result<R, Closed> {
        let result = self.push_deferred(write)?;
        self.flush();
        Ok(result)
    }

    /// Append without flushing: the caller promises to call
    /// [`WriteQueue::flush`] soon (after the rest of its batch).
    pub(crate) fn push_deferred<R>(&self, write: impl FnOnce(&mut BytesMut) -> R) -> Result<R, Closed> {
        self.push_frame_deferred(write, Bytes::new())
    }

    /// Append a frame whose header (and metadata) `write` encodes and whose
    /// payload follows; a large payload is queued by reference, not copied.
    /// Then flush.
    pub(crate) fn push_frame<R>(&self, write: impl FnOnce(&mut BytesMut) -> R, payload: Bytes) -> Result<R, Closed> {
        let result = self.push_frame_deferred(write, payload)?;
        self.flush();
        Ok(result)
    }

    /// [`WriteQueue::push_frame`] without the flush.
    pub(crate) fn push_frame_deferred<R>(
        &self,
        write: impl FnOnce(&mut BytesMut) -> R,
        payload: Bytes,
    ) -> Result<R, Closed> {
        let mut state = self.lock();
        if state.closed {
            return Err(Closed);
        }
        let before = state.tail.len();
        let result = write(&mut state.tail);
        let mut added = state.tail.len() - before;
        if payload.len() >= SEGMENT_MIN {
            let head = state.tail.split().freeze();
            state.segments.push_back(head);
            added += payload.len();
            state.segments.push_back(payload);
        } else if !payload.is_empty() {
            state.tail.extend_from_slice(&payload);
            added += payload.len();
        }
        state.len += added;
        self.queued.store(state.len, Ordering::Relaxed);
        Ok(result)
    }

    /// Write what is queued now, from this task, unless a write is already
    /// in progress (its writer takes these bytes along). Never blocks: what
    /// the socket does not take at once goes to the writer task.
    pub(crate) fn flush(&self) {
        for _ in 0..MAX_PASSES {
            let mut batch = {
                let mut state = self.lock();
                if state.writing || state.is_empty() {
                    return;
                }
                state.writing = true;
                self.queued.store(0, Ordering::Relaxed);
                state.take()
            };
            match batch.write_now(&self.sock) {
                Ok(true) => {}
                Ok(false) => return self.hand_to_writer(batch),
                Err(e) => return self.fail(e),
            }
            self.finish_pass();
        }
        // Still more after several passes: let the writer task carry on.
        self.wake.notify_one();
    }

    /// Give unwritten bytes to the writer task, which waits for the socket.
    /// `writing` stays set: until it has drained, producers only append.
    fn hand_to_writer(&self, rest: Batch) {
        self.handed.store(rest.len(), Ordering::Relaxed);
        self.lock().handoff = Some(rest);
        self.wake.notify_one();
    }

    fn finish_pass(&self) {
        let closed = {
            let mut state = self.lock();
            state.writing = false;
            if state.tail.is_empty() && state.tail.capacity() > KEEP_CAPACITY {
                state.tail = BytesMut::with_capacity(INITIAL_CAPACITY);
            }
            state.closed
        };
        if closed {
            // The writer task may be waiting for us to finish to shut down.
            self.wake.notify_one();
        }
        self.progress.notify_waiters();
    }

    fn fail(&self, err: io::Error) {
        tracing::debug!(error = %err, "write failed; closing connection");
        self.handed.store(0, Ordering::Relaxed);
        {
            let mut state = self.lock();
            state.writing = false;
            state.closed = true;
            state.handoff = None;
            state.segments.clear();
            state.tail = BytesMut::new();
            state.len = 0;
            self.queued.store(0, Ordering::Relaxed);
        }
        self.wake.notify_one();
        self.progress.notify_waiters();
    }

    /// Bytes queued and not yet written to the socket.
    pub(crate) fn len(&self) -> usize {
        self.queued.load(Ordering::Relaxed) + self.handed.load(Ordering::Relaxed)
    }

    /// Wakes every waiter: a write finished, or (server) a call finished.
    /// Waiters must `enable()` their `Notified` before checking the
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

    /// Stop accepting frames. The writer task writes what is queued, shuts
    /// the socket's write side, and exits.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
        self.progress.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The writer task: writes what producers could not (a full socket), and
    /// after [`WriteQueue::close`] drains the queue and shuts the write side.
    pub(crate) async fn run_writer(&self) -> io::Result<()> {
        loop {
            let batch = {
                let mut state = self.lock();
                if let Some(handed) = state.handoff.take() {
                    Some(handed)
                } else if state.writing || state.is_empty() {
                    // Nothing for us: either idle, or another writer is
                    // active and will hand back whatever it cannot write.
                    if state.closed && !state.writing {
                        drop(state);
                        let _ = socket2::SockRef::from(&*self.sock).shutdown(std::net::Shutdown::Write);
                        return Ok(());
                    }
                    None
                } else {
                    state.writing = true;
                    let batch = state.take();
                    self.handed.store(batch.len(), Ordering::Relaxed);
                    self.queued.store(0, Ordering::Relaxed);
                    Some(batch)
                }
            };
            let Some(mut batch) = batch else {
                self.wake.notified().await;
                continue;
            };
            loop {
                let writable = match self.stall_limit {
                    None => self.sock.writable().await,
                    Some(limit) => match tokio::time::timeout(limit, self.sock.writable()).await {
                        Ok(ready) => ready,
                        Err(_) => Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the peer took none of its answers for {limit:?}"),
                        )),
                    },
                };
                let written = match writable {
                    Ok(()) => batch.write_now(&self.sock),
                    Err(e) => Err(e),
                };
                match written {
                    Ok(true) => break,
                    Ok(false) => self.handed.store(batch.len(), Ordering::Relaxed),
                    Err(e) => {
                        self.handed.store(0, Ordering::Relaxed);
                        self.fail(io::Error::new(e.kind(), e.to_string()));
                        return Err(e);
                    }
                }
            }
            self.handed.store(0, Ordering::Relaxed);
            self.finish_pass();
        }
    }
}

/// Read what the socket has into `buf` (at least one byte, or 0 at end of
/// stream). Cancel-safe: nothing is lost if the future is dropped.
pub(crate) async fn read_some(sock: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        sock.readable().await?;
        match sock.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (Arc::new(client.unwrap()), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn frames_arrive_in_order_whether_written_inline_or_by_the_writer_task() {
        let (sock, mut peer) = pair().await;
        let queue = Arc::new(WriteQueue::new(sock));
        let writer = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.run_writer().await }
        });
        // 64 MiB in 1 KiB frames: far more than the socket buffer holds, so
        // part goes out inline and part through the writer task.
        let frames = 64 * 1024;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        for i in 0..frames {
            let byte = (i % 251) as u8;
            queue.push(|b| b.extend_from_slice(&[byte; 1024])).unwrap();
        }
        queue.close();
        assert_eq!(queue.push(|_| ()), Err(Closed));
        writer.await.unwrap().unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), frames * 1024);
        assert!(got.chunks(1024).enumerate().all(|(i, c)| c.iter().all(|b| *b == (i % 251) as u8)));
    }

    #[tokio::test]
    async fn deferred_pushes_go_out_in_one_flush() {
        let (sock, mut peer) = pair().await;
        let queue = WriteQueue::new(sock);
        for i in 0..100u8 {
            queue.push_deferred(|b| b.extend_from_slice(&[i; 10])).unwrap();
        }
        assert_eq!(queue.len(), 1000);
        queue.flush();
        assert_eq!(queue.len(), 0);
        let mut got = vec![0u8; 1000];
        peer.read_exact(&mut got).await.unwrap();
        assert!(got.chunks(10).enumerate().all(|(i, c)| c.iter().all(|b| *b == i as u8)));
    }
}
