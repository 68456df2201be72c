//! The in-memory store: instances, the modification index, TTLs, and
//! self-preservation. Independent of HTTP; [`server`](crate::server) is a thin
//! layer over it.
//!
//! ## The index
//!
//! One global `u64`, starting at 1, goes up by one on every change (a new or
//! changed registration, a deregistration, an eviction, a health change).
//! Each service remembers the index of its own last change, and keeps it
//! after its last instance is gone (so a watcher sees the removal). Re-sending
//! an identical registration is not a change. A watcher that passes the
//! index it last saw to [`Store::wait_for_change`] cannot miss a change made
//! between two of its polls: the change raised the index above what it
//! passed, so the next wait returns at once.
//!
//! Each service also keeps a log of its changes by index (the `store/changes.rs`
//! submodule): every live instance at the index of its last change, and a
//! removal record for every instance removed. [`Store::changes`] answers
//! "what changed after index N" from it, in pages of bounded size, so a
//! watcher never needs the whole list again after its first listing.
//!
//! Config keys ([`Store::config_put`] and friends, in the `store/keys.rs`
//! submodule) share this index: every put that changes a value and every
//! delete of an existing key bumps it, so one counter orders everything
//! the registry holds.
//!
//! ## Liveness and self-preservation
//!
//! Every registration and heartbeat stamps the instance with
//! `tokio::time::Instant::now()`. [`Store::sweep`] (run every
//! [`RegistryConfig::sweep_interval`] by the server, or directly in tests)
//! finds the instances whose last heartbeat is older than their TTL and
//! evicts them, unless more than
//! [`RegistryConfig::self_preservation_share`] of all instances are expiring
//! at once (expired, or running out of TTL within
//! [`RegistryConfig::self_preservation_window`]). That pattern says the registry is the one cut off (a network
//! partition, a paused VM), and evicting would wipe out healthy instances;
//! so it keeps them all, marks the expired ones [`Health::Expired`], turns
//! self-preservation on and logs a warning. When enough heartbeats return
//! (the expiring share drops to or below the threshold), the next sweep evicts
//! what is still expired and turns self-preservation off.
//!
//! Only instances that have shown they are alive count, and only they are
//! kept: an instance counts once it has heartbeated (or re-registered) at
//! least once since it registered. Otherwise a handful of registrations that
//! never heartbeat (a crashed start-up loop, or an attacker) would make
//! "most instances stopped at once" true forever: self-preservation would
//! switch on, keep them, and never evict anything again. An instance that
//! never heartbeated is evicted when its TTL passes, whatever the mode.
//!
//! ## Limits
//!
//! [`RegistryConfig::max_instances`], [`max_instances_per_service`](RegistryConfig::max_instances_per_service)
//! and [`max_metadata_bytes`](RegistryConfig::max_metadata_bytes) bound what
//! registrations may add; past them [`Store::register`] refuses
//! ([`StoreError::TooManyInstances`], [`StoreError::ServiceFull`],
//! [`StoreError::MetadataTooLarge`]) and changes nothing. A registration of
//! an instance the store already holds is a heartbeat or an update, never
//! refused for the count. Addresses no caller can dial are refused unless
//! [`RegistryConfig::allow_unroutable_addresses`] is set
//! ([`model::unroutable`](crate::model::unroutable)).
//!
//! ```
//! use std::time::Duration;
//! use switchboard_registry::{RegistryConfig, Store, model::RegisterRequest};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let store = Store::new(RegistryConfig::default());
//! let index = store.register(RegisterRequest::new("Arith", "a1", "127.0.0.1:9000")).unwrap();
//! assert_eq!(store.instances("Arith").instances.len(), 1);
//!
//! tokio::time::advance(Duration::from_secs(7)).await; // past the 6 s TTL, no heartbeat
//! let report = store.sweep();
//! assert_eq!(report.evicted.len(), 1);
//! assert!(store.instances("Arith").index > index);
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard::config::ConfigError;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::RegistryConfig;
use crate::model::{
    Health, InstanceList, InstanceRecord, InvalidField, RegisterRequest, RegistryStatus, ServiceList, ServiceSummary,
};

mod changes;
mod keys;

pub(crate) use changes::Page;

/// Why a store operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The registration failed validation.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// No such instance: for a heartbeat this means "register again".
    #[error("unknown instance {id:?} of service {service:?}")]
    UnknownInstance {
        /// Service name asked for.
        service: String,
        /// Instance id asked for.
        id: String,
    },
    /// A new instance when the registry already holds
    /// [`RegistryConfig::max_instances`].
    #[error(
        "too many instances: the registry holds at most {limit} (max_instances); \
         deregister some or raise the limit"
    )]
    TooManyInstances {
        /// The limit.
        limit: usize,
    },
    /// A new instance of a service that already has
    /// [`RegistryConfig::max_instances_per_service`].
    #[error(
        "service {service:?} is full: it may have at most {limit} instances (max_instances_per_service); \
         deregister some or raise the limit"
    )]
    ServiceFull {
        /// The service.
        service: String,
        /// The limit.
        limit: usize,
    },
    /// A registration whose metadata and methods take more than
    /// [`RegistryConfig::max_metadata_bytes`].
    #[error(
        "metadata too large: `metadata` and `methods` take {bytes} bytes as JSON, \
         more than the limit of {limit} (max_metadata_bytes)"
    )]
    MetadataTooLarge {
        /// What the registration's metadata and methods take.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A config key, prefix or value was refused (see
    /// [`switchboard::config::validate_key`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A put of a new config key when the registry already holds
    /// [`RegistryConfig::max_config_keys`] of them.
    #[error("too many config keys: the registry holds at most {limit}; delete some first")]
    TooManyKeys {
        /// The limit.
        limit: usize,
    },
    /// A put that would make the config keys and values take more than
    /// [`RegistryConfig::max_config_bytes`] together.
    #[error("config keys and values would take more than {limit} bytes together; delete some first")]
    ConfigFull {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// What one [`Store::sweep`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Instances in the store before the sweep.
    pub total: usize,
    /// Of those, the ones that count for self-preservation: they have
    /// heartbeated (or re-registered) at least once since registering.
    pub counted: usize,
    /// Instances whose TTL had passed.
    pub expired: usize,
    /// Counted instances whose TTL had passed or runs out within the
    /// self-preservation window.
    pub expiring: usize,
    /// `(service, id)` of the instances removed.
    pub evicted: Vec<(String, String)>,
    /// Whether self-preservation is on after the sweep.
    pub self_preservation: bool,
}

#[derive(Debug)]
struct Entry {
    /// Shared with listings being encoded; a heartbeat copies it only if one is.
    instance: Arc<InstanceRecord>,
    ttl: Duration,
    last_seen: Instant,
    /// Index of the record's last change: its place in the service's log.
    changed: u64,
    /// The most bytes the record can take in a listing (its JSON, with room
    /// for any heartbeat time).
    listed_len: usize,
    /// Heartbeated or re-registered since it registered: only such
    /// instances count for (and are kept by) self-preservation.
    proven: bool,
}

#[derive(Debug)]
struct Service {
    /// Index of the last change to this service (kept when it becomes empty).
    index: u64,
    instances: BTreeMap<String, Entry>,
    /// The change log and removal records (see `store/changes.rs`).
    log: changes::Log,
}

#[derive(Debug)]
struct Inner {
    index: u64,
    services: BTreeMap<String, Service>,
    /// Instances over all services.
    instance_count: usize,
    self_preservation: bool,
    /// One channel per service that has waiters right now, carrying that
    /// service's index: a change wakes only the waiters of its own service.
    /// Created by the first waiter, removed by the last one to leave (see
    /// [`Subscription`]), so names nobody waits on cost nothing. Kept apart
    /// from `services` because a waiter may wait for a service that does not
    /// exist yet.
    watchers: BTreeMap<String, watch::Sender<u64>>,
    /// Removal records of every service, oldest first, bounded.
    removals: changes::Removals,
    /// The config keys, their deletion records and their waiters.
    keys: keys::Keys,
}

impl Inner {
    /// Bumps the global index and stamps `service` with it, waking the
    /// service's waiters (the global channel is [`Store::publish`]ed by the
    /// caller once the lock is released). The service must exist.
    fn bump(&mut self, service: &str) -> u64 {
        self.index += 1;
        let index = self.index;
        if let Some(s) = self.services.get_mut(service) {
            s.index = index;
        }
        if let Some(tx) = self.watchers.get(service) {
            // Only marks the channel changed and wakes the parked tasks; they
            // run (and take the lock) after this returns.
            tx.send_replace(index);
        }
        index
    }

    /// The index `wait_for_change` compares (the service's, or the global
    /// one for `None`), the global index, and the service's floor (a waiter
    /// from below it must re-list; 0 for `None`).
    fn look(&self, service: Option<&str>) -> (u64, u64, u64) {
        let (current, floor) = match service {
            Some(name) => match self.services.get(name) {
                Some(s) => (s.index, s.log.floor()),
                None => (0, self.removals.forgotten()),
            },
            None => (self.index, 0),
        };
        (current, self.index, floor)
    }
}

/// The registry's state. Cheap to share behind an `Arc`; every method takes
/// `&self`. The lock is a `std::sync::Mutex`, never held across an `.await`.
#[derive(Debug)]
pub struct Store {
    config: RegistryConfig,
    inner: Mutex<Inner>,
    /// Carries the global index; every change sends, and waiters for the
    /// global index (`service = None`) subscribe.
    changes: watch::Sender<u64>,
    /// When the store was created: for one default TTL after this, live
    /// instances may not have re-registered yet (see [`Store::warming_up`]).
    started: Instant,
    /// This life of the registry (see [`Store::epoch`]).
    epoch: u64,
}

/// A [`Store::wait_for_change`] waiter's receiver. Dropping it (the wait
/// returned, or its future was dropped) removes the service's channel if this
/// was its last waiter.
struct Subscription<'a> {
    store: &'a Store,
    service: Option<&'a str>,
    rx: watch::Receiver<u64>,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let Some(name) = self.service else { return };
        let mut inner = self.store.lock();
        // Waiters subscribe under this lock, so nobody joins between the count
        // and the removal; the one receiver left is this waiter's own.
        if inner.watchers.get(name).is_some_and(|tx| tx.receiver_count() <= 1) {
            inner.watchers.remove(name);
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The most bytes `instance` can take in a listing: its JSON now, plus room
/// for a heartbeat time of any length (health is `passing` or `expired`,
/// both 7 letters; nothing else changes without an update).
fn listed_len(instance: &InstanceRecord) -> usize {
    let digits = instance.last_heartbeat_ms.checked_ilog10().map_or(1, |d| d as usize + 1);
    crate::model::json_len(instance).saturating_add(20 - digits)
}

impl Store {
    /// An empty store; the index starts at 1.
    pub fn new(config: RegistryConfig) -> Self {
        let (changes, _) = watch::channel(1);
        let removals = changes::Removals::new(config.max_instances);
        Store {
            config,
            inner: Mutex::new(Inner {
                index: 1,
                services: BTreeMap::new(),
                instance_count: 0,
                self_preservation: false,
                watchers: BTreeMap::new(),
                removals,
                keys: keys::Keys::default(),
            }),
            changes,
            started: Instant::now(),
            // Below 2^53, so that JavaScript clients read it exactly.
            epoch: fastrand::u64(1..1 << 53),
        }
    }

    /// This life of the registry: a random number drawn when the store is
    /// created. A restarted registry has another one and counts its index
    /// from 1 again, so a watcher that passes back the epoch it saw with its
    /// index learns of the restart even when the new index has already
    /// passed the old one.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How much longer the store is warming up: for one default TTL after
    /// it starts, a live instance may simply not have heartbeated yet (a
    /// restarted registry learns who is alive from the heartbeats it answers
    /// "unknown", which make servers register again). Lists served meanwhile
    /// carry `warming_up_ms`; discovery clients add what they see but hold
    /// back removals until it is over. Zero once warm.
    pub fn warming_up(&self) -> Duration {
        self.config.default_ttl.saturating_sub(self.started.elapsed())
    }

    /// The configuration the store was built with.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in
        // a way later calls trip over, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, index: u64) {
        self.changes.send_replace(index);
    }

    /// Registers an instance, or updates it if `service`/`id` is known (which
    /// also counts as a heartbeat). Returns the global index afterwards; an
    /// identical re-registration leaves it unchanged.
    ///
    /// Refused, changing nothing: an invalid request, an address no caller
    /// can dial (unless allowed), metadata past
    /// [`RegistryConfig::max_metadata_bytes`], and a *new* instance past
    /// [`RegistryConfig::max_instances_per_service`] or
    /// [`RegistryConfig::max_instances`].
    pub fn register(&self, req: RegisterRequest) -> Result<u64, StoreError> {
        req.validate()?;
        if !self.config.allow_unroutable_addresses {
            if let Some(why) = crate::model::unroutable(&req.address) {
                let reason = format!(
                    "{:?} is {why}: callers cannot dial it; register the address callers reach the server at \
                     (or set allow_unroutable_addresses)",
                    req.address
                );
                return Err(InvalidField::new("address", reason).into());
            }
        }
        let bytes = crate::model::metadata_len(&req.metadata, &req.methods);
        if bytes > self.config.max_metadata_bytes {
            return Err(StoreError::MetadataTooLarge { bytes, limit: self.config.max_metadata_bytes });
        }
        let ttl = req.ttl_ms.map_or(self.config.default_ttl, Duration::from_millis);
        let now = Instant::now();
        let wall = unix_ms();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let existing = inner.services.get_mut(&req.service).and_then(|s| s.instances.get_mut(&req.id));
        if let Some(entry) = existing {
            let i = &entry.instance;
            let unchanged = i.address == req.address
                && i.metadata == req.metadata
                && i.methods == req.methods
                && entry.ttl == ttl
                && i.health == Health::Passing;
            entry.last_seen = now;
            entry.proven = true;
            if unchanged {
                Arc::make_mut(&mut entry.instance).last_heartbeat_ms = wall;
                return Ok(inner.index);
            }
            let i = Arc::make_mut(&mut entry.instance);
            i.last_heartbeat_ms = wall;
            i.address = req.address;
            i.metadata = req.metadata;
            i.methods = req.methods;
            i.ttl_ms = millis(ttl);
            i.health = Health::Passing;
            entry.listed_len = listed_len(i);
            entry.ttl = ttl;
        } else {
            let held = inner.services.get(&req.service).map_or(0, |s| s.instances.len());
            if held >= self.config.max_instances_per_service {
                let limit = self.config.max_instances_per_service;
                return Err(StoreError::ServiceFull { service: req.service, limit });
            }
            if inner.instance_count >= self.config.max_instances {
                return Err(StoreError::TooManyInstances { limit: self.config.max_instances });
            }
            let instance = InstanceRecord {
                service: req.service.clone(),
                id: req.id.clone(),
                address: req.address,
                metadata: req.metadata,
                methods: req.methods,
                ttl_ms: millis(ttl),
                registered_at_ms: wall,
                last_heartbeat_ms: wall,
                health: Health::Passing,
            };
            let entry = Entry {
                listed_len: listed_len(&instance),
                instance: Arc::new(instance),
                ttl,
                last_seen: now,
                changed: 0,
                proven: false,
            };
            let floor = inner.removals.forgotten();
            let service = inner.services.entry(req.service.clone()).or_insert_with(|| Service {
                index: 0,
                instances: BTreeMap::new(),
                log: changes::Log::new(floor),
            });
            service.instances.insert(req.id.clone(), entry);
            inner.instance_count += 1;
        }
        let index = inner.record_live(&req.service, &req.id);
        drop(guard);
        self.publish(index);
        Ok(index)
    }

    /// Removes an instance. Returns the global index afterwards.
    pub fn deregister(&self, service: &str, id: &str) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let removed = inner.services.get_mut(service).and_then(|s| s.instances.remove(id));
        let Some(entry) = removed else {
            return Err(StoreError::UnknownInstance { service: service.to_owned(), id: id.to_owned() });
        };
        let index = inner.record_removed(service, id, entry.changed);
        drop(inner);
        self.publish(index);
        Ok(index)
    }

    /// Renews an instance's TTL. [`StoreError::UnknownInstance`] means the
    /// registry does not know it (it was evicted, or the registry restarted):
    /// the caller should register again at once. Returns the global index
    /// (bumped only if the instance was marked expired and is passing again).
    pub fn heartbeat(&self, service: &str, id: &str) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let Some(entry) = inner.services.get_mut(service).and_then(|s| s.instances.get_mut(id)) else {
            return Err(StoreError::UnknownInstance { service: service.to_owned(), id: id.to_owned() });
        };
        entry.last_seen = Instant::now();
        entry.proven = true;
        let instance = Arc::make_mut(&mut entry.instance);
        instance.last_heartbeat_ms = unix_ms();
        if instance.health == Health::Passing {
            return Ok(inner.index);
        }
        instance.health = Health::Passing;
        let index = inner.record_live(service, id);
        drop(inner);
        self.publish(index);
        Ok(index)
    }

    /// The global modification index.
    pub fn index(&self) -> u64 {
        self.lock().index
    }

    /// The modification index of one service (0 if it was never registered).
    pub fn service_index(&self, service: &str) -> u64 {
        self.lock().services.get(service).map_or(0, |s| s.index)
    }

    /// Whether self-preservation is on.
    pub fn self_preservation(&self) -> bool {
        self.lock().self_preservation
    }

    /// How many instances the store holds, over all services.
    pub fn instance_count(&self) -> usize {
        self.lock().instance_count
    }

    /// Services with at least one instance, sorted by name.
    pub fn services(&self) -> ServiceList {
        let inner = self.lock();
        let services = inner
            .services
            .iter()
            .filter(|(_, s)| !s.instances.is_empty())
            .map(|(name, s)| ServiceSummary { name: name.clone(), instances: s.instances.len(), index: s.index })
            .collect();
        ServiceList {
            index: inner.index,
            services,
            self_preservation: inner.self_preservation,
            warming_up_ms: millis(self.warming_up()),
        }
    }

    /// One service's whole list of instances, sorted by id, with the
    /// service's index. An unknown service gives an empty list and index 0.
    /// (The API lists services with [`Store::changes`], in bounded pages.)
    pub fn instances(&self, service: &str) -> InstanceList {
        let warming_up_ms = millis(self.warming_up());
        let inner = self.lock();
        match inner.services.get(service) {
            Some(s) => InstanceList {
                index: s.index,
                instances: s.instances.values().map(|e| InstanceRecord::clone(&e.instance)).collect(),
                warming_up_ms,
            },
            None => InstanceList { index: 0, instances: Vec::new(), warming_up_ms },
        }
    }

    /// Counters for `/v1/status`.
    pub fn status(&self) -> RegistryStatus {
        let inner = self.lock();
        RegistryStatus {
            index: inner.index,
            instances: inner.instance_count,
            self_preservation: inner.self_preservation,
            ttl_ms: millis(self.config.default_ttl),
            heartbeat_ms: millis(self.config.heartbeat_interval),
            warming_up_ms: millis(self.warming_up()),
        }
    }

    /// Waits until the relevant index (the service's, or the global one for
    /// `None`) is greater than `after_index`, or `timeout` passes; returns the
    /// relevant index at that moment (equal to `after_index` on timeout).
    ///
    /// Returns at once, too, when the caller must re-list rather than wait:
    /// `after_index` is greater than the global index (it comes from an
    /// earlier life of the registry, which counted from 1 again), or it is
    /// older than the removal records the service still keeps (see
    /// [`Store::changes`]).
    ///
    /// Only a change to `service` wakes a waiter for `service` (a waiter for
    /// `None` wakes on every change).
    pub async fn wait_for_change(&self, service: Option<&str>, after_index: u64, timeout: Duration) -> u64 {
        self.wait_for_change_parked(service, after_index, timeout).await.0
    }

    /// [`Store::wait_for_change`], and whether it had to wait (it did not
    /// return at once).
    pub(crate) async fn wait_for_change_parked(
        &self,
        service: Option<&str>,
        after_index: u64,
        timeout: Duration,
    ) -> (u64, bool) {
        let deadline = Instant::now() + timeout;
        // Subscribe under the same lock as the first look (every bump holds
        // it too), so a change between the look and the wait still wakes us.
        let (rx, mut seen) = {
            let mut inner = self.lock();
            let rx = match service {
                Some(name) => inner.watchers.entry(name.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe(),
                None => self.changes.subscribe(),
            };
            (rx, inner.look(service))
        };
        let mut sub = Subscription { store: self, service, rx };
        let mut parked = false;
        loop {
            let (current, global, floor) = seen;
            if current > after_index || after_index > global || (after_index > 0 && after_index < floor) {
                return (current, parked);
            }
            parked = true;
            match tokio::time::timeout_at(deadline, sub.rx.changed()).await {
                Ok(Ok(())) => seen = self.lock().look(service), // past `after_index` yet?
                Ok(Err(_)) | Err(_) => return (current, parked),
            }
        }
    }

    /// How many services have a waiter right now (for tests).
    #[cfg(test)]
    fn watched_services(&self) -> usize {
        self.lock().watchers.len()
    }

    /// Evicts instances whose TTL passed, unless self-preservation applies
    /// (see the module docs). Called by the server's background task.
    pub fn sweep(&self) -> SweepReport {
        let now = Instant::now();
        let mut inner = self.lock();
        let total = inner.instance_count;
        let window = self.config.self_preservation_window;
        // (service, id, proven) of every instance whose TTL passed.
        let mut expired: Vec<(String, String, bool)> = Vec::new();
        let (mut counted, mut counted_expired, mut expiring) = (0usize, 0usize, 0usize);
        for (name, service) in &inner.services {
            for (id, e) in &service.instances {
                let silent = now.saturating_duration_since(e.last_seen);
                let gone = silent > e.ttl;
                if gone {
                    expired.push((name.clone(), id.clone(), e.proven));
                }
                if e.proven {
                    counted += 1;
                    counted_expired += usize::from(gone);
                    if silent > e.ttl.saturating_sub(window.min(e.ttl / 2)) {
                        expiring += 1;
                    }
                }
            }
        }
        let preserve = self.config.self_preservation
            && counted >= self.config.self_preservation_min_instances
            && counted_expired > 0
            && expiring as f64 > self.config.self_preservation_share * counted as f64;
        if preserve && !inner.self_preservation {
            tracing::warn!(
                target: "switchboard_registry",
                expired = counted_expired,
                expiring,
                counted,
                share = self.config.self_preservation_share,
                "self-preservation on: too many instances stopped heartbeating at once; \
                 the registry assumes it is cut off and stops evicting"
            );
        } else if !preserve && inner.self_preservation {
            tracing::info!(
                target: "switchboard_registry",
                expired = expired.len(),
                total,
                "self-preservation off: heartbeats are back; evicting expired instances again"
            );
        }
        inner.self_preservation = preserve;
        let mut last_index = None;
        let mut evicted = Vec::new();
        for (service, id, proven) in &expired {
            if preserve && *proven {
                // Kept, and listed as expired.
                let newly = inner
                    .services
                    .get_mut(service)
                    .and_then(|s| s.instances.get_mut(id))
                    .filter(|e| e.instance.health == Health::Passing)
                    .map(|e| Arc::make_mut(&mut e.instance).health = Health::Expired)
                    .is_some();
                if newly {
                    last_index = Some(inner.record_live(service, id));
                }
                continue;
            }
            let Some(entry) = inner.services.get_mut(service).and_then(|s| s.instances.remove(id)) else {
                continue;
            };
            if *proven {
                tracing::info!(target: "switchboard_registry", %service, %id, "evicted: TTL passed without a heartbeat");
            } else {
                tracing::info!(target: "switchboard_registry", %service, %id,
                    "evicted: TTL passed and it never heartbeated since it registered");
            }
            last_index = Some(inner.record_removed(service, id, entry.changed));
            evicted.push((service.clone(), id.clone()));
        }
        let report = SweepReport {
            total,
            counted,
            expired: expired.len(),
            expiring,
            evicted,
            self_preservation: inner.self_preservation,
        };
        drop(inner);
        if let Some(index) = last_index {
            self.publish(index);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_service_channel_lives_only_while_someone_waits_on_it() {
        let store = Arc::new(Store::new(RegistryConfig::default()));
        let index = store.register(RegisterRequest::new("A", "a", "127.0.0.1:1")).unwrap();
        let wait = |service: Option<&'static str>, after: u64| {
            let store = store.clone();
            tokio::spawn(async move { store.wait_for_change(service, after, Duration::from_secs(60)).await })
        };

        // Two waiters on A share one channel; a global waiter needs none.
        let (w1, w2, global) = (wait(Some("A"), index), wait(Some("A"), index), wait(None, index));
        // A waiter on a service nobody registered yet gets one too.
        let later = wait(Some("B"), index);
        tokio::task::yield_now().await;
        assert_eq!(store.watched_services(), 2);

        // A change to A wakes its waiters (and the global one), not B's; the
        // channel goes when its last waiter returns.
        let changed = store.register(RegisterRequest::new("A", "a2", "127.0.0.1:2")).unwrap();
        assert_eq!((w1.await.unwrap(), w2.await.unwrap(), global.await.unwrap()), (changed, changed, changed));
        tokio::task::yield_now().await;
        assert!(!later.is_finished());
        assert_eq!(store.watched_services(), 1);

        // A waiter whose future is dropped (a client that went away) leaves no channel behind...
        later.abort();
        assert!(later.await.unwrap_err().is_cancelled());
        assert_eq!(store.watched_services(), 0);
        // ...nor does one that timed out, or one that returned at once.
        assert_eq!(store.wait_for_change(Some("C"), changed, Duration::from_secs(1)).await, 0);
        assert_eq!(store.wait_for_change(Some("A"), index, Duration::from_secs(1)).await, changed);
        assert_eq!(store.watched_services(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_wakes_the_waiters_of_the_services_it_changes() {
        let store = Arc::new(Store::new(RegistryConfig::default()));
        let mut short = RegisterRequest::new("A", "a", "127.0.0.1:1");
        short.ttl_ms = Some(1000);
        store.register(short).unwrap();
        let mut long = RegisterRequest::new("B", "b", "127.0.0.1:2");
        long.ttl_ms = Some(3_600_000);
        store.register(long).unwrap();
        let (a, b) = (store.service_index("A"), store.service_index("B"));
        let wait = |service: &'static str, after: u64| {
            let store = store.clone();
            tokio::spawn(async move { store.wait_for_change(Some(service), after, Duration::from_secs(60)).await })
        };
        let (wa, wb) = (wait("A", a), wait("B", b));
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(store.sweep().evicted, [("A".to_owned(), "a".to_owned())]);
        assert_eq!(wa.await.unwrap(), store.service_index("A"));
        tokio::task::yield_now().await;
        assert!(!wb.is_finished(), "B did not change");
        wb.abort();
    }
}
