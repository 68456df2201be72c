//! Calling a service by name: instances from discovery, calls balanced over
//! them, failover when one dies.
//!
//! A [`Balanced`] channel follows one service through a
//! [`Discover`] source. It keeps a [`Client`] (one multiplexed connection,
//! opened lazily) per instance, and picks instances round-robin, preferring
//! healthy ones. When a call fails in a way that says the request never ran
//! (could not connect, refused by a draining server) it moves on to the next
//! instance; when the connection broke after the request left (the instance
//! died mid-call), it moves on only if the call is idempotent. An instance
//! whose connection failed is ejected from rotation for a short while, so
//! later calls do not queue behind a dead address while the registry is
//! still listing it.
//!
//! The whole call, every attempt included, runs under one deadline.
//!
//! ```no_run
//! use std::sync::Arc;
//! use switchboard::balance::Balanced;
//! use switchboard::discovery::Static;
//!
//! # async fn run() -> Result<(), switchboard::Error> {
//! let arith = Balanced::builder("Arith", Arc::new(Static::new(["127.0.0.1:9000", "127.0.0.1:9001"]))).build();
//! let product: i64 = arith.call("Arith.Multiply", &serde_json::json!({"A": 7, "B": 8})).await?;
//! # Ok(()) }
//! ```
//!
//! Issue 5 adds the other balancers (weighted, least-outstanding, P2C on
//! latency, consistent hashing), fail modes, retry budgets and circuit
//! breakers; they slot in here, between the deadline and the per-instance
//! clients.

mod balancer;
mod breaker;
mod budget;
mod member;

pub use balancer::{
    by_name, Balancer, ConsistentHash, LeastOutstanding, PeakEwma, PickInfo, Random, RoundRobin, WeightedRoundRobin,
    NAMES,
};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit};
pub use budget::RetryBudget;
pub use member::Member;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::call::{BoxFuture, Context, Request, Response};
use crate::client::{call_typed, CallOptions, Channel, Client, ClientConfig};
use crate::codec::{Codec, Decode, Encode};
use crate::discovery::{Change, Changes, Discover, Instance};
use crate::error::{Error, Retry};
use crate::middleware::Middleware;

/// Builds a [`Balanced`] channel.
pub struct BalancedBuilder {
    service: String,
    discover: Arc<dyn Discover>,
    config: ClientConfig,
    middleware: Vec<Arc<dyn Middleware<Error>>>,
    max_attempts: usize,
    eject_for: Duration,
    first_list_timeout: Duration,
    balancer: Arc<dyn Balancer>,
    connections_per_instance: usize,
    latency_decay: Duration,
}

impl BalancedBuilder {
    /// The balancer choosing among candidate instances. Default
    /// [`RoundRobin`].
    pub fn balancer(mut self, balancer: impl Balancer) -> BalancedBuilder {
        self.balancer = Arc::new(balancer);
        self
    }

    /// Connections opened to each instance (calls are spread over them
    /// round-robin). Default 1: one multiplexed connection carries any
    /// number of concurrent calls; more help only when one connection's
    /// reads and writes are the bottleneck.
    pub fn connections_per_instance(mut self, n: usize) -> BalancedBuilder {
        self.connections_per_instance = n.max(1);
        self
    }

    /// Time constant of the per-instance latency estimate (peak EWMA) that
    /// latency-aware balancers read. Default 10 s.
    pub fn latency_decay(mut self, decay: Duration) -> BalancedBuilder {
        self.latency_decay = decay;
        self
    }

    /// Settings for the per-instance clients (codec, frame limit, connect
    /// timeout, reconnect backoff) and the default call timeout, which
    /// covers every attempt of a call together.
    pub fn config(mut self, config: ClientConfig) -> BalancedBuilder {
        self.config = config;
        self
    }

    /// Set the default call timeout (`None`: no deadline).
    pub fn timeout(mut self, timeout: Option<Duration>) -> BalancedBuilder {
        self.config.timeout = timeout;
        self
    }

    /// Set the default codec.
    pub fn codec(mut self, codec: Codec) -> BalancedBuilder {
        self.config.codec = codec;
        self
    }

    /// Add a middleware to every instance's client (it sees each attempt);
    /// the first added runs outermost.
    pub fn layer(mut self, middleware: impl Middleware<Error>) -> BalancedBuilder {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Most instances one call is sent to (failover included). Default 3.
    pub fn max_attempts(mut self, attempts: usize) -> BalancedBuilder {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long an instance whose connection failed stays out of rotation
    /// (while another is available). Default 1 s.
    pub fn eject_for(mut self, duration: Duration) -> BalancedBuilder {
        self.eject_for = duration;
        self
    }

    /// How long a call waits for discovery's first list (a registry that
    /// cannot be reached at start-up) before failing with
    /// [`Error::NoInstances`]. Default 5 s; the call's deadline still
    /// applies.
    pub fn first_list_timeout(mut self, timeout: Duration) -> BalancedBuilder {
        self.first_list_timeout = timeout;
        self
    }

    /// The channel. Starts following discovery at once; must be called
    /// within a Tokio runtime.
    pub fn build(self) -> Balanced {
        let changes = self.discover.discover(&self.service);
        let (ready_tx, ready) = watch::channel(false);
        let inner = Arc::new(Inner {
            service: self.service,
            members: ArcSwap::from_pointee(Vec::new()),
            ready,
            balancer: self.balancer,
            connections_per_instance: self.connections_per_instance,
            latency_decay: self.latency_decay,
            config: self.config,
            middleware: self.middleware,
            max_attempts: self.max_attempts,
            eject_for: self.eject_for,
            first_list_timeout: self.first_list_timeout,
            epoch: Instant::now(),
            departed: Default::default(),
        });
        let follower = tokio::spawn(follow(Arc::downgrade(&inner), changes, ready_tx));
        Balanced { inner, _follower: Arc::new(AbortOnDrop(follower)) }
    }
}

/// A channel to every instance of one service, with round-robin balancing
/// and failover. Cheap to clone; clones share instances and connections.
/// Typed stubs work over it (`ArithClient::new(balanced)`).
#[derive(Clone)]
pub struct Balanced {
    inner: Arc<Inner>,
    _follower: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Inner {
    service: String,
    /// Sorted by instance id; replaced whole on every change batch.
    members: ArcSwap<Vec<Arc<Member>>>,
    /// True once discovery delivered its first list.
    ready: watch::Receiver<bool>,
    balancer: Arc<dyn Balancer>,
    connections_per_instance: usize,
    latency_decay: Duration,
    config: ClientConfig,
    middleware: Vec<Arc<dyn Middleware<Error>>>,
    max_attempts: usize,
    eject_for: Duration,
    first_list_timeout: Duration,
    /// Origin of the millisecond clock `Member::ejected_until` counts on.
    epoch: Instant,
    /// Stats of instances that left discovery (bounded).
    departed: std::sync::Mutex<std::collections::VecDeque<InstanceStats>>,
}

/// A filter over members: one preference level of [`Inner::pick`].
type Tier<'a> = dyn Fn(&Arc<Member>) -> bool + 'a;

/// Most departed instances whose stats are kept.
const MAX_DEPARTED: usize = 64;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn stats_of(m: &Member, listed: bool) -> InstanceStats {
    InstanceStats {
        instance: m.instance().clone(),
        answered: m.state.answered.load(Ordering::Relaxed),
        failed: m.state.failed.load(Ordering::Relaxed),
        listed,
    }
}

/// What one instance did for this channel: see [`Balanced::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStats {
    /// The instance, as discovery last described it.
    pub instance: Instance,
    /// Attempts it answered (with success or an application error).
    pub answered: u64,
    /// Attempts that failed in transport (could not connect, connection
    /// lost, refused, deadline).
    pub failed: u64,
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
            config: ClientConfig::default(),
            middleware: Vec::new(),
            max_attempts: 3,
            eject_for: Duration::from_secs(1),
            first_list_timeout: Duration::from_secs(5),
            balancer: Arc::new(RoundRobin::new()),
            connections_per_instance: 1,
            latency_decay: Duration::from_secs(10),
        }
    }

    /// The service this channel calls.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The instances known now, sorted by id.
    pub fn instances(&self) -> Vec<Instance> {
        self.inner.members.load().iter().map(|m| m.instance().clone()).collect()
    }

    /// Per instance: attempts answered and failed, for every instance this
    /// channel has known (listed ones first, sorted by id; then those that
    /// left, most recent last, at most 64).
    pub fn stats(&self) -> Vec<InstanceStats> {
        let mut out: Vec<InstanceStats> = self.inner.members.load().iter().map(|m| stats_of(m, true)).collect();
        out.extend(lock(&self.inner.departed).iter().cloned());
        out
    }

    /// Wait until discovery has delivered its first list (or `timeout`
    /// passes); returns the number of instances known.
    pub async fn ready(&self, timeout: Duration) -> usize {
        let mut ready = self.inner.ready.clone();
        let _ = tokio::time::timeout(timeout, ready.wait_for(|r| *r)).await;
        self.inner.members.load().len()
    }

    /// Call `method` (`Service.Method`) with `req`, in the default codec and
    /// timeout.
    pub async fn call<Req, Resp>(&self, method: &str, req: &Req) -> Result<Resp, Error>
    where
        Req: Encode + ?Sized,
        Resp: Decode,
    {
        call_typed(self, method.to_owned(), req, &CallOptions::default()).await
    }

    /// [`Balanced::call`] with per-call options.
    pub async fn call_with<Req, Resp>(&self, method: &str, req: &Req, opts: &CallOptions) -> Result<Resp, Error>
    where
        Req: Encode + ?Sized,
        Resp: Decode,
    {
        call_typed(self, method.to_owned(), req, opts).await
    }
}

impl Channel for Balanced {
    fn call_raw<'a>(&'a self, req: Request, opts: &'a CallOptions) -> BoxFuture<'a, Result<Response, Error>> {
        let inner = &self.inner;
        // One budget for every attempt: the call's timeout, capped by what is
        // left of the caller's own deadline inside a handler.
        let budget = crate::client::budget(opts.timeout.or(inner.config.timeout), Context::current().as_ref());
        let deadline = budget.and_then(|b| Instant::now().checked_add(b));
        Box::pin(async move {
            let attempts = inner.attempts(req, opts, deadline);
            match (deadline, budget) {
                (Some(at), Some(total)) => {
                    tokio::time::timeout_at(at, attempts).await.unwrap_or(Err(Error::DeadlineExceeded(total)))
                }
                _ => attempts.await,
            }
        })
    }

    fn default_codec(&self) -> Codec {
        self.inner.config.codec
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    async fn attempts(&self, req: Request, opts: &CallOptions, deadline: Option<Instant>) -> Result<Response, Error> {
        if !*self.ready.borrow() {
            let mut ready = self.ready.clone();
            // Also bounded by the caller's deadline (the timeout around us).
            if tokio::time::timeout(self.first_list_timeout, ready.wait_for(|r| *r)).await.is_err() {
                return Err(Error::NoInstances {
                    service: self.service.clone(),
                    reason: format!(
                        "discovery has listed nothing yet after {:?} (is the registry reachable?)",
                        self.first_list_timeout
                    ),
                });
            }
        }
        let mut tried: Vec<Arc<Member>> = Vec::new();
        let mut last_error: Option<Error> = None;
        while tried.len() < self.max_attempts {
            let Some(member) = self.pick(&tried, opts.key.as_deref()) else { break };
            let mut attempt = opts.clone();
            if let Some(at) = deadline {
                attempt.timeout = Some(at.saturating_duration_since(Instant::now()));
            }
            let began = Instant::now();
            let result = {
                let _outstanding = member.start();
                member.client().call_raw(req.clone(), &attempt).await
            };
            match result {
                Ok(response) => {
                    member.observe(began.elapsed());
                    member.state.answered.fetch_add(1, Ordering::Relaxed);
                    member.state.ejected_until.store(0, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(error @ Error::Status(_)) => {
                    // The instance answered; whether the application error
                    // may be retried elsewhere is `retry()`'s call.
                    member.observe(began.elapsed());
                    member.state.answered.fetch_add(1, Ordering::Relaxed);
                    if !(error.retry() == Retry::IfIdempotent && opts.idempotent) {
                        return Err(error);
                    }
                    tried.push(member);
                    last_error = Some(error);
                }
                Err(error) => {
                    member.state.failed.fetch_add(1, Ordering::Relaxed);
                    if matches!(error, Error::Connect { .. } | Error::ConnectionLost { .. } | Error::Refused { .. }) {
                        let until = self.now_ms().saturating_add(self.eject_for.as_millis() as u64);
                        member.state.ejected_until.store(until, Ordering::Relaxed);
                    }
                    let may_retry = match error.retry() {
                        Retry::Always => true,
                        Retry::IfIdempotent => opts.idempotent,
                        Retry::Never => false,
                    };
                    if !may_retry {
                        return Err(error);
                    }
                    tracing::debug!(service = %self.service, instance = %member.instance().address, %error,
                        "call failed; trying another instance");
                    tried.push(member);
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::NoInstances {
            service: self.service.clone(),
            reason: if self.members.load().is_empty() {
                "discovery lists none".to_owned()
            } else {
                "every instance was tried".to_owned()
            },
        }))
    }

    /// The balancer's choice among the instances not yet tried, preferring
    /// those that are healthy and in rotation; failing that, any untried
    /// one (an ejected instance may have come back, and trying beats
    /// failing).
    fn pick(&self, tried: &[Arc<Member>], key: Option<&str>) -> Option<Arc<Member>> {
        let members = self.members.load();
        if members.is_empty() {
            return None;
        }
        let now = self.now_ms();
        let untried = |m: &Arc<Member>| !tried.iter().any(|t| Arc::ptr_eq(t, m));
        let in_rotation = |m: &Arc<Member>| m.state.ejected_until.load(Ordering::Relaxed) <= now;
        // The balancer picks within the best non-empty tier, so shares stay
        // as it intends among the instances that may take the call.
        let best = |m: &Arc<Member>| untried(m) && in_rotation(m) && m.instance().healthy;
        let any_in_rotation = |m: &Arc<Member>| untried(m) && in_rotation(m);
        let tiers: [&Tier<'_>; 2] = [&best, &any_in_rotation];
        let info = PickInfo { key, attempt: tried.len() as u32 + 1 };
        for tier in tiers {
            let candidates: Vec<&Member> = members.iter().filter(|m| tier(m)).map(|m| &**m).collect();
            if !candidates.is_empty() {
                let chosen = self.balancer.pick(&candidates, &info);
                let id = candidates.get(chosen).unwrap_or(&candidates[0]).id();
                return members.iter().find(|m| m.id() == id).cloned();
            }
        }
        members.iter().filter(|m| untried(m)).min_by_key(|m| m.state.ejected_until.load(Ordering::Relaxed)).cloned()
    }

    fn member(&self, instance: Instance) -> Arc<Member> {
        let clients = (0..self.connections_per_instance)
            .map(|_| {
                let mut builder = Client::builder(instance.address.clone()).config(self.config.clone());
                for layer in &self.middleware {
                    builder = builder.layer_arc(Arc::clone(layer));
                }
                builder.build()
            })
            .collect();
        Arc::new(Member::new(instance, clients, Arc::new(member::MemberState::new(self.latency_decay))))
    }

    fn apply(&self, batch: Vec<Change>) {
        let current = self.members.load();
        let mut by_id: HashMap<String, Arc<Member>> =
            current.iter().map(|m| (m.id().to_owned(), Arc::clone(m))).collect();
        for change in batch {
            match change {
                Change::Added(instance) | Change::Updated(instance) => {
                    let keep = by_id.get(&instance.id).filter(|m| m.instance().address == instance.address);
                    let member = match keep {
                        // Same address: keep the clients (and connections) and
                        // what was learned; take the new metadata.
                        Some(old) => Arc::new(Member::new(instance, old.clients.clone(), Arc::clone(&old.state))),
                        None => self.member(instance),
                    };
                    by_id.insert(member.id().to_owned(), member);
                }
                Change::Removed(id) => {
                    if let Some(gone) = by_id.remove(&id) {
                        let mut departed = lock(&self.departed);
                        if departed.len() == MAX_DEPARTED {
                            departed.pop_front();
                        }
                        departed.push_back(stats_of(&gone, false));
                    }
                }
            }
        }
        let mut members: Vec<Arc<Member>> = by_id.into_values().collect();
        members.sort_by(|a, b| a.id().cmp(b.id()));
        tracing::debug!(service = %self.service, instances = members.len(), "instances changed");
        self.balancer.update(&members);
        self.members.store(Arc::new(members));
    }
}

/// Applies discovery's change batches until the channel or the source goes.
/// Holds only a weak reference, so dropping the last [`Balanced`] ends it.
async fn follow(inner: std::sync::Weak<Inner>, mut changes: Changes, ready: watch::Sender<bool>) {
    while let Some(batch) = changes.next().await {
        let Some(inner) = inner.upgrade() else { return };
        inner.apply(batch);
        ready.send_replace(true);
    }
    // The source stopped for good: keep the last list, and let callers
    // waiting for a first one fail now rather than at their deadline.
    ready.send_replace(true);
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

    #[tokio::test]
    async fn round_robin_prefers_healthy_and_in_rotation_members() {
        let balanced = Balanced::builder("S", Arc::new(Static::from_instances(vec![]))).build();
        let inner = &balanced.inner;
        inner.apply(vec![
            Change::Added(instance("a", true)),
            Change::Added(instance("b", true)),
            Change::Added(instance("c", false)),
        ]);
        let picks: Vec<String> = (0..6).map(|_| inner.pick(&[], None).expect("a member").id().to_owned()).collect();
        assert_eq!(picks.iter().filter(|id| *id == "a").count(), 3, "{picks:?}");
        assert_eq!(picks.iter().filter(|id| *id == "b").count(), 3, "{picks:?}");

        // Eject a: only b is healthy and in rotation.
        let a = inner.members.load().iter().find(|m| m.id() == "a").cloned().expect("a");
        a.state.ejected_until.store(u64::MAX, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(inner.pick(&[], None).expect("b").id(), "b");
        }
        // b tried already: the unhealthy but reachable c beats the ejected a.
        let b = inner.pick(&[], None).expect("b");
        assert_eq!(inner.pick(std::slice::from_ref(&b), None).expect("c").id(), "c");
        // Everything tried but a: the ejected a is still better than nothing.
        let c = inner.members.load().iter().find(|m| m.id() == "c").cloned().expect("c");
        assert_eq!(inner.pick(&[b.clone(), c.clone()], None).expect("a").id(), "a");
        assert!(inner.pick(&[a, b, c], None).is_none());
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
        assert_eq!(err.retry(), Retry::Always, "nothing was sent");
        assert!(began.elapsed() >= Duration::from_secs(2) && began.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn an_update_at_the_same_address_keeps_the_client() {
        let balanced = Balanced::builder("S", Arc::new(Static::from_instances(vec![]))).build();
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
}
