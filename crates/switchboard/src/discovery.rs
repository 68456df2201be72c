//! Service discovery and registration: the traits registry backends
//! implement, and the types that cross them.
//!
//! Two sides, two traits:
//!
//! - A server announces itself through a [`Registrar`]: it hands over the
//!   [`Registration`]s it wants kept (one per service it serves) and the
//!   registrar keeps them registered (heartbeats, lease renewals,
//!   re-registering after the registry forgot them) until told to stop, then
//!   deregisters them. `ServerBuilder::registrar` wires this up.
//! - A caller learns where a service lives from a [`Discover`] source: an
//!   initial list of [`Instance`]s, then a stream of [`Change`]s (added,
//!   updated, removed). The balanced channel ([`crate::balance`]) consumes
//!   that stream.
//!
//! The built-in registry (`switchboard-registry`) and etcd implement both;
//! [`Static`] is a fixed list, for tests and for `--addr a,b,c`.
//!
//! A backend owns its cache: it diffs what it reads against what it told the
//! consumer before, so after a lost watch or a registry restart the consumer
//! sees exactly the instances that came and went ([`diff`] does the
//! arithmetic).
//!
//! ```
//! use switchboard::discovery::{Change, Discover, Instance, Static};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let source = Static::new(["127.0.0.1:9000", "127.0.0.1:9001"]);
//! let mut changes = source.discover("Arith");
//! let first = changes.next().await.expect("the initial list");
//! assert_eq!(first.len(), 2);
//! assert!(matches!(&first[0], Change::Added(i) if i.address == "127.0.0.1:9000"));
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use crate::batches::ConsumerGone;
use crate::batches::{BatchSender, Batches};
use crate::call::BoxFuture;

/// Descriptive data about an instance, for balancers and people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceMeta {
    /// Version of the software the instance runs (free form, default empty).
    pub version: String,
    /// Relative weight for weighted balancing (default 100; 0 means "send
    /// nothing new").
    pub weight: u32,
    /// Zone or rack, for zone-aware balancing (default empty).
    pub zone: String,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Free key/value pairs.
    pub kv: BTreeMap<String, String>,
}

impl Default for InstanceMeta {
    fn default() -> Self {
        InstanceMeta { version: String::new(), weight: 100, zone: String::new(), tags: Vec::new(), kv: BTreeMap::new() }
    }
}

/// One instance of a service, as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Unique within the service; the key changes refer to.
    pub id: String,
    /// `host:port` to dial.
    pub address: String,
    /// Version, weight, zone, tags, key/values.
    pub metadata: InstanceMeta,
    /// The methods it serves (`Service.Method`); empty when unknown.
    pub methods: Vec<String>,
    /// Whether the registry considers it alive. An unhealthy instance is
    /// still listed (say, the built-in registry's self-preservation kept it);
    /// balancers prefer healthy ones.
    pub healthy: bool,
}

impl Instance {
    /// A healthy instance with default metadata whose id is its address.
    pub fn new(address: impl Into<String>) -> Instance {
        let address = address.into();
        Instance { id: address.clone(), address, metadata: InstanceMeta::default(), methods: Vec::new(), healthy: true }
    }
}

/// One change to a service's set of instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new instance.
    Added(Instance),
    /// An instance already reported changed (address, metadata, methods or
    /// health).
    Updated(Instance),
    /// The instance with this id is gone.
    Removed(String),
}

/// The changes a [`Discover`] source reports for one service, in batches.
///
/// The first batch is the initial list (every instance as
/// [`Change::Added`]; empty if there is none yet); later batches are the
/// differences. A batch is applied as a whole. The source stops when this is
/// dropped. [`Changes::channel`] makes a pair.
pub type Changes = Batches<Change>;

/// The sending half of [`Changes`], held by a discovery source.
pub type ChangeSender = BatchSender<Change>;

/// A source of instances for services: a registry client.
pub trait Discover: Send + Sync + fmt::Debug + 'static {
    /// Start watching `service`. The source keeps its own cache, retries an
    /// unreachable registry with backoff and jitter (the consumer keeps its
    /// last list meanwhile), and after a reconnect re-lists and reports the
    /// difference. Watching stops when the returned [`Changes`] is dropped.
    ///
    /// Must be called within a Tokio runtime.
    fn discover(&self, service: &str) -> Changes;
}

/// What a server asks a registry to keep: one service it serves, at one
/// address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The service name (`Arith`).
    pub service: String,
    /// Instance id, unique within the service (by default the advertised
    /// address, so a server restarted on the same address replaces its
    /// earlier record instead of leaving a ghost).
    pub id: String,
    /// The advertised `host:port`.
    pub address: String,
    /// Version, weight, zone, tags, key/values.
    pub metadata: InstanceMeta,
    /// The methods it serves (`Arith.Multiply`), sorted.
    pub methods: Vec<String>,
}

/// Keeps a server's registrations alive in a registry.
pub trait Registrar: Send + Sync + fmt::Debug + 'static {
    /// Keep every registration in `wanted` registered until the sending side
    /// of `wanted` is dropped, then deregister them all and return.
    ///
    /// While running: register what is new, update what changed, deregister
    /// what was dropped from the list, renew (heartbeat or lease keepalive),
    /// and register again at once when the registry has forgotten an
    /// instance. Failures are retried with backoff and logged; the future
    /// never gives up while the sender is alive.
    fn keep_registered(&self, wanted: watch::Receiver<Vec<Registration>>) -> BoxFuture<'static, ()>;
}

/// The changes that turn `known` into `now`, and `known` updated to match.
///
/// An instance in `now` but not in `known` is [`Change::Added`]; in both but
/// different, [`Change::Updated`]; in `known` only, [`Change::Removed`].
/// Removals come first, then additions and updates in `now`'s order.
pub fn diff(known: &mut HashMap<String, Instance>, now: Vec<Instance>) -> Vec<Change> {
    let mut next: HashMap<String, Instance> = HashMap::with_capacity(now.len());
    let mut changes = Vec::new();
    let mut present = Vec::with_capacity(now.len());
    for instance in now {
        present.push(instance.id.clone());
        next.insert(instance.id.clone(), instance);
    }
    let mut removed: Vec<&String> = known.keys().filter(|id| !next.contains_key(*id)).collect();
    removed.sort();
    changes.extend(removed.into_iter().map(|id| Change::Removed(id.clone())));
    for id in present {
        let Some(instance) = next.get(&id) else { continue };
        match known.get(&id) {
            None => changes.push(Change::Added(instance.clone())),
            Some(old) if old != instance => changes.push(Change::Updated(instance.clone())),
            Some(_) => {}
        }
    }
    *known = next;
    changes
}

/// A fixed list of addresses: every service is served by all of them.
///
/// For tests, and for callers that know their servers (`--addr a,b,c`).
#[derive(Debug, Clone)]
pub struct Static {
    instances: Vec<Instance>,
}

impl Static {
    /// Instances at these addresses (ids are the addresses).
    pub fn new<I, S>(addresses: I) -> Static
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Static { instances: addresses.into_iter().map(Instance::new).collect() }
    }

    /// These instances, as given.
    pub fn from_instances(instances: Vec<Instance>) -> Static {
        Static { instances }
    }
}

impl Discover for Static {
    fn discover(&self, _service: &str) -> Changes {
        let (tx, rx) = Changes::channel(1);
        let batch = self.instances.iter().cloned().map(Change::Added).collect();
        // Capacity 1 and a fresh channel: the initial batch always fits.
        let _ = tx.try_send(batch);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, zone: &str) -> Instance {
        let mut i = Instance::new(format!("127.0.0.1:{}", 9000 + id.len()));
        i.id = id.to_owned();
        i.metadata.zone = zone.to_owned();
        i
    }

    #[test]
    fn diff_reports_added_updated_removed_and_updates_the_cache() {
        let mut known = HashMap::new();
        let first = diff(&mut known, vec![inst("a", "z1"), inst("b", "z1")]);
        assert_eq!(first, vec![Change::Added(inst("a", "z1")), Change::Added(inst("b", "z1"))]);
        assert_eq!(known.len(), 2);

        let second = diff(&mut known, vec![inst("b", "z2"), inst("c", "z1")]);
        assert_eq!(
            second,
            vec![Change::Removed("a".into()), Change::Updated(inst("b", "z2")), Change::Added(inst("c", "z1"))]
        );
        assert!(diff(&mut known, vec![inst("b", "z2"), inst("c", "z1")]).is_empty(), "no change, no event");
        assert_eq!(diff(&mut known, vec![]), vec![Change::Removed("b".into()), Change::Removed("c".into())]);
        assert!(known.is_empty());
    }

    #[tokio::test]
    async fn static_source_sends_one_initial_batch() {
        let mut changes = Static::new(["127.0.0.1:1", "127.0.0.1:2"]).discover("S");
        let batch = changes.next().await.expect("initial batch");
        assert_eq!(
            batch,
            vec![Change::Added(Instance::new("127.0.0.1:1")), Change::Added(Instance::new("127.0.0.1:2"))]
        );
        assert_eq!(changes.next().await, None, "a static source has nothing more to say");
    }
}
