//! Configuration keys kept in the registry: the [`ConfigStore`] trait both
//! registry backends implement, and the types that cross it.
//!
//! Beside the instances of services, a registry holds plain keys: small
//! text values (JSON, TOML, a number) that a fleet reads and watches, such
//! as routing rules or which plugins to load. The built-in registry keeps
//! them under `/v1/config/`, etcd under `/switchboard/config/`; through this
//! trait a caller cannot tell which one it talks to.
//!
//! Keys are relative to that root: `routing/Arith`, never
//! `/switchboard/config/routing/Arith`. [`validate_key`] says what a key may
//! look like, and every backend applies it before touching the store.
//!
//! Watching works like discovery ([`crate::discovery`]): the first batch is
//! every entry under the prefix (as [`ConfigEvent::Put`]), later batches are
//! the changes. A backend that loses its watch (the registry restarted, etcd
//! compacted the revision it was watching from) lists again and diffs
//! against what it reported before ([`diff_entries`]), so the consumer sees
//! exactly the keys that changed or went away meanwhile, never a gap.
//!
//! ```
//! use std::collections::BTreeMap;
//! use switchboard::config::{diff_entries, ConfigEntry, ConfigEvent};
//!
//! let mut known = BTreeMap::new();
//! let first = diff_entries(&mut known, vec![ConfigEntry::new("routing/Arith", "{}", 3)]);
//! assert!(matches!(&first[..], [ConfigEvent::Put(e)] if e.key == "routing/Arith"));
//! let second = diff_entries(&mut known, vec![]);
//! assert_eq!(second, vec![ConfigEvent::Deleted { key: "routing/Arith".into() }]);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use crate::batches::{BatchSender, Batches};

use crate::call::BoxFuture;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Largest value, in bytes (etcd's default request limit is 1.5 MiB; config
/// values are meant to be small).
pub const MAX_VALUE_LEN: usize = 512 * 1024;

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The key, relative to the config root (`routing/Arith`).
    pub key: String,
    /// The value, UTF-8 text.
    pub value: String,
    /// When the key last changed, in the backend's own counter (etcd's
    /// `mod_revision`, the built-in registry's index). Only comparable
    /// within one backend.
    pub revision: u64,
}

impl ConfigEntry {
    /// An entry.
    pub fn new(key: impl Into<String>, value: impl Into<String>, revision: u64) -> ConfigEntry {
        ConfigEntry { key: key.into(), value: value.into(), revision }
    }
}

/// One change to the keys under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigEvent {
    /// The key was set (created or changed).
    Put(ConfigEntry),
    /// The key was deleted.
    Deleted {
        /// The key that is gone.
        key: String,
    },
}

impl ConfigEvent {
    /// The key this event is about.
    pub fn key(&self) -> &str {
        match self {
            ConfigEvent::Put(entry) => &entry.key,
            ConfigEvent::Deleted { key } => key,
        }
    }
}

/// Why a config operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The key (or prefix) is not one a store accepts; see [`validate_key`].
    #[error("invalid config key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The value is larger than [`MAX_VALUE_LEN`].
    #[error("config value of {len} bytes is larger than the limit of {MAX_VALUE_LEN}")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// The store could not be reached, or did not answer in time. Worth
    /// retrying.
    #[error("config store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with an error, or with data that is not a config
    /// entry (a value that is not UTF-8, say).
    #[error("config store error: {0}")]
    Backend(String),
}

impl ConfigError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConfigError::Unavailable(_))
    }
}

/// Every entry under a prefix, read at one point in time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigSnapshot {
    /// The entries, sorted by key.
    pub entries: Vec<ConfigEntry>,
    /// The backend's revision (or index) the list was read at.
    pub revision: u64,
}

/// The events a [`ConfigStore::watch`] reports, in batches.
///
/// The first batch is the current content of the prefix (every entry as
/// [`ConfigEvent::Put`], possibly none); later batches are changes, applied
/// as a whole. The watch stops when this is dropped.
/// [`ConfigWatch::channel`] makes a pair.
pub type ConfigWatch = Batches<ConfigEvent>;

/// The sending half of a [`ConfigWatch`], held by a backend.
pub type ConfigEventSender = BatchSender<ConfigEvent>;

/// Plain keys in a registry: get, list, put, delete and watch.
///
/// Implemented by the built-in registry's client and by the etcd backend
/// (`switchboard-registry`), so configuration code works on either.
pub trait ConfigStore: Send + Sync + fmt::Debug + 'static {
    /// The entry at `key`, or `None` if there is none.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ConfigEntry>, ConfigError>>;

    /// Every entry whose key starts with `prefix` (`""` for all), read at one
    /// revision.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<ConfigSnapshot, ConfigError>>;

    /// Set `key` to `value`; returns the revision of the change.
    fn put<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<u64, ConfigError>>;

    /// Delete `key`; returns whether it existed.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, ConfigError>>;

    /// Follow every key under `prefix`. The backend retries an unreachable
    /// store with backoff and jitter (the consumer keeps what it has
    /// meanwhile), and after any lost watch lists again and reports the
    /// difference. Must be called within a Tokio runtime.
    fn watch(&self, prefix: &str) -> ConfigWatch;
}

/// Checks a key (`prefix: false`) or a prefix to list or watch (`prefix:
/// true`).
///
/// A key is 1 to [`MAX_KEY_LEN`] bytes of `/`-separated segments, none of
/// them empty, `.` or `..`, with no control characters and no leading or
/// trailing `/`. A prefix may also be empty (everything) or end with `/`.
///
/// ```
/// use switchboard::config::validate_key;
/// assert!(validate_key("routing/Arith", false).is_ok());
/// assert!(validate_key("routing/", true).is_ok());
/// assert!(validate_key("/etc/passwd", false).is_err());
/// assert!(validate_key("a/../b", false).is_err());
/// ```
pub fn validate_key(key: &str, prefix: bool) -> Result<(), ConfigError> {
    let bad = |reason: &str| Err(ConfigError::InvalidKey { key: key.to_owned(), reason: reason.to_owned() });
    if key.len() > MAX_KEY_LEN {
        return bad(&format!("longer than {MAX_KEY_LEN} bytes"));
    }
    if key.is_empty() {
        return if prefix { Ok(()) } else { bad("must not be empty") };
    }
    if key.chars().any(char::is_control) {
        return bad("must not contain control characters");
    }
    if key.starts_with('/') {
        return bad("must not start with '/' (keys are relative to the config root)");
    }
    let body = match key.strip_suffix('/') {
        Some(body) if prefix => body,
        Some(_) => return bad("must not end with '/'"),
        None => key,
    };
    for segment in body.split('/') {
        match segment {
            "" => return bad("must not contain an empty segment ('//')"),
            "." | ".." => return bad("must not contain '.' or '..' segments"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a value's size.
pub fn validate_value(value: &str) -> Result<(), ConfigError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(ConfigError::TooLarge { len: value.len() });
    }
    Ok(())
}

/// The events that turn `known` into `now`, and `known` updated to match:
/// deletions first (sorted by key), then puts for new or changed entries in
/// `now`'s order. An entry whose value and revision are unchanged is not
/// reported.
pub fn diff_entries(known: &mut BTreeMap<String, ConfigEntry>, now: Vec<ConfigEntry>) -> Vec<ConfigEvent> {
    let mut next: BTreeMap<String, ConfigEntry> = BTreeMap::new();
    let mut order = Vec::with_capacity(now.len());
    for entry in now {
        order.push(entry.key.clone());
        next.insert(entry.key.clone(), entry);
    }
    let mut events: Vec<ConfigEvent> = known
        .keys()
        .filter(|key| !next.contains_key(*key))
        .map(|key| ConfigEvent::Deleted { key: key.clone() })
        .collect();
    for key in order {
        let Some(entry) = next.get(&key) else { continue };
        if known.get(&key) != Some(entry) {
            events.push(ConfigEvent::Put(entry.clone()));
        }
    }
    *known = next;
    events
}

/// Applies `events` to `known` (the cache a watcher keeps between full
/// lists).
pub fn apply_events(known: &mut BTreeMap<String, ConfigEntry>, events: &[ConfigEvent]) {
    for event in events {
        match event {
            ConfigEvent::Put(entry) => {
                known.insert(entry.key.clone(), entry.clone());
            }
            ConfigEvent::Deleted { key } => {
                known.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_prefixes() {
        for good in ["a", "routing/Arith", "plugins/v1/x.wasm", "a-b_c.d"] {
            assert!(validate_key(good, false).is_ok(), "{good}");
        }
        for good in ["", "routing/", "rout"] {
            assert!(validate_key(good, true).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "./a", "a/..", "a\nb", &"x".repeat(MAX_KEY_LEN + 1)] {
            assert!(validate_key(bad, false).is_err(), "{bad:?}");
        }
        for bad in ["/", "//", "a//", "../"] {
            assert!(validate_key(bad, true).is_err(), "{bad:?}");
        }
        assert!(validate_value(&"x".repeat(MAX_VALUE_LEN)).is_ok());
        assert_eq!(
            validate_value(&"x".repeat(MAX_VALUE_LEN + 1)),
            Err(ConfigError::TooLarge { len: MAX_VALUE_LEN + 1 })
        );
    }

    #[test]
    fn diff_reports_puts_changes_and_deletions() {
        let mut known = BTreeMap::new();
        let first = diff_entries(&mut known, vec![ConfigEntry::new("a", "1", 1), ConfigEntry::new("b", "2", 2)]);
        assert_eq!(first.len(), 2);
        let same = diff_entries(&mut known, vec![ConfigEntry::new("a", "1", 1), ConfigEntry::new("b", "2", 2)]);
        assert!(same.is_empty());
        let next = diff_entries(&mut known, vec![ConfigEntry::new("b", "3", 5), ConfigEntry::new("c", "4", 6)]);
        assert_eq!(
            next,
            vec![
                ConfigEvent::Deleted { key: "a".into() },
                ConfigEvent::Put(ConfigEntry::new("b", "3", 5)),
                ConfigEvent::Put(ConfigEntry::new("c", "4", 6)),
            ]
        );
        let mut replay = BTreeMap::new();
        apply_events(&mut replay, &first);
        apply_events(&mut replay, &next);
        assert_eq!(replay, known);
    }
}
