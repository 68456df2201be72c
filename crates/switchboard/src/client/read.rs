//! The read side of a client connection: leader/follower.
//!
//! There is no dedicated reader in the common case. A caller waiting for its
//! answer takes the read side if nobody holds it (the *leader*), reads
//! frames, hands every answer to its caller, and stops when its own answer is
//! in. Callers that find the read side taken wait for their answer (the
//! *followers*). Whoever lets go of the read side while calls still wait
//! wakes one of them (or the background reader) to take over.
//!
//! Why: on an idle machine, and above all on a VM, waking a parked thread
//! costs tens of microseconds. With a reader task, every answer at low
//! concurrency woke the reader's thread and then the caller's; with a leader,
//! the thread that sent the request is the one the answer wakes, as in a
//! blocking client. Under load a leader reads many answers per wake-up, so
//! nothing is lost there.
//!
//! The background reader covers the rest: it takes over when a leader leaves
//! with calls still waiting, and it watches a connection that has gone quiet
//! (after [`LINGER`] without calls) so a go-away, a server's ping or a closed
//! socket is seen even when nobody is calling.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{oneshot, MutexGuard, Notify};

use super::conn::{Reply, Shared};
use crate::frame::{Decoded, FrameDecoder};
use crate::io;

/// How long a connection must go without calls before the background reader
/// watches it. Short enough to notice a go-away promptly; long enough that
/// steady traffic never wakes it.
const LINGER: Duration = Duration::from_millis(5);
const READ_CHUNK: usize = 64 << 10;

/// What the reader owns: the read buffer and its decoder.
pub(super) struct ReadSide {
    decoder: FrameDecoder,
    buf: BytesMut,
    /// The connection has ended; nothing more will be read.
    done: bool,
}

/// Coordination between leaders, followers and the background reader.
pub(super) struct Reader {
    side: tokio::sync::Mutex<ReadSide>,
    /// Someone let go of the read side while calls were still waiting.
    wanted: Notify,
    /// A leader left with no calls waiting: the background reader may start
    /// lingering towards an idle watch.
    quiet: Notify,
    /// The background reader is lingering (so leaders need not wake it).
    lingering: AtomicBool,
    /// Bumped by every call; the background reader watches only when it
    /// stayed the same for a whole [`LINGER`].
    activity: AtomicU64,
}

impl Reader {
    pub(super) fn new(max_frame: usize) -> Reader {
        Reader {
            side: tokio::sync::Mutex::new(ReadSide {
                decoder: FrameDecoder::new(max_frame),
                buf: BytesMut::with_capacity(READ_CHUNK),
                done: false,
            }),
            wanted: Notify::new(),
            quiet: Notify::new(),
            lingering: AtomicBool::new(false),
            activity: AtomicU64::new(0),
        }
    }
}

impl Reader {
    /// The connection will see no more calls: start towards an idle watch.
    pub(super) fn quiet_now(&self) {
        self.quiet.notify_one();
    }
}

/// Holds the read side; letting go hands it on if calls still wait (also
/// when the holder's future is dropped mid-read, e.g. by a timeout).
struct Holding<'a> {
    conn: &'a Shared,
    side: Option<MutexGuard<'a, ReadSide>>,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        drop(self.side.take());
        let reader = &self.conn.reader;
        if self.conn.has_pending() {
            reader.wanted.notify_one();
        } else if !reader.lingering.load(Ordering::Relaxed) {
            reader.quiet.notify_one();
        }
    }
}

impl Shared {
    /// Wait for the answer `rx` will carry, reading the socket ourselves when
    /// nobody else is. `Err` if the sender went away without answering.
    pub(super) async fn wait_reply(&self, rx: &mut oneshot::Receiver<Reply>) -> Result<Reply, ()> {
        self.reader.activity.fetch_add(1, Ordering::Relaxed);
        loop {
            match rx.try_recv() {
                Ok(reply) => return Ok(reply),
                Err(oneshot::error::TryRecvError::Closed) => return Err(()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if let Ok(side) = self.reader.side.try_lock() {
                let mut holding = Holding { conn: self, side: Some(side) };
                return self.lead(&mut holding, rx).await;
            }
            // Someone else reads: wait for our answer, or for them to leave.
            let wanted = self.reader.wanted.notified();
            tokio::pin!(wanted);
            wanted.as_mut().enable();
            tokio::select! {
                biased;
                reply = &mut *rx => return reply.map_err(drop),
                _ = wanted => {}
            }
        }
    }

    /// Read and dispatch until `rx` has its answer.
    async fn lead(&self, holding: &mut Holding<'_>, rx: &mut oneshot::Receiver<Reply>) -> Result<Reply, ()> {
        loop {
            let Some(side) = holding.side.as_deref_mut() else { return Err(()) };
            if side.done {
                // The connection ended: every waiting call was failed.
                return rx.await.map_err(drop);
            }
            tokio::select! {
                biased;
                reply = &mut *rx => return reply.map_err(drop),
                () = self.read_batch(side) => {}
            }
        }
    }

    /// Read once and dispatch every whole frame; on end of stream or a
    /// protocol error, end the connection.
    async fn read_batch(&self, side: &mut ReadSide) {
        side.decoder.reserve_for_read(&mut side.buf, READ_CHUNK);
        let ended = match io::read_some(&self.sock, &mut side.buf).await {
            Ok(0) => Some("closed by server".to_owned()),
            Ok(_) => self.dispatch(side).err(),
            Err(e) => Some(format!("read error: {e}")),
        };
        if let Some(reason) = ended {
            side.done = true;
            self.fail_all(reason);
        }
    }

    /// Decode and hand out every whole frame in the buffer.
    fn dispatch(&self, side: &mut ReadSide) -> Result<(), String> {
        loop {
            match side.decoder.decode(&mut side.buf) {
                Ok(Some(Decoded::Frame(frame))) => self.on_frame(frame),
                Ok(Some(Decoded::Oversized { head, len })) => self.on_oversized(head.id, len),
                Ok(Some(Decoded::Refused { head, why })) => self.on_refused(head, &why),
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::warn!(addr = %self.addr, error = %e, "protocol error; closing connection");
                    return Err(format!("protocol error: {e}"));
                }
            }
        }
    }

    /// The background reader: takes over when a leader leaves calls behind,
    /// and watches the connection once it has gone quiet. Returns when the
    /// connection has ended.
    pub(super) async fn background_reader(&self) {
        let reader = &self.reader;
        loop {
            let wanted = reader.wanted.notified();
            let quiet = reader.quiet.notified();
            tokio::pin!(wanted, quiet);
            wanted.as_mut().enable();
            quiet.as_mut().enable();

            if self.has_pending() {
                if let Ok(side) = reader.side.try_lock() {
                    // Calls wait and nobody reads: read for them until none
                    // wait (or a batch answered someone, who may lead next).
                    let mut holding = Holding { conn: self, side: Some(side) };
                    if self.serve_waiting(&mut holding).await {
                        return;
                    }
                    continue;
                }
            } else {
                // No calls: after a quiet LINGER, watch the socket. Either way
                // look again rather than park: leaders do not wake a lingering
                // reader, so the last call may have ended during the linger.
                if self.linger().await {
                    if let Ok(side) = reader.side.try_lock() {
                        let mut holding = Holding { conn: self, side: Some(side) };
                        if self.watch_idle(&mut holding).await {
                            return;
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                _ = wanted => {}
                _ = quiet => {}
            }
        }
    }

    /// Wait [`LINGER`] and say whether the connection stayed without calls.
    async fn linger(&self) -> bool {
        let reader = &self.reader;
        reader.lingering.store(true, Ordering::Relaxed);
        let before = reader.activity.load(Ordering::Relaxed);
        tokio::time::sleep(LINGER).await;
        reader.lingering.store(false, Ordering::Relaxed);
        reader.activity.load(Ordering::Relaxed) == before && !self.has_pending()
    }

    /// Read while calls wait. Returns whether the connection ended.
    async fn serve_waiting(&self, holding: &mut Holding<'_>) -> bool {
        while let Some(side) = holding.side.as_deref_mut() {
            if side.done {
                return true;
            }
            if !self.has_pending() {
                return false;
            }
            self.read_batch(side).await;
        }
        true
    }

    /// Watch a quiet connection until something arrives (a go-away, a ping,
    /// the end) or a call starts. Returns whether the connection ended.
    async fn watch_idle(&self, holding: &mut Holding<'_>) -> bool {
        let Some(side) = holding.side.as_deref_mut() else { return true };
        if side.done {
            return true;
        }
        // Leave as soon as a call starts, so its caller can lead.
        let started = self.reader.activity.load(Ordering::Relaxed);
        loop {
            self.read_batch(side).await;
            if side.done {
                return true;
            }
            if self.reader.activity.load(Ordering::Relaxed) != started || self.has_pending() {
                return false;
            }
        }
    }
}
