//! # Switchboard registry
//!
//! Switchboard's registry backends behind one `--registry URL`:
//!
//! - the built-in service registry (`http://`): servers register their
//!   instances and heartbeat; callers list a service's instances and watch
//!   for changes with blocking queries. One process, in memory, no external
//!   service: the default for a single machine.
//! - etcd (`etcd://`, feature `etcd`): leases, watches that survive
//!   compaction; the choice for clusters (module `etcd`).
//!
//! ## Layout
//!
//! | module | what it holds |
//! |--------|---------------|
//! | [`model`] | the JSON shapes: [`RegisterRequest`](model::RegisterRequest) (what servers send) and [`Instance`](model::Instance) (what the registry returns), validation |
//! | [`config`] | [`RegistryConfig`]: heartbeat interval, TTL, sweep interval, self-preservation, limits, HTTP timeouts and connection cap |
//! | [`store`] | [`Store`]: the instances, the modification index, caps, blocking waits, TTL sweep and self-preservation; no HTTP |
//! | `store/changes.rs` | each service's change log and the bounded pages of changes since an index ([`Store::changes`]) |
//! | `store/keys.rs` | the store's config keys: `config_get`/`list`/`put`/`delete`, deletion records, per-prefix blocking waits, limits |
//! | [`server`] | [`RegistryServer`]: the axum HTTP/JSON API over a store, the fan-out cache, the background sweeper, graceful shutdown |
//! | `server/conn.rs` | the accept loop: hyper HTTP/1 connections with header, body and idle timeouts, the connection cap, the drain |
//! | [`client`] | [`RegistryClient`]: a typed client of that API |
//! | [`registrar`] | [`BuiltinRegistrar`]: keeps a server's registrations alive (heartbeats, re-register when forgotten) |
//! | [`discover`] | [`BuiltinDiscover`]: follows a service with blocking queries of its changes, cache, resets, backoff |
//! | [`keys`] | [`BuiltinConfigStore`]: config keys as a `switchboard::config::ConfigStore` (get, list, put, delete; watch with blocking queries, cache, diff, backoff) |
//! | `etcd` | the etcd backend (feature `etcd`): `EtcdOptions` (URL, key layout), `EtcdRegistrar` (leases), `EtcdDiscover` and `EtcdConfigStore` over one `watch::Follower` (list at a revision, diff, watch, resume, re-list on compaction) |
//!
//! [`from_url`] turns a `--registry` URL into the [`Backend`] (a discovery
//! source, a registrar and a config store) for it: `http://host:port` is the built-in
//! registry; `etcd://h1:2379,h2:2379` is etcd.
//!
//! How a registration flows: `PUT /v1/instances` → [`server`] reads the body
//! (64 KiB limit) and parses it → [`Store::register`] validates it, stores it
//! stamped with the current time and bumps the index → the index goes out on
//! a `tokio::sync::watch` channel → every blocking query waiting on that
//! service wakes and answers with what changed since its index (one page of
//! the service's change log, encoded once for all of them). Heartbeats renew the stamp;
//! the sweeper evicts instances whose TTL passed, unless self-preservation
//! holds. docs/REGISTRY.md describes the API and the trade-offs.

#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod discover;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod model;
pub mod registrar;
pub mod server;
pub mod store;

use std::sync::Arc;

use switchboard::config::ConfigStore;
use switchboard::discovery::{Discover, Registrar};

pub use client::{ClientError, RegistryClient};
pub use config::RegistryConfig;
pub use discover::BuiltinDiscover;
pub use keys::BuiltinConfigStore;
pub use registrar::BuiltinRegistrar;
pub use server::{RegistryHandle, RegistryServer, RegistryServerBuilder};
pub use store::{Store, StoreError, SweepReport};

/// How every backend here retries an unreachable registry: 100 ms doubling
/// to 5 s, each wait drawn anywhere between none and twice the step (full
/// jitter), so clients that lost the registry together do not return
/// together.
pub const RETRY_BACKOFF: switchboard::backoff::Backoff = switchboard::backoff::Backoff {
    initial: std::time::Duration::from_millis(100),
    max: std::time::Duration::from_secs(5),
    multiplier: 2.0,
    jitter: 1.0,
};

/// A registry backend: where callers discover instances, servers
/// register, and configuration is read and watched.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The discovery source (give it to `Balanced::builder`).
    pub discover: Arc<dyn Discover>,
    /// The registrar (give it to `ServerBuilder::registrar`).
    pub registrar: Arc<dyn Registrar>,
    /// Config keys: get, list, put, delete, watch.
    pub config: Arc<dyn ConfigStore>,
}

/// The backend a `--registry` URL names.
///
/// | URL | backend |
/// |-----|---------|
/// | `http://127.0.0.1:7700` | the built-in registry (`switchboard registry`) |
/// | `etcd://127.0.0.1:2379`, `etcd://h1:2379,h2:2379,h3:2379?ttl=6s` | etcd (feature `etcd`; options in `etcd::EtcdOptions`) |
///
/// Anything else is a [`ClientError::BadUrl`] naming the schemes supported.
///
/// ```
/// let backend = switchboard_registry::from_url("http://127.0.0.1:7700").unwrap();
/// # drop(backend);
/// assert!(switchboard_registry::from_url("ftp://127.0.0.1").is_err());
/// ```
pub fn from_url(url: &str) -> Result<Backend, ClientError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http") => {
            let client = RegistryClient::new(url)?;
            Ok(Backend {
                discover: Arc::new(BuiltinDiscover::new(client.clone())),
                registrar: Arc::new(BuiltinRegistrar::new(client.clone())),
                config: Arc::new(BuiltinConfigStore::new(client)),
            })
        }
        #[cfg(feature = "etcd")]
        Some("etcd") => match url.parse::<etcd::EtcdOptions>() {
            Ok(options) => Ok(options.backend()),
            Err(error) => Err(ClientError::BadUrl { url: url.to_owned(), reason: error.to_string() }),
        },
        #[cfg(not(feature = "etcd"))]
        Some("etcd") => Err(ClientError::BadUrl {
            url: url.to_owned(),
            reason: "this program was built without etcd support (the `etcd` feature of switchboard-registry)"
                .to_owned(),
        }),
        _ => Err(ClientError::BadUrl {
            url: url.to_owned(),
            reason: "unsupported registry; use http://HOST:PORT for the built-in registry or etcd://HOST:PORT[,HOST:PORT...] for etcd".to_owned(),
        }),
    }
}
