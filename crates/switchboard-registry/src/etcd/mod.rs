//! etcd as the registry, for clusters (feature `etcd`).
//!
//! When one machine is not enough, the registry should be a proven
//! distributed store rather than our own: etcd, selected with the same
//! `--registry` flag as the built-in registry,
//! `etcd://127.0.0.1:2379` or `etcd://h1:2379,h2:2379,h3:2379`.
//!
//! ## Key layout
//!
//! | key | value |
//! |-----|-------|
//! | `/switchboard/services/<service>/<instance-id>` | the instance record as JSON (the built-in registry's [`RegisterRequest`]: service, id, address, metadata, methods), attached to the server's lease |
//! | `/switchboard/config/<key>` | a config value, UTF-8 text ([`EtcdConfigStore`]) |
//!
//! `?root=/other` in the URL moves everything under another root, so
//! several installations can share one etcd.
//!
//! ## The three parts
//!
//! - [`EtcdRegistrar`] (servers): one lease per server, TTL from the same
//!   setting as the built-in registry's (6 s by default, `?ttl=` in the
//!   URL), kept alive at a third of the TTL. A lost lease is replaced and
//!   every record put again, with a log line saying so.
//! - [`EtcdDiscover`] (callers): list a service's prefix at one revision,
//!   then watch from that revision + 1; on a compacted revision or any watch
//!   failure, list again, diff against the cache, watch again. See
//!   [`watch`] for the recipe.
//! - [`EtcdConfigStore`]: the [`ConfigStore`](switchboard::config::ConfigStore)
//!   trait over `/switchboard/config/`, watched with the same recipe.
//!
//! Every request carries etcd's require-leader flag: a member cut off from
//! the cluster's leader refuses instead of serving stale data, and the
//! client moves to another member.
//!
//! ```no_run
//! use switchboard_registry::etcd::EtcdOptions;
//!
//! let options: EtcdOptions = "etcd://h1:2379,h2:2379,h3:2379?ttl=10s".parse().unwrap();
//! assert_eq!(options.endpoints.len(), 3);
//! let backend = options.backend();
//! # drop(backend);
//! ```

mod conn;
mod discover;
mod keys;
mod registrar;
pub mod watch;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use conn::{EtcdConnection, EtcdError};
pub use discover::EtcdDiscover;
pub use keys::EtcdConfigStore;
pub use registrar::EtcdRegistrar;

use crate::model::RegisterRequest;
use crate::{parse_duration, Backend};

/// The default root of every key (`?root=` in the URL changes it).
pub const DEFAULT_ROOT: &str = "/switchboard";

/// Where and how to reach etcd, parsed from an `etcd://` URL.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EtcdOptions {
    /// `host:port` of each member.
    pub endpoints: Vec<String>,
    /// Root of every key (default [`DEFAULT_ROOT`]).
    pub root: String,
    /// Lease TTL for registrations (default: the built-in registry's
    /// default TTL, 6 s). etcd counts leases in whole seconds, so this is
    /// rounded up.
    pub ttl: Duration,
    /// Longest wait for one request (default 5 s).
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["127.0.0.1:2379".to_owned()],
            root: DEFAULT_ROOT.to_owned(),
            ttl: crate::RegistryConfig::default().default_ttl,
            request_timeout: Duration::from_secs(5),
        }
    }
}

switchboard::__setters!(EtcdOptions {
    endpoints: Vec<String>,
    root: String,
    ttl: Duration,
    request_timeout: Duration
});

impl FromStr for EtcdOptions {
    type Err = EtcdError;

    /// `etcd://HOST:PORT[,HOST:PORT...][/][?ttl=D&root=/R&timeout=D]`.
    fn from_str(url: &str) -> Result<Self, EtcdError> {
        let bad = |reason: String| EtcdError::BadUrl { url: url.to_owned(), reason };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("etcd") => rest,
            _ => return Err(bad("must start with etcd://".to_owned())),
        };
        let (hosts, query) = match rest.split_once('?') {
            Some((hosts, query)) => (hosts, Some(query)),
            None => (rest, None),
        };
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        let mut options = EtcdOptions { endpoints: Vec::new(), ..EtcdOptions::default() };
        for host in hosts.split(',') {
            let host = host.trim();
            let valid = match host.rsplit_once(':') {
                Some((name, port)) => !name.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
                None => false,
            };
            if !valid || host.contains('/') {
                return Err(bad(format!("{host:?} is not HOST:PORT")));
            }
            options.endpoints.push(host.to_owned());
        }
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "ttl" => options.ttl = parse_duration(value).map_err(|e| bad(format!("ttl: {e}")))?,
                "timeout" => {
                    options.request_timeout = parse_duration(value).map_err(|e| bad(format!("timeout: {e}")))?
                }
                "root" => {
                    if !value.starts_with('/') || value.ends_with('/') || value.contains("//") {
                        return Err(bad(format!("root {value:?} must start with '/' and not end with one")));
                    }
                    options.root = value.to_owned();
                }
                other => return Err(bad(format!("unknown option {other:?} (known: ttl, timeout, root)"))),
            }
        }
        if options.ttl < Duration::from_secs(1) || options.ttl > crate::model::MAX_TTL {
            return Err(bad(format!("ttl {:?} is out of range 1s..=1h", options.ttl)));
        }
        Ok(options)
    }
}

impl EtcdOptions {
    /// The prefix of every instance record: `<root>/services/`.
    pub fn services_prefix(&self) -> String {
        format!("{}/services/", self.root)
    }

    /// The prefix of one service's records: `<root>/services/<service>/`.
    pub fn service_prefix(&self, service: &str) -> String {
        format!("{}/services/{service}/", self.root)
    }

    /// The key of one instance record.
    pub fn instance_key(&self, service: &str, id: &str) -> String {
        format!("{}/services/{service}/{id}", self.root)
    }

    /// The prefix of config keys: `<root>/config/`.
    pub fn config_prefix(&self) -> String {
        format!("{}/config/", self.root)
    }

    /// The lease TTL in etcd's whole seconds (rounded up, at least 1).
    pub fn ttl_secs(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
    }

    /// A discovery source, registrar and config store sharing one
    /// connection (made lazily: nothing is dialled until first use, and an
    /// unreachable etcd is retried in the background).
    pub fn backend(self) -> Backend {
        let conn = EtcdConnection::new(self);
        Backend {
            discover: Arc::new(EtcdDiscover::new(conn.clone())),
            registrar: Arc::new(EtcdRegistrar::new(conn.clone())),
            config: Arc::new(EtcdConfigStore::new(conn)),
        }
    }
}

/// One instance record found under `<root>/services/`, with its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    /// The record.
    pub record: RegisterRequest,
    /// The lease it is attached to (0: none).
    pub lease: i64,
    /// The revision it was last written at.
    pub mod_revision: i64,
}

/// Every service registered in etcd, with its records, for `switchboard
/// list`. Records that do not parse are skipped with a warning.
pub async fn services(conn: &EtcdConnection) -> Result<Vec<(String, Vec<StoredInstance>)>, EtcdError> {
    let prefix = conn.options().services_prefix();
    let listing = watch::list(conn, &prefix).await?;
    let mut services: std::collections::BTreeMap<String, Vec<StoredInstance>> = Default::default();
    for kv in listing.kvs {
        match discover::parse_record(&kv.key, &kv.value) {
            Ok(record) => services.entry(record.service.clone()).or_default().push(StoredInstance {
                record,
                lease: kv.lease,
                mod_revision: kv.mod_revision,
            }),
            Err(reason) => tracing::warn!(key = %format!("{prefix}{}", kv.key), %reason, "skipping a bad record"),
        }
    }
    Ok(services.into_iter().collect())
}

/// The remaining TTL of a lease, or `None` if etcd no longer has it.
pub async fn lease_remaining(conn: &EtcdConnection, lease: i64) -> Result<Option<Duration>, EtcdError> {
    let answer = conn.request(|mut c| async move { c.lease_time_to_live(lease, None).await }).await?;
    Ok(u64::try_from(answer.ttl()).ok().map(Duration::from_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o: EtcdOptions = "etcd://127.0.0.1:2379".parse().unwrap();
        assert_eq!(o.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(o.ttl, Duration::from_secs(6));
        assert_eq!(o.instance_key("Arith", "127.0.0.1:9000"), "/switchboard/services/Arith/127.0.0.1:9000");
        let o: EtcdOptions = "etcd://h1:2379,h2:2379, h3:2379/?ttl=10s&root=/t1&timeout=2s".parse().unwrap();
        assert_eq!(o.endpoints, ["h1:2379", "h2:2379", "h3:2379"]);
        assert_eq!((o.ttl, o.request_timeout), (Duration::from_secs(10), Duration::from_secs(2)));
        assert_eq!(o.config_prefix(), "/t1/config/");
        let o: EtcdOptions = "etcd://[::1]:2379?ttl=1500ms".parse().unwrap();
        assert_eq!(o.ttl_secs(), 2);
        for bad in [
            "http://h:1",
            "etcd://",
            "etcd://h",
            "etcd://h:0",
            "etcd://h:99999",
            "etcd://h:1?ttl=0s",
            "etcd://h:1?ttl=2h",
            "etcd://h:1?root=x",
            "etcd://h:1?bogus=1",
            "etcd://h:1/path",
        ] {
            assert!(bad.parse::<EtcdOptions>().is_err(), "{bad}");
        }
    }
}
