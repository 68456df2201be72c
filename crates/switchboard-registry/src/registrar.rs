//! Server side of the built-in registry: keeps a server's registrations
//! alive ([`BuiltinRegistrar`], a [`Registrar`]).
//!
//! The loop, per server:
//!
//! 1. Ask the registry for its heartbeat interval (`GET /v1/status`) unless
//!    one was configured; fall back to 2 s if it cannot be reached.
//! 2. Register every wanted record; register again whatever changed (a
//!    service's methods after one was added at run time), deregister what
//!    the server no longer serves.
//! 3. Every interval (jittered down by up to 20%, so a fleet started together
//!    spreads out and no beat is ever later than the interval), heartbeat each
//!    record. A heartbeat answered "unknown" (the registry restarted, or
//!    evicted us during a partition) re-registers that record at once, so a
//!    restarted registry has every live server back within one interval.
//! 4. A record the registry could not be told about is retried at the next
//!    beat, with a warning logged on the first failure and an info line when
//!    it recovers: a server never drops out silently.
//! 5. A registration the registry *refuses* (a 4xx answer: the registry is
//!    full, the metadata is too large, the address cannot be dialled) will
//!    not succeed by being repeated at once. It is logged as a warning with
//!    the registry's own message (naming the limit and its value), and
//!    retried after a growing pause: one heartbeat interval, doubling up to
//!    [`REFUSED_RETRY_MAX`]; at once if the server's record changes. The
//!    refusal is logged again only if its reason changes; getting through
//!    is logged too.
//! 6. When the server shuts down (the `wanted` channel closes), deregister
//!    everything and return.

use std::collections::HashMap;
use std::time::Duration;

use switchboard::discovery::{Registrar, Registration};
use switchboard::BoxFuture;
use tokio::sync::watch;

use crate::client::{Heartbeat, RegistryClient};
use crate::model::RegisterRequest;

/// Heartbeat interval used when the registry cannot tell us its own.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(2);

/// Longest pause between two tries of a registration the registry refused.
pub const REFUSED_RETRY_MAX: Duration = Duration::from_secs(60);

/// Keeps registrations alive in the built-in registry.
#[derive(Debug, Clone)]
pub struct BuiltinRegistrar {
    client: RegistryClient,
    heartbeat: Option<Duration>,
    ttl: Option<Duration>,
}

impl BuiltinRegistrar {
    /// A registrar using `client`, with the registry's advertised heartbeat
    /// interval and default TTL.
    pub fn new(client: RegistryClient) -> BuiltinRegistrar {
        BuiltinRegistrar { client, heartbeat: None, ttl: None }
    }

    /// Heartbeat at this interval instead of the registry's.
    pub fn heartbeat(mut self, interval: Duration) -> BuiltinRegistrar {
        self.heartbeat = Some(interval);
        self
    }

    /// Ask for this TTL instead of the registry's default.
    pub fn ttl(mut self, ttl: Duration) -> BuiltinRegistrar {
        self.ttl = Some(ttl);
        self
    }
}

impl Registrar for BuiltinRegistrar {
    fn keep_registered(&self, wanted: watch::Receiver<Vec<Registration>>) -> BoxFuture<'static, ()> {
        Box::pin(Keeper::new(self.clone()).run(wanted))
    }
}

type Key = (String, String);

fn key(r: &Registration) -> Key {
    (r.service.clone(), r.id.clone())
}

/// A registration the registry refused, and when to try it again.
struct Refusal {
    /// The record refused: a changed record is tried at once.
    registration: Registration,
    /// The registry's code (`too_many_instances`, ...), to log a new reason.
    code: String,
    tries: u32,
    retry_at: tokio::time::Instant,
}

/// One running registration loop.
struct Keeper {
    config: BuiltinRegistrar,
    interval: Duration,
    /// What the registry holds, as far as we know.
    registered: HashMap<Key, Registration>,
    /// Records whose last exchange with the registry failed (logged once).
    failing: HashMap<Key, String>,
    /// Records the registry refused.
    refused: HashMap<Key, Refusal>,
}

impl Keeper {
    fn new(config: BuiltinRegistrar) -> Keeper {
        Keeper {
            config,
            interval: FALLBACK_HEARTBEAT,
            registered: HashMap::new(),
            failing: HashMap::new(),
            refused: HashMap::new(),
        }
    }

    /// Whether `r` was refused and its pause is not over.
    fn holding_back(&self, r: &Registration) -> bool {
        self.refused
            .get(&key(r))
            .is_some_and(|refusal| refusal.registration == *r && tokio::time::Instant::now() < refusal.retry_at)
    }

    async fn run(mut self, mut wanted: watch::Receiver<Vec<Registration>>) {
        let interval = match self.config.heartbeat {
            Some(interval) => interval,
            None => match self.config.client.status().await {
                Ok(status) => Duration::from_millis(status.heartbeat_ms.max(100)),
                Err(_) => FALLBACK_HEARTBEAT,
            },
        };
        self.interval = interval;
        let mut next_beat = tokio::time::Instant::now() + jittered(interval);
        let mut desired = wanted.borrow_and_update().clone();
        self.reconcile(&desired).await;
        loop {
            tokio::select! {
                changed = wanted.changed() => {
                    if changed.is_err() {
                        break; // the server is shutting down
                    }
                    desired = wanted.borrow_and_update().clone();
                    self.reconcile(&desired).await;
                }
                _ = tokio::time::sleep_until(next_beat) => {
                    next_beat = tokio::time::Instant::now() + jittered(interval);
                    self.beat(&desired).await;
                }
            }
        }
        self.withdraw().await;
    }

    /// Make the registry hold exactly `desired`.
    async fn reconcile(&mut self, desired: &[Registration]) {
        let desired_keys: Vec<Key> = desired.iter().map(key).collect();
        let stale: Vec<Key> = self.registered.keys().filter(|k| !desired_keys.contains(k)).cloned().collect();
        for k in stale {
            match self.config.client.deregister(&k.0, &k.1).await {
                Ok(_) => {
                    tracing::info!(service = %k.0, id = %k.1, "deregistered a service no longer served");
                    self.registered.remove(&k);
                }
                // Already gone from the registry: nothing left to withdraw.
                Err(crate::client::ClientError::Api(e)) if e.status == reqwest::StatusCode::NOT_FOUND => {
                    self.registered.remove(&k);
                }
                Err(e) => self.failed(&k, "deregister", &e),
            }
        }
        for r in desired {
            if self.registered.get(&key(r)) != Some(r) && !self.holding_back(r) {
                self.register(r).await;
            }
        }
        self.refused.retain(|k, _| desired_keys.contains(k));
    }

    async fn register(&mut self, r: &Registration) {
        let k = key(r);
        match self.config.client.register(&RegisterRequest::from_registration(r, self.config.ttl)).await {
            Ok(_) => {
                if let Some(refusal) = self.refused.remove(&k) {
                    tracing::info!(service = %r.service, id = %r.id, tries = refusal.tries,
                        "registered after the registry had refused it ({})", refusal.code);
                    self.failing.remove(&k);
                } else if let Some(error) = self.failing.remove(&k) {
                    tracing::info!(service = %r.service, id = %r.id, %error, "registered again after failures");
                } else {
                    tracing::info!(service = %r.service, id = %r.id, address = %r.address,
                        methods = r.methods.len(), "registered");
                }
                self.registered.insert(k, r.clone());
            }
            Err(crate::client::ClientError::Api(e)) if e.status.is_client_error() => {
                self.registered.remove(&k);
                self.refuse(r, e);
            }
            Err(e) => {
                // Not registered as far as we know: the next beat tries again.
                self.registered.remove(&k);
                self.failed(&k, "register", &e);
            }
        }
    }

    /// The registry refused `r`: log it (once per reason) and pause.
    fn refuse(&mut self, r: &Registration, error: crate::client::ApiError) {
        let k = key(r);
        let previous = self.refused.remove(&k).filter(|p| p.registration == *r);
        let tries = previous.as_ref().map_or(1, |p| p.tries.saturating_add(1));
        let pause = self.interval.saturating_mul(1 << (tries - 1).min(16)).clamp(self.interval, REFUSED_RETRY_MAX);
        let new_reason = previous.as_ref().is_none_or(|p| p.code != error.code);
        if new_reason {
            tracing::warn!(service = %r.service, id = %r.id, status = %error.status, code = %error.code,
                retry_in = ?pause, "the registry refused to register this instance: {}", error.message);
        } else {
            tracing::debug!(service = %r.service, id = %r.id, code = %error.code, tries, retry_in = ?pause,
                "the registry refused to register this instance again");
        }
        let retry_at = tokio::time::Instant::now() + pause;
        self.refused.insert(k, Refusal { registration: r.clone(), code: error.code, tries, retry_at });
    }

    /// Heartbeat every record; register again what the registry forgot or
    /// what never got registered.
    async fn beat(&mut self, desired: &[Registration]) {
        for r in desired {
            let k = key(r);
            if !self.registered.contains_key(&k) {
                if !self.holding_back(r) {
                    self.register(r).await;
                }
                continue;
            }
            match self.config.client.heartbeat(&r.service, &r.id).await {
                Ok(Heartbeat::Renewed) => {
                    if let Some(error) = self.failing.remove(&k) {
                        tracing::info!(service = %r.service, id = %r.id, %error, "heartbeats reach the registry again");
                    }
                }
                Ok(Heartbeat::Unknown) => {
                    tracing::info!(service = %r.service, id = %r.id,
                        "the registry does not know this instance (restarted, or evicted it); registering again");
                    self.registered.remove(&k);
                    self.register(r).await;
                }
                Err(e) => self.failed(&k, "heartbeat", &e),
            }
        }
    }

    fn failed(&mut self, k: &Key, what: &str, error: &crate::client::ClientError) {
        let error = error.to_string();
        if !self.failing.contains_key(k) {
            tracing::warn!(service = %k.0, id = %k.1, %error, "{what} failed; retrying every heartbeat interval");
        } else {
            tracing::debug!(service = %k.0, id = %k.1, %error, "{what} failed again");
        }
        self.failing.insert(k.clone(), error);
    }

    /// Deregister everything (graceful shutdown).
    async fn withdraw(&mut self) {
        for (service, id) in std::mem::take(&mut self.registered).into_keys() {
            match self.config.client.deregister(&service, &id).await {
                Ok(_) => tracing::info!(%service, %id, "deregistered"),
                Err(error) => {
                    tracing::warn!(%service, %id, %error, "could not deregister; the registry will expire the instance")
                }
            }
        }
    }
}

/// `interval` minus up to 20%: spreads a fleet's beats, never later than
/// the interval.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - 0.2 * fastrand::f64())
}
