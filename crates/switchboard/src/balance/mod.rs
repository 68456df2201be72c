//! Calling a service by name: instances from discovery, calls balanced over
//! them, failover, retries within a budget, circuit breakers.
//!
//! A [`Balanced`] channel follows one service through a [`Discover`]
//! source and keeps a [`Member`] per instance: a [`Client`] (one
//! multiplexed connection, opened lazily on the first call; optionally
//! several), the instance's load and latency, its circuit breaker, and
//! whether it is in rotation. Each call passes through these layers, in
//! this order:
//!
//! ```text
//! deadline → fail mode / retry → routing, zone → balancer → circuit breaker → connection
//! ```
//!
//! 1. **Deadline**: one budget (the call's timeout, capped by the caller's
//!    own deadline inside a handler) for every attempt and backoff wait.
//! 2. **Fail mode and retry** ([`FailMode`], [`RetryPolicy`]): failover to
//!    another instance, fail fast, fail try, or backup requests; what may be
//!    retried is decided by the error ([`Error::retry`]) and the call's
//!    idempotency; retries that add load spend from a [`RetryBudget`].
//! 3. **Routing and zone** ([`Rule`], [`BalancedBuilder::zone`]): version
//!    routing, gray shares, then the caller's zone while it has instances.
//! 4. **Balancer** ([`Balancer`]): round robin, random, smooth weighted
//!    round robin, least outstanding, P2C on peak-EWMA latency, consistent
//!    hashing with bounded load.
//! 5. **Health**: instances whose circuit is open are skipped
//!    ([`CircuitBreaker`]); an instance whose connection was refused or
//!    lost is out of rotation until a reconnect succeeds (passive
//!    ejection), and optionally pinged in the background (active probing).
//!    What counts against an instance is what it did itself: a failure it
//!    passes on from its own downstream call ([`Status::is_forwarded`](crate::Status::is_forwarded))
//!    is an answer from a healthy instance. Breakers alone never fail the
//!    channel shut: when every instance a call may use has its circuit
//!    open, the call goes to one of them as an early probe, at most one at
//!    a time per instance and one per
//!    [`early_probe_interval`](BreakerConfig::early_probe_interval)
//!    (100 ms); only calls between probes fail fast.
//! 6. **Connection**: the instance's [`Client`], whose own middleware runs
//!    per attempt.
//!
//! ```no_run
//! use std::sync::Arc;
//! use switchboard::balance::{Balanced, FailMode, PeakEwma};
//! use switchboard::discovery::Static;
//! use switchboard::Channel; // call, call_with
//!
//! # async fn run() -> Result<(), switchboard::Error> {
//! let source = Arc::new(Static::new(["127.0.0.1:9000", "127.0.0.1:9001"]));
//! let arith = Balanced::builder("Arith", source).balancer(PeakEwma::new()).fail_mode(FailMode::failover(3)).build();
//! let product: i64 = arith.call("Arith.Multiply", &serde_json::json!({"A": 7, "B": 8})).await?;
//! # Ok(()) }
//! ```

mod balancer;
mod breaker;
mod budget;
mod call;
mod health;
mod member;
mod policy;
mod route;

pub use balancer::{
    by_name, Balancer, ConsistentHash, LeastOutstanding, PeakEwma, PickInfo, Random, RoundRobin, WeightedRoundRobin,
    NAMES,
};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit};
pub use budget::RetryBudget;
pub use member::Member;
pub use policy::{BackupDelay, FailMode, RetryPolicy, BACKUP_DELAY_BEFORE_SAMPLES};
pub use route::{Rule, Selector};

/// The affinity key of a call for consistent-hash balancing
/// ([`CallOptionsExt::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Affinity(pub String);

/// A balanced channel's per-call settings, set on [`CallOptions`] (as
/// typed [extensions](crate::call::Extensions), which a plain
/// [`Client`] ignores).
///
/// ```
/// use switchboard::balance::{CallOptionsExt, FailMode};
/// use switchboard::CallOptions;
///
/// let opts = CallOptions::new().idempotent(true).fail_mode(FailMode::FailFast).key("user-42");
/// # drop(opts);
/// ```
pub trait CallOptionsExt {
    /// What the balanced channel does when this call's attempt fails or is
    /// slow (default: the channel's own).
    fn fail_mode(self, mode: FailMode) -> Self;
    /// The affinity key for consistent-hash balancing: calls with the same
    /// key go to the same instance while it is available (a user or
    /// session id, say). Other balancers ignore it.
    fn key(self, key: impl Into<String>) -> Self;
}

impl CallOptionsExt for CallOptions {
    fn fail_mode(self, mode: FailMode) -> CallOptions {
        self.extension(mode)
    }

    fn key(self, key: impl Into<String>) -> CallOptions {
        self.extension(Affinity(key.into()))
    }
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::call::{BoxFuture, Context, Request, Response};
use crate::client::{CallOptions, Channel, Client, ClientConfig};
use crate::codec::Codec;
use crate::discovery::{Change, Changes, Discover, Instance};
use crate::error::Error;
use crate::middleware::Middleware;

/// Builds a [`Balanced`] channel.
pub struct BalancedBuilder {
    service: String,
    discover: Arc<dyn Discover>,
    settings: Settings,
}

/// Everything a channel was built with.
struct Settings {
    config: ClientConfig,
    middleware: Vec<Arc<dyn Middleware<Error>>>,
    balancer: Arc<dyn Balancer>,
    fail_mode: FailMode,
    retry: RetryPolicy,
    breaker: BreakerConfig,
    rules: Vec<Rule>,
    zone: Option<String>,
    connections_per_instance: usize,
    max_connections: usize,
    latency_decay: Duration,
    probe_every: Option<Duration>,
    first_list_timeout: Duration,
}

impl BalancedBuilder {
    /// Settings for the per-instance clients (codec, frame limit, connect
    /// timeout, reconnect backoff) and the default call timeout, which
    /// covers every attempt of a call together.
    pub fn config(mut self, config: ClientConfig) -> BalancedBuilder {
        self.settings.config = config;
        self
    }

    /// Pass these user metadata keys on from the handler's request to
    /// calls made inside it ([`ClientConfig::forward_metadata`]).
    pub fn forward_metadata<I, K>(mut self, keys: I) -> BalancedBuilder
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.settings.config.forward_metadata = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Set the default call timeout (`None`: no deadline).
    pub fn timeout(mut self, timeout: Option<Duration>) -> BalancedBuilder {
        self.settings.config.timeout = timeout;
        self
    }

    /// Set the default codec.
    pub fn codec(mut self, codec: Codec) -> BalancedBuilder {
        self.settings.config.codec = codec;
        self
    }

    /// Add a middleware to every instance's client (it sees each attempt);
    /// the first added runs outermost.
    pub fn layer(mut self, middleware: impl Middleware<Error>) -> BalancedBuilder {
        self.settings.middleware.push(Arc::new(middleware));
        self
    }

    /// The balancer choosing among candidate instances. Default
    /// [`PeakEwma`] (power of two choices on latency × load): it steers
    /// calls away from slow or busy instances within a few calls, which is
    /// what keeps one sick instance from dragging the service's tail down.
    /// Use [`RoundRobin`] or [`WeightedRoundRobin`] for predictable shares,
    /// [`ConsistentHash`] for affinity.
    pub fn balancer(mut self, balancer: impl Balancer) -> BalancedBuilder {
        self.settings.balancer = Arc::new(balancer);
        self
    }

    /// [`BalancedBuilder::balancer`] for one already shared (say, from
    /// `balance::by_name`).
    pub fn balancer_arc(mut self, balancer: Arc<dyn Balancer>) -> BalancedBuilder {
        self.settings.balancer = balancer;
        self
    }

    /// What to do when an attempt fails or is slow, for calls whose options
    /// name no fail mode. Default [`FailMode::Failover`] with 3 attempts.
    pub fn fail_mode(mut self, mode: FailMode) -> BalancedBuilder {
        self.settings.fail_mode = mode;
        self
    }

    /// Shorthand for `fail_mode(FailMode::failover(attempts))`.
    pub fn max_attempts(self, attempts: usize) -> BalancedBuilder {
        self.fail_mode(FailMode::failover(u32::try_from(attempts).unwrap_or(u32::MAX)))
    }

    /// Retry backoff and budget.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> BalancedBuilder {
        self.settings.retry = policy;
        self
    }

    /// Settings of every instance's circuit breaker.
    pub fn breaker(mut self, config: BreakerConfig) -> BalancedBuilder {
        self.settings.breaker = config;
        self
    }

    /// Add a routing rule (version routing, gray share); rules apply in the
    /// order added. See [`Rule`].
    pub fn route(mut self, rule: Rule) -> BalancedBuilder {
        self.settings.rules.push(rule);
        self
    }

    /// The caller's zone: calls prefer instances whose metadata names the
    /// same zone while any of them can take the call.
    pub fn zone(mut self, zone: impl Into<String>) -> BalancedBuilder {
        let zone = zone.into();
        self.settings.zone = (!zone.is_empty()).then_some(zone);
        self
    }

    /// Connections opened to each instance (calls are spread over them
    /// round-robin). Default 1: one multiplexed connection carries any
    /// number of concurrent calls; more help only when one connection's
    /// reads and writes are the bottleneck.
    pub fn connections_per_instance(mut self, n: usize) -> BalancedBuilder {
        self.settings.connections_per_instance = n.max(1);
        self
    }

    /// The most connections this channel keeps (default 1,024). When
    /// discovery lists more instances than fit, the channel uses a subset
    /// of them, chosen by a hash of its own random seed and each instance's
    /// id, so different callers use different subsets and the load still
    /// spreads over all instances; a flapping registry cannot make a caller
    /// open thousands of connections.
    pub fn max_connections(mut self, n: usize) -> BalancedBuilder {
        self.settings.max_connections = n.max(1);
        self
    }

    /// Time constant of the per-instance latency estimate (peak EWMA) that
    /// latency-aware balancers read. Default 10 s.
    pub fn latency_decay(mut self, decay: Duration) -> BalancedBuilder {
        self.settings.latency_decay = decay;
        self
    }

    /// Ping every instance in rotation this often (active probing): one
    /// that does not answer within the connect timeout is taken out of
    /// rotation until a reconnect succeeds. Default off: passive ejection
    /// (on a refused or lost connection) alone.
    pub fn probe_every(mut self, interval: Duration) -> BalancedBuilder {
        self.settings.probe_every = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// How long a call waits for discovery's first list (a registry that
    /// cannot be reached at start-up) before failing with
    /// [`Error::NoInstances`]. Default 5 s; the call's deadline still
    /// applies.
    pub fn first_list_timeout(mut self, timeout: Duration) -> BalancedBuilder {
        self.settings.first_list_timeout = timeout;
        self
    }

    /// The channel. Starts following discovery at once; must be called
    /// within a Tokio runtime.
    pub fn build(self) -> Balanced {
        let changes = self.discover.discover(&self.service);
        let (ready_tx, ready) = watch::channel(false);
        let (listed_tx, listed) = watch::channel(Listed::default());
        let retry = &self.settings.retry;
        let inner = Arc::new(Inner {
            service: self.service,
            members: ArcSwap::from_pointee(Vec::new()),
            known: std::sync::Mutex::new(HashMap::new()),
            ready,
            listed,
            budget: RetryBudget::new(retry.budget_ratio, retry.budget_min_per_sec, Duration::from_secs(10)),
            latencies: policy::LatencyWindow::new(),
            counters: Counters::default(),
            seed: fastrand::u64(..),
            epoch: Instant::now(),
            departed: Default::default(),
            settings: self.settings,
        });
        let mut tasks = vec![tokio::spawn(follow(Arc::downgrade(&inner), changes, ready_tx, listed_tx))];
        if let Some(every) = inner.settings.probe_every {
            tasks.push(tokio::spawn(health::probe_all(Arc::downgrade(&inner), every)));
        }
        Balanced { inner, _tasks: Arc::new(AbortOnDrop(tasks)) }
    }
}

/// A channel to every instance of one service: balancing, failover,
/// retries, circuit breaking (see the [module docs](self)). Cheap to clone;
/// clones share instances, connections and state. Typed stubs work over it
/// (`ArithClient::new(balanced)`).
#[derive(Clone)]
pub struct Balanced {
    inner: Arc<Inner>,
    _tasks: Arc<AbortOnDrop>,
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

struct Inner {
    service: String,
    /// The instances in use, sorted by id; replaced whole on every change.
    members: ArcSwap<Vec<Arc<Member>>>,
    /// Every instance discovery lists (more than `members` when the
    /// connection cap makes the channel use a subset).
    known: std::sync::Mutex<HashMap<String, Instance>>,
    /// True once discovery delivered its first list.
    ready: watch::Receiver<bool>,
    /// The instances in use after each batch, for [`Balanced::wait_for`].
    listed: watch::Receiver<Listed>,
    budget: RetryBudget,
    latencies: policy::LatencyWindow,
    counters: Counters,
    /// This channel's subsetting seed.
    seed: u64,
    /// Origin of the millisecond clock ejection times count on.
    epoch: Instant,
    /// Stats of instances that left discovery (bounded).
    departed: std::sync::Mutex<std::collections::VecDeque<InstanceStats>>,
    settings: Settings,
}

/// Channel-wide counts, see [`CallStats`].
#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    transparent: AtomicU64,
    backups: AtomicU64,
    backup_wins: AtomicU64,
    budget_exhausted: AtomicU64,
}

/// What a channel did with its calls: see [`Balanced::call_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that ended in an error (any kind, application errors included).
    pub failed: u64,
    /// Extra attempts after an error that may have reached a server
    /// (backoff, budget).
    pub retries: u64,
    /// Extra attempts after an error that says nothing was sent (could not
    /// connect, refused): immediate, outside the budget.
    pub transparent: u64,
    /// Backup requests sent.
    pub backups: u64,
    /// Backup requests that answered first.
    pub backup_wins: u64,
    /// Retries or backup requests not sent because the budget was spent.
    pub budget_exhausted: u64,
}

/// Most departed instances whose stats are kept.
const MAX_DEPARTED: usize = 64;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn stats_of(m: &Member, listed: bool) -> InstanceStats {
    let state = &m.state;
    InstanceStats {
        instance: m.instance().clone(),
        answered: state.answered.load(Ordering::Relaxed),
        failed: state.failed.load(Ordering::Relaxed),
        outstanding: m.outstanding(),
        latency: m.latency(),
        in_rotation: state.ejected_at.load(Ordering::Relaxed) == 0,
        breaker: state.breaker.state(),
        listed,
    }
}

/// What one instance did for this channel: see [`Balanced::stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStats {
    /// The instance, as discovery last described it.
    pub instance: Instance,
    /// Attempts it answered (with success or an application error).
    pub answered: u64,
    /// Attempts that failed in transport (could not connect, connection
    /// lost, refused, deadline).
    pub failed: u64,
    /// Calls on it now.
    pub outstanding: usize,
    /// Its latency estimate (peak EWMA), if it answered yet.
    pub latency: Option<Duration>,
    /// Whether it is in rotation (not ejected after a connection failure).
    pub in_rotation: bool,
    /// Its circuit breaker.
    pub breaker: BreakerState,
    /// Whether discovery still lists it (`false`: it left; its counts are
    /// kept so totals add up).
    pub listed: bool,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members = self.inner.members.load();
        let addrs: Vec<&str> = members.iter().map(|m| m.instance().address.as_str()).collect();
        f.debug_struct("Balanced").field("service", &self.inner.service).field("instances", &addrs).finish()
    }
}

impl Balanced {
    /// A builder for a channel to `service`, whose instances come from
    /// `discover`.
    pub fn builder(service: impl Into<String>, discover: Arc<dyn Discover>) -> BalancedBuilder {
        BalancedBuilder {
            service: service.into(),
            discover,
            settings: Settings {
                config: ClientConfig::default(),
                middleware: Vec::new(),
                balancer: Arc::new(PeakEwma::new()),
                fail_mode: FailMode::default(),
                retry: RetryPolicy::default(),
                breaker: BreakerConfig::default(),
                rules: Vec::new(),
                zone: None,
                connections_per_instance: 1,
                max_connections: 1024,
                latency_decay: Duration::from_secs(10),
                probe_every: None,
                first_list_timeout: Duration::from_secs(5),
            },
        }
    }

    /// The service this channel calls.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The instances in use now, sorted by id.
    pub fn instances(&self) -> Vec<Instance> {
        self.inner.members.load().iter().map(|m| m.instance().clone()).collect()
    }

    /// Per instance: attempts answered and failed, load, latency, health,
    /// for every instance this channel has used (listed ones first, sorted
    /// by id; then those that left, most recent last, at most 64).
    pub fn stats(&self) -> Vec<InstanceStats> {
        let mut out: Vec<InstanceStats> = self.inner.members.load().iter().map(|m| stats_of(m, true)).collect();
        out.extend(lock(&self.inner.departed).iter().cloned());
        out
    }

    /// Channel-wide counts: calls, failures, retries, backup requests.
    pub fn call_stats(&self) -> CallStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CallStats {
            calls: get(&c.calls),
            failed: get(&c.failed),
            retries: get(&c.retries),
            transparent: get(&c.transparent),
            backups: get(&c.backups),
            backup_wins: get(&c.backup_wins),
            budget_exhausted: get(&c.budget_exhausted),
        }
    }

    /// Wait until discovery has delivered its first list (or `timeout`
    /// passes); returns the number of instances in use. The first list may
    /// be empty (servers register asynchronously, so a channel built next
    /// to them often sees none yet): to wait for instances, use
    /// [`wait_for`](Self::wait_for).
    pub async fn ready(&self, timeout: Duration) -> usize {
        let mut ready = self.inner.ready.clone();
        let _ = tokio::time::timeout(timeout, ready.wait_for(|r| *r)).await;
        self.inner.members.load().len()
    }

    /// Wait until discovery lists at least `n` instances in use, for tests
    /// and for a start-up that must not call before its dependencies are
    /// up; returns how many there are. Fails with
    /// [`Error::NoInstances`], saying how many were seen, when `timeout`
    /// passes first or the discovery source stops for good.
    ///
    /// ```no_run
    /// # async fn run(orders: switchboard::balance::Balanced) -> Result<(), switchboard::Error> {
    /// orders.wait_for(2, std::time::Duration::from_secs(10)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<usize, Error> {
        let mut listed = self.inner.listed.clone();
        let waited = tokio::time::timeout(timeout, listed.wait_for(|l| l.instances >= n || l.ended)).await.is_ok();
        let now = *listed.borrow();
        if now.instances >= n {
            return Ok(now.instances);
        }
        Err(self.inner.no_instances(if waited {
            format!("waited for {n} instances; discovery stopped with {} listed", now.instances)
        } else {
            format!("waited {timeout:?} for {n} instances, with {} listed", now.instances)
        }))
    }
}

impl Channel for Balanced {
    fn call_raw<'a>(&'a self, req: Request, opts: &'a CallOptions) -> BoxFuture<'a, Result<Response, Error>> {
        let inner = &self.inner;
        // One budget for every attempt: the call's timeout, capped by what is
        // left of the caller's own deadline inside a handler.
        let budget = crate::client::budget(opts.timeout.or(inner.settings.config.timeout), Context::current().as_ref());
        let deadline = budget.and_then(|b| Instant::now().checked_add(b));
        Box::pin(async move {
            inner.counters.calls.fetch_add(1, Ordering::Relaxed);
            let attempts = inner.call(req, opts, deadline);
            let result = match (deadline, budget) {
                (Some(at), Some(total)) => {
                    tokio::time::timeout_at(at, attempts).await.unwrap_or(Err(Error::DeadlineExceeded(total)))
                }
                _ => attempts.await,
            };
            if result.is_err() {
                inner.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            result
        })
    }

    fn default_codec(&self) -> Codec {
        self.inner.settings.config.codec
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    fn member(&self, instance: Instance) -> Arc<Member> {
        let s = &self.settings;
        let clients = (0..s.connections_per_instance)
            .map(|_| {
                let mut builder = Client::builder(instance.address.clone()).config(s.config.clone());
                for layer in &s.middleware {
                    builder = builder.layer_arc(Arc::clone(layer));
                }
                builder.build()
            })
            .collect();
        let breaker = CircuitBreaker::with_name(s.breaker.clone(), format!("{}@{}", self.service, instance.address));
        let state = member::MemberState::new(s.latency_decay, breaker);
        Arc::new(Member::new(instance, clients, Arc::new(state)))
    }

    /// Rendezvous score of an instance for this channel's subset.
    fn subset_score(&self, id: &str) -> u64 {
        // FNV-1a over the id, mixed with the seed (splitmix64 finaliser).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut z = h ^ self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn apply(&self, batch: Vec<Change>) {
        let mut known = lock(&self.known);
        for change in batch {
            match change {
                Change::Added(instance) | Change::Updated(instance) => {
                    known.insert(instance.id.clone(), instance);
                }
                Change::Removed(id) => {
                    known.remove(&id);
                }
            }
        }
        // The subset in use: every instance, unless the connection cap says
        // fewer (then the highest rendezvous scores).
        let cap = (self.settings.max_connections / self.settings.connections_per_instance).max(1);
        let mut chosen: Vec<&Instance> = known.values().collect();
        if chosen.len() > cap {
            chosen.sort_by_cached_key(|i| std::cmp::Reverse(self.subset_score(&i.id)));
            chosen.truncate(cap);
        }
        let current = self.members.load();
        let by_id: HashMap<&str, &Arc<Member>> = current.iter().map(|m| (m.id(), m)).collect();
        let mut members: Vec<Arc<Member>> = chosen
            .into_iter()
            .map(|instance| match by_id.get(instance.id.as_str()) {
                // Same address: keep the clients (and connections) and what
                // was learned; take the new metadata.
                Some(old) if old.instance().address == instance.address => {
                    if old.instance() == instance {
                        Arc::clone(old)
                    } else {
                        Arc::new(Member::new(instance.clone(), old.clients.clone(), Arc::clone(&old.state)))
                    }
                }
                _ => self.member(instance.clone()),
            })
            .collect();
        drop(known);
        members.sort_by(|a, b| a.id().cmp(b.id()));
        // Members no longer in use: remember their counts. Their clients
        // close their connections once the last call on them ends.
        for gone in current.iter().filter(|m| !members.iter().any(|n| Arc::ptr_eq(&n.state, &m.state))) {
            let mut departed = lock(&self.departed);
            if departed.len() == MAX_DEPARTED {
                departed.pop_front();
            }
            departed.push_back(stats_of(gone, false));
        }
        tracing::debug!(service = %self.service, instances = members.len(), "instances changed");
        self.settings.balancer.update(&members);
        self.members.store(Arc::new(members));
    }

    /// Whether `member` is still in use (not replaced or removed).
    fn in_use(&self, state: &Arc<member::MemberState>) -> bool {
        self.members.load().iter().any(|m| Arc::ptr_eq(&m.state, state))
    }
}

/// Applies discovery's change batches until the channel or the source goes.
/// Holds only a weak reference, so dropping the last [`Balanced`] ends it.
async fn follow(inner: Weak<Inner>, mut changes: Changes, ready: watch::Sender<bool>, listed: watch::Sender<Listed>) {
    while let Some(batch) = changes.next().await {
        let Some(inner) = inner.upgrade() else { return };
        inner.apply(batch);
        listed.send_replace(Listed { instances: inner.members.load().len(), ended: false });
        ready.send_replace(true);
    }
    // The source stopped for good: keep the last list, and let callers
    // waiting for a first one fail now rather than at their deadline.
    listed.send_modify(|l| l.ended = true);
    ready.send_replace(true);
}

/// What [`follow`] last applied: the instances in use, and whether the
/// source has stopped.
#[derive(Debug, Clone, Copy, Default)]
struct Listed {
    instances: usize,
    ended: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Static;

    fn instance(id: &str, healthy: bool) -> Instance {
        let mut i = Instance::new(format!("127.0.0.1:{}", 1000 + id.as_bytes()[0] as u16));
        i.id = id.to_owned();
        i.healthy = healthy;
        i
    }

    fn empty() -> Balanced {
        Balanced::builder("S", Arc::new(Static::from_instances(vec![]))).balancer(RoundRobin::new()).build()
    }

    fn pick_id(inner: &Inner, tried: &[Arc<Member>]) -> Option<String> {
        inner.pick_for_test(tried, None).map(|m| m.id().to_owned())
    }

    #[tokio::test]
    async fn picks_prefer_healthy_and_in_rotation_members() {
        let balanced = empty();
        let inner = &balanced.inner;
        inner.apply(vec![
            Change::Added(instance("a", true)),
            Change::Added(instance("b", true)),
            Change::Added(instance("c", false)),
        ]);
        let picks: Vec<String> = (0..6).map(|_| pick_id(inner, &[]).expect("a member")).collect();
        assert_eq!(picks.iter().filter(|id| *id == "a").count(), 3, "{picks:?}");
        assert_eq!(picks.iter().filter(|id| *id == "b").count(), 3, "{picks:?}");

        // Eject a: only b is healthy and in rotation.
        let member = |id: &str| inner.members.load().iter().find(|m| m.id() == id).cloned().expect("member");
        let (a, b, c) = (member("a"), member("b"), member("c"));
        a.state.ejected_at.store(5, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(pick_id(inner, &[]).as_deref(), Some("b"));
        }
        // b tried already: the unhealthy but reachable c beats the ejected a.
        assert_eq!(pick_id(inner, std::slice::from_ref(&b)).as_deref(), Some("c"));
        // Everything tried but a: the ejected a is still better than nothing.
        assert_eq!(pick_id(inner, &[b.clone(), c.clone()]).as_deref(), Some("a"));
        assert!(pick_id(inner, &[a, b, c]).is_none());
    }

    #[tokio::test]
    async fn zone_preference_holds_while_the_zone_has_candidates() {
        let balanced = Balanced::builder("S", Arc::new(Static::from_instances(vec![]))).zone("z1").build();
        let inner = &balanced.inner;
        let mut batch = Vec::new();
        for (id, zone) in [("a", "z1"), ("b", "z2"), ("c", "z2")] {
            let mut i = instance(id, true);
            i.metadata.zone = zone.into();
            batch.push(Change::Added(i));
        }
        inner.apply(batch);
        for _ in 0..5 {
            assert_eq!(pick_id(inner, &[]).as_deref(), Some("a"), "the local zone first");
        }
        let a = inner.members.load().iter().find(|m| m.id() == "a").cloned().expect("a");
        let next = pick_id(inner, std::slice::from_ref(&a)).expect("another zone");
        assert!(next == "b" || next == "c");
    }

    /// A source that never answers, like a registry unreachable at start-up.
    #[derive(Debug)]
    struct Silent(std::sync::Mutex<Vec<crate::discovery::ChangeSender>>);

    impl Discover for Silent {
        fn discover(&self, _service: &str) -> Changes {
            let (tx, rx) = Changes::channel(1);
            self.0.lock().expect("lock").push(tx);
            rx
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_fails_clearly_when_discovery_never_answers() {
        // Kept alive: a dropped source ends its streams, which is "no more news".
        let silent = Arc::new(Silent(Default::default()));
        let balanced = Balanced::builder("S", silent.clone()).first_list_timeout(Duration::from_secs(2)).build();
        let began = Instant::now();
        let err = balanced.call::<_, ()>("S.M", &()).await.expect_err("no instance");
        assert!(matches!(&err, Error::NoInstances { reason, .. } if reason.contains("listed nothing")), "{err}");
        assert_eq!(err.retry(), crate::Retry::Always, "nothing was sent");
        assert!(began.elapsed() >= Duration::from_secs(2) && began.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn an_update_at_the_same_address_keeps_the_client() {
        let balanced = empty();
        let inner = &balanced.inner;
        inner.apply(vec![Change::Added(instance("a", true))]);
        let before = inner.members.load()[0].clients[0].clone();
        let mut updated = instance("a", false);
        updated.metadata.zone = "z2".into();
        inner.apply(vec![Change::Updated(updated)]);
        let members = inner.members.load();
        assert_eq!(members.len(), 1);
        assert!(!members[0].instance().healthy);
        assert_eq!(members[0].instance().metadata.zone, "z2");
        assert!(members[0].clients[0].same_as(&before), "the connection survives a metadata update");
        inner.apply(vec![Change::Removed("a".into())]);
        assert!(inner.members.load().is_empty());
        let stats = balanced.stats();
        assert_eq!(stats.len(), 1, "a departed instance keeps its counts");
        assert!(!stats[0].listed);
    }

    #[tokio::test]
    async fn the_connection_cap_uses_a_stable_subset() {
        let balanced = Balanced::builder("S", Arc::new(Static::from_instances(vec![]))).max_connections(4).build();
        let inner = &balanced.inner;
        inner.apply((0..20).map(|i| Change::Added(instance(&format!("i{i:02}"), true))).collect());
        let first: Vec<String> = inner.members.load().iter().map(|m| m.id().to_owned()).collect();
        assert_eq!(first.len(), 4, "{first:?}");
        // Flapping: instances outside the subset come and go; the subset
        // (and its connections) stays.
        let outside = (0..20).map(|i| format!("i{i:02}")).find(|id| !first.contains(id)).expect("one outside");
        inner.apply(vec![Change::Removed(outside.clone())]);
        inner.apply(vec![Change::Added(instance(&outside, true))]);
        let again: Vec<String> = inner.members.load().iter().map(|m| m.id().to_owned()).collect();
        assert_eq!(first, again);
        // A subset member leaves: another takes its place.
        inner.apply(vec![Change::Removed(first[0].clone())]);
        let after: Vec<String> = inner.members.load().iter().map(|m| m.id().to_owned()).collect();
        assert_eq!(after.len(), 4);
        assert!(!after.contains(&first[0]));
        // Another channel (another seed) most likely uses another subset.
        let other = Balanced::builder("S", Arc::new(Static::from_instances(vec![]))).max_connections(4).build();
        let mut differs = false;
        for _ in 0..5 {
            let other = Balanced::builder("S", Arc::new(Static::from_instances(vec![]))).max_connections(4).build();
            other.inner.apply((0..20).map(|i| Change::Added(instance(&format!("i{i:02}"), true))).collect());
            let ids: Vec<String> = other.inner.members.load().iter().map(|m| m.id().to_owned()).collect();
            differs |= ids != first;
        }
        drop(other);
        assert!(differs, "every channel chose the same subset");
    }

    /// A discovery source the test feeds by hand.
    #[derive(Debug)]
    struct Fed(std::sync::Mutex<Option<Changes>>);

    impl Discover for Fed {
        fn discover(&self, _service: &str) -> Changes {
            self.0.lock().expect("lock").take().expect("one channel")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_waits_past_an_empty_first_list_until_enough_instances_are_listed() {
        let (tx, changes) = Changes::channel(4);
        let balanced = Balanced::builder("S", Arc::new(Fed(std::sync::Mutex::new(Some(changes))))).build();
        tx.send(vec![]).await.expect("consumer");
        assert_eq!(balanced.ready(Duration::from_secs(1)).await, 0, "the first list is empty");
        let waiter = {
            let balanced = balanced.clone();
            tokio::spawn(async move { balanced.wait_for(2, Duration::from_secs(30)).await })
        };
        tx.send(vec![Change::Added(instance("a", true))]).await.expect("consumer");
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one of two is not enough");
        tx.send(vec![Change::Added(instance("b", true))]).await.expect("consumer");
        assert_eq!(waiter.await.expect("task").expect("two listed"), 2);
        // Too few before the timeout: an error that says how many.
        let err = balanced.wait_for(3, Duration::from_secs(5)).await.expect_err("only two");
        assert!(matches!(&err, Error::NoInstances { reason, .. } if reason.contains("with 2 listed")), "{err}");
        // The source stops for good: fail at once, not at the timeout.
        drop(tx);
        let began = tokio::time::Instant::now();
        let err = balanced.wait_for(3, Duration::from_secs(60)).await.expect_err("source gone");
        assert!(matches!(&err, Error::NoInstances { reason, .. } if reason.contains("discovery stopped")), "{err}");
        assert!(began.elapsed() < Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_runs_out_of_time_before_any_list_says_so() {
        // A source that never lists (an unreachable registry), and a call
        // deadline shorter than the first-list timeout.
        let (_tx, changes) = Changes::channel(1);
        let balanced = Balanced::builder("S", Arc::new(Fed(std::sync::Mutex::new(Some(changes)))))
            .first_list_timeout(Duration::from_secs(5))
            .build();
        let opts = CallOptions::new().timeout(Duration::from_secs(2));
        let err = crate::Channel::call_with::<(), ()>(&balanced, "S.M", &(), &opts).await.expect_err("nothing listed");
        assert!(
            matches!(&err, Error::NoInstances { reason, .. } if reason.contains("after 2s") && reason.contains("registry reachable")),
            "{err}"
        );
    }
}
