//! One instance as the balancer sees it: its clients (connections), its
//! load (calls outstanding, latency estimate) and its health (ejection,
//! circuit breaker, counts).
//!
//! A [`Member`] is rebuilt whenever discovery reports a change to its
//! instance, but what it has learned lives in a shared [`MemberState`] that
//! an update at the same address carries over, together with the clients:
//! a metadata change neither drops connections nor forgets latency.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::CircuitBreaker;
use crate::client::Client;
use crate::discovery::Instance;

/// One instance of the service, with the load and latency the balancer
/// sees. [`Balancer`](super::Balancer)s choose among these.
pub struct Member {
    instance: Instance,
    /// One client per connection (usually one).
    pub(super) clients: Box<[Client]>,
    pub(super) state: Arc<MemberState>,
}

/// What a member has learned, kept across metadata updates.
pub(super) struct MemberState {
    outstanding: AtomicUsize,
    latency: Mutex<PeakEwma>,
    /// Round-robin over `Member::clients`.
    next_client: AtomicUsize,
    pub(super) answered: AtomicU64,
    pub(super) failed: AtomicU64,
    /// When it was taken out of rotation, in ms after the channel's epoch;
    /// 0 while in rotation. A reconnect probe puts it back.
    pub(super) ejected_at: AtomicU64,
    pub(super) breaker: CircuitBreaker,
}

impl MemberState {
    pub(super) fn new(latency_decay: Duration, breaker: CircuitBreaker) -> MemberState {
        MemberState {
            outstanding: AtomicUsize::new(0),
            latency: Mutex::new(PeakEwma::new(latency_decay)),
            next_client: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            ejected_at: AtomicU64::new(0),
            breaker,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.instance.id)
            .field("address", &self.instance.address)
            .field("outstanding", &self.outstanding())
            .field("latency", &self.latency())
            .finish()
    }
}

impl Member {
    pub(super) fn new(instance: Instance, clients: Box<[Client]>, state: Arc<MemberState>) -> Member {
        Member { instance, clients, state }
    }

    /// A member with no connection made yet and a fresh state, for tests of
    /// balancers and filters.
    #[cfg(test)]
    pub(crate) fn for_test(instance: Instance) -> Member {
        let client = Client::builder(instance.address.clone()).build();
        let breaker = CircuitBreaker::new(super::BreakerConfig::default());
        Member::new(instance, Box::new([client]), Arc::new(MemberState::new(Duration::from_secs(10), breaker)))
    }

    /// The instance, as discovery last described it.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The instance's id.
    pub fn id(&self) -> &str {
        &self.instance.id
    }

    /// Its weight for weighted balancing (metadata; default 100).
    pub fn weight(&self) -> u32 {
        self.instance.metadata.weight
    }

    /// Calls sent to it that have not finished yet (through this channel).
    pub fn outstanding(&self) -> usize {
        self.state.outstanding.load(Ordering::Relaxed)
    }

    /// Its latency estimate (peak EWMA, decayed to now); `None` before the
    /// first answer.
    pub fn latency(&self) -> Option<Duration> {
        lock(&self.state.latency).estimate(Instant::now())
    }

    /// The next client (connection) to use, round-robin.
    pub(super) fn client(&self) -> &Client {
        let i = self.state.next_client.fetch_add(1, Ordering::Relaxed);
        &self.clients[i % self.clients.len()]
    }

    /// Count a call as outstanding until the guard drops.
    pub(super) fn start(&self) -> Outstanding<'_> {
        self.state.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(self)
    }

    /// Feed one measured round trip into the latency estimate.
    pub(super) fn observe(&self, rtt: Duration) {
        lock(&self.state.latency).observe(rtt, Instant::now());
    }

    #[cfg(test)]
    pub(crate) fn set_outstanding(&self, n: usize) {
        self.state.outstanding.store(n, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn set_latency(&self, rtt: Duration) {
        let mut l = lock(&self.state.latency);
        *l = PeakEwma::new(l.decay);
        l.observe(rtt, Instant::now());
    }
}

/// Decrements the member's outstanding count when dropped (also when the
/// call future is cancelled).
pub(super) struct Outstanding<'a>(&'a Member);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.state.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Peak-sensitive exponentially weighted moving average of round-trip time
/// (Finagle's and linkerd's "peak EWMA"): a sample above the estimate
/// replaces it at once, one below pulls it down with a weight that grows
/// with the time since the last sample (time constant `decay`). Slow answers
/// are believed immediately, recoveries only gradually. Between samples the
/// estimate decays towards zero so an idle instance gets tried again.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeakEwma {
    decay: Duration,
    /// Nanoseconds; `None` before the first sample.
    value: Option<f64>,
    stamp: Instant,
}

impl PeakEwma {
    pub(super) fn new(decay: Duration) -> PeakEwma {
        PeakEwma { decay: decay.max(Duration::from_millis(1)), value: None, stamp: Instant::now() }
    }

    fn weight(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.stamp).as_secs_f64();
        (-elapsed / self.decay.as_secs_f64()).exp()
    }

    pub(super) fn observe(&mut self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos() as f64;
        self.value = Some(match self.value {
            Some(v) if sample <= v => {
                let w = self.weight(now);
                v * w + sample * (1.0 - w)
            }
            _ => sample,
        });
        self.stamp = now;
    }

    pub(super) fn estimate(&self, now: Instant) -> Option<Duration> {
        self.value.map(|v| Duration::from_nanos((v * self.weight(now)) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_up_at_once_and_comes_down_gradually() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(Duration::from_secs(10));
        e.observe(Duration::from_millis(10), t0);
        assert_eq!(e.estimate(t0), Some(Duration::from_millis(10)));
        // A peak is believed at once.
        e.observe(Duration::from_millis(100), t0);
        assert_eq!(e.estimate(t0), Some(Duration::from_millis(100)));
        // A fast sample right after moves it only a little...
        let t1 = t0 + Duration::from_millis(100);
        e.observe(Duration::from_millis(10), t1);
        let after = e.estimate(t1).expect("estimate").as_secs_f64() * 1e3;
        assert!(after > 95.0 && after < 100.0, "{after}");
        // ...one after a long quiet spell almost all the way.
        let t2 = t1 + Duration::from_secs(60);
        e.observe(Duration::from_millis(10), t2);
        let later = e.estimate(t2).expect("estimate").as_secs_f64() * 1e3;
        assert!(later < 11.0, "{later}");
    }
}
