//! What every connection is held to, whatever protocol it speaks: time
//! limits on its reads, admission (a global and a per-peer cap, and room
//! made when the process runs out of file descriptors), and the server-wide
//! memory budget for buffered input and queued output.
//!
//! A peer is assumed hostile. It may open connections and send nothing,
//! start a frame and stall, announce large frames it never sends, or stop
//! reading its answers. Each of those holds a resource: a file descriptor, a
//! buffer, a slot under the connection cap. The limits here make every such
//! hold end, on a clock, and make the holds of all connections add up to a
//! bounded total:
//!
//! | limit | default | ends |
//! |-------|---------|------|
//! | [`ServerConfig::handshake_timeout`] | 10 s | a connection that has not sent one complete frame (or request header) since it was accepted |
//! | [`ServerConfig::frame_timeout`] | 30 s | a frame started and not finished; answers that wait that long with no write progress |
//! | [`ServerConfig::idle_timeout`] | 5 min | a connection with nothing in flight (a ping keeps it) |
//! | [`ServerConfig::max_connections_per_peer`] | 1,024 | one address taking the whole connection cap |
//! | [`ServerConfig::memory_budget`] | 256 MiB | buffered input plus queued output of all connections |
//!
//! Protocol loops (native frames, Go's net/rpc, later ones) use a
//! [`ConnClock`] for the time limits, a [`Ticket`] for admission and a
//! [`Charge`] against the [`MemoryBudget`].
//!
//! [`ServerConfig::handshake_timeout`]: super::ServerConfig::handshake_timeout
//! [`ServerConfig::frame_timeout`]: super::ServerConfig::frame_timeout
//! [`ServerConfig::idle_timeout`]: super::ServerConfig::idle_timeout
//! [`ServerConfig::max_connections_per_peer`]: super::ServerConfig::max_connections_per_peer
//! [`ServerConfig::memory_budget`]: super::ServerConfig::memory_budget

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::ServerConfig;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// --- admission ---------------------------------------------------------------

/// The table of open connections: counts against the global and per-peer
/// caps, and each connection's [`Slot`], so that a process out of file
/// descriptors can close the connection idle the longest.
pub(crate) struct Admission {
    max_total: usize,
    max_per_peer: usize,
    epoch: Instant,
    state: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    per_peer: HashMap<IpAddr, usize>,
    slots: HashMap<u64, Arc<Slot>>,
    next_id: u64,
}

/// What admission knows of one open connection.
pub(crate) struct Slot {
    /// Calls running on the connection.
    calls: AtomicUsize,
    /// When the connection last read something or finished a call, in
    /// milliseconds since the admission table's epoch.
    last_active_ms: AtomicU64,
    /// Told when the server needs this connection closed.
    evict: Notify,
    /// Whether it has been told (so the next eviction picks others).
    evicted: std::sync::atomic::AtomicBool,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server holds `max_connections` already.
    Total(usize),
    /// This peer address holds `max_connections_per_peer` already.
    Peer(usize),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Total(limit) => write!(f, "connection limit of {limit} reached; try another instance"),
            Refusal::Peer(limit) => write!(f, "limit of {limit} connections from one address reached"),
        }
    }
}

impl Admission {
    pub(crate) fn new(config: &ServerConfig) -> Arc<Admission> {
        Arc::new(Admission {
            max_total: config.max_connections,
            max_per_peer: config.max_connections_per_peer.min(config.max_connections),
            epoch: Instant::now(),
            state: Mutex::new(Table::default()),
        })
    }

    /// Admit a connection from `peer`, or say which cap it is over.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, Refusal> {
        let mut table = lock(&self.state);
        if table.slots.len() >= self.max_total {
            return Err(Refusal::Total(self.max_total));
        }
        let from_peer = table.per_peer.entry(peer).or_insert(0);
        if *from_peer >= self.max_per_peer {
            return Err(Refusal::Peer(self.max_per_peer));
        }
        *from_peer += 1;
        let id = table.next_id;
        table.next_id += 1;
        let slot = Arc::new(Slot {
            calls: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
            evicted: std::sync::atomic::AtomicBool::new(false),
        });
        table.slots.insert(id, Arc::clone(&slot));
        Ok(Ticket { id, peer, calls: CallCounter { admission: Arc::clone(self), slot } })
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        lock(&self.state).slots.len()
    }

    /// Ask the `n` connections idle the longest (no call running) to close,
    /// to free file descriptors. Returns how many were asked.
    pub(crate) fn evict_idle(&self, n: usize) -> usize {
        let table = lock(&self.state);
        let mut idle: Vec<(u64, &Arc<Slot>)> = table
            .slots
            .values()
            .filter(|s| s.calls.load(Ordering::Relaxed) == 0 && !s.evicted.load(Ordering::Relaxed))
            .map(|s| (s.last_active_ms.load(Ordering::Relaxed), s))
            .collect();
        idle.sort_unstable_by_key(|(at, _)| *at);
        for (_, slot) in idle.iter().take(n) {
            slot.evicted.store(true, Ordering::Relaxed);
            slot.evict.notify_one();
        }
        idle.len().min(n)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn instant_of(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }
}

/// One admitted connection. Dropping it frees its place under the caps.
pub(crate) struct Ticket {
    id: u64,
    peer: IpAddr,
    calls: CallCounter,
}

impl Ticket {
    /// Counts this connection's calls (cheap to clone into call tasks).
    pub(crate) fn calls(&self) -> &CallCounter {
        &self.calls
    }
}

/// Counts the calls running on one connection: a connection is not idle
/// (nor the first to be closed for room) while one runs.
#[derive(Clone)]
pub struct CallCounter {
    admission: Arc<Admission>,
    slot: Arc<Slot>,
}

impl CallCounter {
    /// A call started; it counts until the guard is dropped.
    pub fn enter(&self) -> CallGuard {
        self.slot.calls.fetch_add(1, Ordering::Relaxed);
        CallGuard(self.clone())
    }

    /// Calls running now.
    pub fn running(&self) -> usize {
        self.slot.calls.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.slot.last_active_ms.store(self.admission.now_ms(), Ordering::Relaxed);
    }

    fn last_active(&self) -> Instant {
        self.admission.instant_of(self.slot.last_active_ms.load(Ordering::Relaxed))
    }
}

/// One running call of a [`CallCounter`].
pub struct CallGuard(CallCounter);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.slot.calls.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut table = lock(&self.calls.admission.state);
        table.slots.remove(&self.id);
        if let Some(n) = table.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                table.per_peer.remove(&self.peer);
            }
        }
    }
}

// --- time limits -------------------------------------------------------------

/// Why a connection's clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expired {
    /// No complete frame or request header within the handshake timeout.
    Handshake(Duration),
    /// A frame started and not finished within the frame timeout.
    Frame(Duration),
    /// Nothing in flight for the idle timeout.
    Idle(Duration),
    /// The server closed it to free a file descriptor.
    Evicted,
}

impl Expired {
    /// Whether the peer did nothing wrong (an idle connection, or one closed
    /// for room): such a close may be announced politely.
    pub fn is_benign(self) -> bool {
        matches!(self, Expired::Idle(_) | Expired::Evicted)
    }
}

impl fmt::Display for Expired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expired::Handshake(d) => write!(f, "no complete frame within the handshake timeout of {d:?}"),
            Expired::Frame(d) => write!(f, "a frame was not finished within the frame timeout of {d:?}"),
            Expired::Idle(d) => write!(f, "idle for the idle timeout of {d:?}"),
            Expired::Evicted => f.write_str("closed to free a file descriptor (the process is out of them)"),
        }
    }
}

/// The time limits of one connection's reads. The protocol loop tells it
/// what happened ([`ConnClock::read`], [`ConnClock::decoded`]) and selects on
/// [`ConnClock::expired`] beside its read.
///
/// The timer is armed lazily: it is moved only when a limit comes nearer
/// than the time it is set for, and when it fires the clock works out
/// whether a limit has really passed (activity meanwhile moves the limit
/// later) and re-arms if not. A busy connection therefore touches the timer
/// wheel about once per limit period, not once per read.
pub struct ConnClock {
    handshake: Duration,
    frame: Duration,
    idle: Option<Duration>,
    accepted: Instant,
    /// Whether one whole frame (or request header) has arrived.
    greeted: bool,
    /// Since when bytes of an unfinished frame have been buffered.
    partial_since: Option<Instant>,
    ticket: Ticket,
    timer: Pin<Box<Sleep>>,
    armed: Instant,
}

impl ConnClock {
    pub(crate) fn new(config: &ServerConfig, ticket: Ticket, accepted: Instant) -> ConnClock {
        let armed = accepted + config.handshake_timeout;
        ConnClock {
            handshake: config.handshake_timeout,
            frame: config.frame_timeout,
            idle: config.idle_timeout,
            accepted,
            greeted: false,
            partial_since: None,
            ticket,
            timer: Box::pin(tokio::time::sleep_until(armed)),
            armed,
        }
    }

    /// Counts the connection's calls.
    pub fn calls(&self) -> &CallCounter {
        self.ticket.calls()
    }

    /// Bytes arrived.
    pub fn read(&mut self) {
        self.ticket.calls.touch();
    }

    /// The loop decoded what was buffered: `completed` whether at least one
    /// whole frame came out, `partial` whether bytes of an unfinished one
    /// remain.
    pub fn decoded(&mut self, completed: bool, partial: bool) {
        if completed && !self.greeted {
            // The handshake limit no longer applies; the idle one may be
            // nearer than the timer is set for.
            self.greeted = true;
            if let Some(idle) = self.idle {
                self.arm(Instant::now() + idle);
            }
        }
        match (partial, self.partial_since) {
            (false, _) => self.partial_since = None,
            (true, Some(_)) if !completed => {}
            (true, _) => {
                let now = Instant::now();
                self.partial_since = Some(now);
                self.arm(now + self.frame);
            }
        }
    }

    /// Completes when a limit has passed (or admission wants the connection
    /// closed). `output_pending` says whether answers still wait to be
    /// written (the connection is not idle while they do). Cancel-safe.
    pub async fn expired(&mut self, output_pending: impl Fn() -> bool) -> Expired {
        loop {
            tokio::select! {
                biased;
                _ = self.ticket.calls.slot.evict.notified() => return Expired::Evicted,
                _ = self.timer.as_mut() => {}
            }
            let now = Instant::now();
            match self.limit(&output_pending, now) {
                Some((at, why)) if at <= now => return why,
                Some((at, _)) => self.rearm(at),
                // Busy: look again one idle period (or frame period) on.
                None => self.rearm(now + self.idle.unwrap_or(self.frame)),
            }
        }
    }

    /// The nearest limit and what passing it means; `None` while nothing
    /// can expire (calls or answers in flight, no idle timeout).
    fn limit(&self, output_pending: &impl Fn() -> bool, now: Instant) -> Option<(Instant, Expired)> {
        if !self.greeted {
            return Some((self.accepted + self.handshake, Expired::Handshake(self.handshake)));
        }
        if let Some(since) = self.partial_since {
            return Some((since + self.frame, Expired::Frame(self.frame)));
        }
        let idle = self.idle?;
        if self.ticket.calls.running() > 0 || output_pending() {
            return None;
        }
        let since = self.ticket.calls.last_active().min(now);
        Some((since + idle, Expired::Idle(idle)))
    }

    /// Bring the timer nearer if `at` is before it.
    fn arm(&mut self, at: Instant) {
        if at < self.armed {
            self.rearm(at);
        }
    }

    fn rearm(&mut self, at: Instant) {
        self.armed = at;
        self.timer.as_mut().reset(at);
    }
}

// --- memory budget -----------------------------------------------------------

/// Bytes of buffered input and queued output all connections of a server
/// may hold together. Each connection holds a [`Charge`]; growing it past
/// the budget fails, and the connection then stops reading (or refuses the
/// frame) until others release theirs.
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    waiting: AtomicUsize,
    freed: Notify,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget { limit, used: AtomicUsize::new(0), waiting: AtomicUsize::new(0), freed: Notify::new() })
    }

    /// A charge of nothing yet.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge { budget: Arc::clone(self), held: 0 }
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_grow(&self, by: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = used.checked_add(by).filter(|n| *n <= self.limit) else { return false };
            match self.used.compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    fn release(&self, by: usize) {
        self.used.fetch_sub(by, Ordering::AcqRel);
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// What one connection holds of the [`MemoryBudget`]; released when dropped.
pub struct Charge {
    budget: Arc<MemoryBudget>,
    held: usize,
}

impl Charge {
    /// Hold `bytes` in all. Shrinking always works; growing fails (and holds
    /// what it held) if the budget cannot cover it.
    pub fn try_hold(&mut self, bytes: usize) -> bool {
        if bytes == self.held {
            return true;
        }
        if bytes < self.held {
            self.budget.release(self.held - bytes);
            self.held = bytes;
            return true;
        }
        if self.budget.try_grow(bytes - self.held) {
            self.held = bytes;
            return true;
        }
        false
    }

    /// Hold `bytes` more whatever the budget says: for memory that is
    /// already allocated (a request a call is running with), so that what
    /// comes next sees the budget as it is.
    pub fn add_anyway(&mut self, bytes: usize) {
        self.budget.used.fetch_add(bytes, Ordering::AcqRel);
        self.held += bytes;
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Completes the next time any charge of the budget is released.
    pub async fn released(&self) {
        let budget = &self.budget;
        let notified = budget.freed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        budget.waiting.fetch_add(1, Ordering::AcqRel);
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&budget.waiting);
        notified.await;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.held > 0 {
            self.budget.release(self.held);
        }
    }
}

/// Raise the soft limit on open files to the hard limit, once per process,
/// as Go's runtime does at start-up: the default soft limit (often 1,024)
/// is far below what a server with many clients needs.
pub(crate) fn raise_fd_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) => tracing::debug!(limit = now, "open-file limit raised to the hard limit"),
        Err(e) => tracing::debug!(error = %e, "could not raise the open-file limit"),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        ServerConfig {
            max_connections: 3,
            max_connections_per_peer: 2,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(300)),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn admission_caps_each_peer_below_the_total() {
        let admission = Admission::new(&config());
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.1".parse().expect("ip");
        let t1 = admission.admit(a).expect("first");
        let _t2 = admission.admit(a).expect("second");
        assert_eq!(admission.admit(a).err(), Some(Refusal::Peer(2)));
        let _t3 = admission.admit(b).expect("another peer still gets in");
        assert_eq!(admission.admit(b).err(), Some(Refusal::Total(3)));
        drop(t1);
        assert_eq!(admission.open(), 2);
        assert!(admission.admit(a).is_ok(), "a closed connection frees its place");
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_picks_the_longest_idle_connection_without_calls() {
        let admission = Admission::new(&ServerConfig { max_connections_per_peer: 10, ..config() });
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let old = admission.admit(ip).expect("old");
        tokio::time::advance(Duration::from_secs(5)).await;
        let busy_old = admission.admit(ip).expect("busy");
        let _running = busy_old.calls().enter();
        old.calls().touch();
        tokio::time::advance(Duration::from_secs(5)).await;
        let newer = admission.admit(ip).expect("newer");
        // `old` was touched after `busy_old` was admitted, but `busy_old`
        // has a call running: `old` is the one to go, then `newer`.
        let mut clock = ConnClock::new(&config(), old, Instant::now());
        let evicted = clock.expired(|| false);
        tokio::pin!(evicted);
        assert!(futures::poll!(evicted.as_mut()).is_pending());
        assert_eq!(admission.evict_idle(1), 1);
        assert_eq!(evicted.await, Expired::Evicted);
        drop(newer);
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_each_limit_from_its_own_start() {
        let admission = Admission::new(&ServerConfig { max_connections_per_peer: 10, ..config() });
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let start = Instant::now();
        let mut clock = ConnClock::new(&config(), admission.admit(ip).expect("admit"), start);
        // Nothing complete: the handshake limit.
        assert_eq!(clock.expired(|| false).await, Expired::Handshake(Duration::from_secs(10)));
        assert_eq!(start.elapsed(), Duration::from_secs(10));

        let mut clock = ConnClock::new(&config(), admission.admit(ip).expect("admit"), Instant::now());
        clock.read();
        clock.decoded(true, true); // a frame, and the start of the next
        let at = Instant::now();
        assert_eq!(clock.expired(|| false).await, Expired::Frame(Duration::from_secs(30)));
        assert_eq!(at.elapsed(), Duration::from_secs(30));

        // Whole frames only, then quiet: idle after the idle timeout, but not
        // while a call runs or answers wait.
        let mut clock = ConnClock::new(&config(), admission.admit(ip).expect("admit"), Instant::now());
        clock.read();
        clock.decoded(true, false);
        let running = clock.calls().enter();
        let busy = tokio::time::timeout(Duration::from_secs(900), clock.expired(|| false)).await;
        assert!(busy.is_err(), "a connection with a call running is not idle");
        drop(running);
        let at = Instant::now();
        let pending = std::sync::atomic::AtomicBool::new(true);
        let expired = clock.expired(|| pending.load(Ordering::Relaxed));
        tokio::pin!(expired);
        assert!(tokio::time::timeout(Duration::from_secs(400), expired.as_mut()).await.is_err(), "answers pending");
        pending.store(false, Ordering::Relaxed);
        assert_eq!(expired.await, Expired::Idle(Duration::from_secs(300)));
        assert!(at.elapsed() >= Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_timeout_shorter_than_the_handshake_timeout_applies_once_greeted() {
        let config = ServerConfig { idle_timeout: Some(Duration::from_secs(1)), ..config() };
        let admission = Admission::new(&config);
        let mut clock =
            ConnClock::new(&config, admission.admit("127.0.0.1".parse().expect("ip")).expect("admit"), Instant::now());
        clock.read();
        clock.decoded(true, false);
        let at = Instant::now();
        assert_eq!(clock.expired(|| false).await, Expired::Idle(Duration::from_secs(1)));
        assert!(at.elapsed() < Duration::from_secs(2), "{:?}", at.elapsed());
    }

    #[tokio::test]
    async fn charges_add_up_to_the_budget_and_release_on_drop() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.charge();
        let mut b = budget.charge();
        assert!(a.try_hold(60));
        assert!(!b.try_hold(50), "over the budget");
        assert_eq!(b.held(), 0);
        assert!(b.try_hold(40));
        assert_eq!(budget.used(), 100);
        {
            let released = b.released();
            tokio::pin!(released);
            assert!(futures::poll!(released.as_mut()).is_pending());
            assert!(a.try_hold(10), "shrinking always works");
            released.await;
        }
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
