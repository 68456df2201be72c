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
//! | [`model`] | the JSON shapes: [`RegisterRequest`](model::RegisterRequest) (what servers send) and [`InstanceRecord`](model::InstanceRecord) (what the registry returns), validation |
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
use std::time::Duration;

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
pub const RETRY_BACKOFF: switchboard::backoff::Backoff =
    switchboard::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 2.0, 1.0);

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

/// A duration as Switchboard's command lines and registry URLs write it:
/// `500ms`, `3s`, `1m`, `1.5s`, `1m30s`, `2h`, or a bare number of seconds
/// (`10`, `0.5`).
///
/// Every duration flag of the `switchboard` command, the examples and the
/// benchmark harness, and the etcd URL's `?ttl=` and `?timeout=`, go
/// through this one function, so a duration means the same everywhere.
/// The grammar is [`humantime::parse_duration`]'s (units `ns`, `us`, `ms`,
/// `s`, `m`, `h`, `d` and their long forms; spans may be concatenated)
/// plus the bare number. The error names the text and says what was
/// expected.
///
/// ```
/// use std::time::Duration;
/// use switchboard_registry::parse_duration;
///
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
/// assert!(parse_duration("-1s").unwrap_err().contains("\"-1s\""));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bare = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let parsed = if bare { humantime::parse_duration(&format!("{text}s")) } else { humantime::parse_duration(text) };
    parsed.map_err(|e| format!("{text:?} is not a duration like 500ms, 10s, 1m or 1.5s ({e})"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_form_the_flags_and_urls_took() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("500ms", ms(500)),
            ("1500ms", ms(1500)),
            ("3s", ms(3000)),
            ("10s", ms(10_000)),
            ("0.3s", ms(300)),
            ("1m", ms(60_000)),
            ("2", ms(2000)),
            ("1.5", ms(1500)),
            ("0", Duration::ZERO),
            (" 6s ", ms(6000)),
            ("5 s", ms(5000)),
            // humantime's forms on top
            ("1m30s", ms(90_000)),
            ("2h", Duration::from_secs(7200)),
            ("250us", Duration::from_micros(250)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_durations_say_what_was_wrong() {
        for text in ["", "-1s", "fast", "1.", "10x", "ms", "1e3s", "99999999999999999999s"] {
            let error = parse_duration(text).expect_err(text);
            assert!(error.contains(&format!("{:?}", text.trim())), "{text:?}: {error}");
            assert!(error.contains("500ms"), "{text:?}: {error}");
        }
        let error = parse_duration("10x").unwrap_err();
        assert!(error.contains("unknown time unit \"x\""), "{error}");
    }
}
