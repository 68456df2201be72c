//! Config keys in the store: plain `key → text` entries kept beside the
//! instances, under the same lock and the same modification index.
//!
//! ## Why beside the instances
//!
//! A fleet that already talks to the registry for discovery can read its
//! configuration (routing rules, plugin lists) from the same place, and a
//! watcher gets the same guarantees as a discovery watcher: one counter
//! orders every change, and a blocking query from index `N` returns as soon
//! as anything under its prefix changed after `N`. Each entry's `revision`
//! is the index of the change that last set it. A put of the value a key
//! already has is not a change (no bump, no wake-up); neither is a delete
//! of a key that does not exist.
//!
//! ## What a waiter compares
//!
//! A waiter passes a prefix and the index `N` it last saw (a list answers
//! with the global index it was read at). It must return if *any* key under
//! the prefix was put **or deleted** after `N`. A put leaves its trace in the
//! entry's revision; a delete leaves nothing in the live entries, so the
//! table keeps a deletion record (a *tombstone*: key → index of the delete)
//! for every deleted key. The prefix's index is then
//!
//! ```text
//! prefix_index(P) = max(revision of live keys under P,
//!                       index of tombstones under P,
//!                       floor)
//! ```
//!
//! and a waiter returns at once if `prefix_index(P) > N`, otherwise waits
//! for the next change under `P`. Tombstones are bounded: at most
//! [`max_config_keys`](crate::RegistryConfig::max_config_keys) are kept (a
//! re-put removes its key's), and dropping the oldest raises `floor` to its
//! index. A waiter whose `N` is older than a dropped tombstone therefore
//! returns at once even for a prefix that did not change (one spurious
//! answer, which its diff finds empty), never misses a delete. The empty
//! prefix (everything) uses the index of the last config change, kept
//! directly, so it costs nothing to compute.
//!
//! Why not a per-prefix "last changed" counter instead? Prefixes are
//! arbitrary (`rout` matches `routing/x`), so no finite set of counters
//! covers the prefixes waiters may ask about later; tombstones answer any
//! prefix from the table itself, in time proportional to the keys under it.
//!
//! ## Waking only the right waiters
//!
//! As for services, each prefix somebody is waiting on has a
//! `tokio::sync::watch` channel, created by its first waiter and removed by
//! its last ([`KeySubscription`]), so prefixes nobody waits on cost nothing.
//! A change to key `K` looks up every prefix of `K` (each char boundary,
//! `""` included) in the channel map: at most `len(K) + 1` lookups per
//! change however many prefixes are watched, and a change under `b/` never
//! touches a waiter on `a/`. No waiter polls.
//!
//! ## Limits
//!
//! Keys and values are checked with [`validate_key`] and [`validate_value`]
//! (the rules every backend applies). The table holds at most
//! [`max_config_keys`](crate::RegistryConfig::max_config_keys) keys (10,000
//! by default) and [`max_config_bytes`](crate::RegistryConfig::max_config_bytes)
//! bytes of keys and values together (64 MiB); a put past either is refused
//! with [`StoreError::TooManyKeys`] or [`StoreError::ConfigFull`] and changes
//! nothing. Changing an existing key's value never counts against the key
//! limit.
//!
//! ```
//! use std::time::Duration;
//! use switchboard_registry::{RegistryConfig, Store};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let store = Store::new(RegistryConfig::default());
//! let rev = store.config_put("routing/Arith", r#"{"zone":"a"}"#).unwrap();
//! assert_eq!(store.config_put("routing/Arith", r#"{"zone":"a"}"#).unwrap(), rev, "same value: no change");
//!
//! let seen = store.config_list("routing/").unwrap().revision;
//! assert_eq!(store.config_delete("routing/Arith").unwrap(), (rev + 1, true));
//! // A waiter from before the delete learns of it at once.
//! let waited = store.wait_for_config_change("routing/", seen, Duration::from_secs(30)).await;
//! assert_eq!(waited, rev + 1);
//! # }
//! ```

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Duration;

use switchboard::config::{validate_key, validate_value, ConfigEntry, ConfigSnapshot};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Store, StoreError};

#[derive(Debug)]
struct Live {
    value: String,
    /// Index of the change that set `value`.
    revision: u64,
}

/// The config key table inside the store's lock.
#[derive(Debug, Default)]
pub(super) struct Keys {
    live: BTreeMap<String, Live>,
    /// Deleted keys → index of their deletion.
    tombstones: BTreeMap<String, u64>,
    /// The same records by index, oldest first, so the oldest can be dropped.
    tombstones_by_index: BTreeMap<u64, String>,
    /// The highest index of a tombstone dropped to keep the table bounded.
    floor: u64,
    /// Index of the last config change of any key (`prefix_index("")`).
    last_change: u64,
    /// Bytes of the live keys and values.
    bytes: usize,
    /// One channel per prefix with waiters right now, carrying the index of
    /// the last change under it (see the module docs).
    watchers: BTreeMap<String, watch::Sender<u64>>,
}

/// The entries of `map` whose key starts with `prefix`, in key order.
fn under<'a, V>(map: &'a BTreeMap<String, V>, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded)).take_while(move |(key, _)| key.starts_with(prefix))
}

impl Keys {
    /// The index of the last change under `prefix` that the table can vouch
    /// for (see the module docs).
    fn prefix_index(&self, prefix: &str) -> u64 {
        if prefix.is_empty() {
            return self.last_change;
        }
        let live = under(&self.live, prefix).map(|(_, e)| e.revision).max().unwrap_or(0);
        let gone = under(&self.tombstones, prefix).map(|(_, i)| *i).max().unwrap_or(0);
        live.max(gone).max(self.floor)
    }

    /// Records a change to `key` at `index` and wakes the waiters of every
    /// prefix of `key`.
    fn changed(&mut self, key: &str, index: u64) {
        self.last_change = index;
        let ends = key.char_indices().map(|(i, _)| i).chain(std::iter::once(key.len()));
        for end in ends {
            if let Some(tx) = self.watchers.get(&key[..end]) {
                // Marks the channel changed and wakes the parked tasks; they
                // run after the store lock is released.
                tx.send_replace(index);
            }
        }
    }

    /// Keeps a deletion record for `key`, dropping the oldest beyond `cap`.
    fn bury(&mut self, key: &str, index: u64, cap: usize) {
        self.tombstones.insert(key.to_owned(), index);
        self.tombstones_by_index.insert(index, key.to_owned());
        while self.tombstones.len() > cap {
            let Some((oldest, gone)) = self.tombstones_by_index.pop_first() else { break };
            self.tombstones.remove(&gone);
            self.floor = self.floor.max(oldest);
        }
    }

    /// Forgets `key`'s deletion record (it exists again, with a newer revision).
    fn unbury(&mut self, key: &str) {
        if let Some(index) = self.tombstones.remove(key) {
            self.tombstones_by_index.remove(&index);
        }
    }
}

/// A [`Store::wait_for_config_change`] waiter's receiver. Dropping it (the
/// wait returned, or its future was dropped) removes the prefix's channel if
/// this was its last waiter.
struct KeySubscription<'a> {
    store: &'a Store,
    prefix: &'a str,
    rx: watch::Receiver<u64>,
}

impl Drop for KeySubscription<'_> {
    fn drop(&mut self) {
        let mut inner = self.store.lock();
        // Waiters subscribe under this lock, so nobody joins between the
        // count and the removal; the one receiver left is this waiter's own.
        if inner.keys.watchers.get(self.prefix).is_some_and(|tx| tx.receiver_count() <= 1) {
            inner.keys.watchers.remove(self.prefix);
        }
    }
}

impl Store {
    /// The entry at `key`, or `None`.
    pub fn config_get(&self, key: &str) -> Result<Option<ConfigEntry>, StoreError> {
        validate_key(key, false)?;
        let inner = self.lock();
        Ok(inner.keys.live.get(key).map(|e| ConfigEntry::new(key, e.value.clone(), e.revision)))
    }

    /// Every entry whose key starts with `prefix` (`""` for all), sorted by
    /// key, with the global index it was read at: pass that index to
    /// [`Store::wait_for_config_change`] to wait for the next change.
    pub fn config_list(&self, prefix: &str) -> Result<ConfigSnapshot, StoreError> {
        validate_key(prefix, true)?;
        let inner = self.lock();
        let entries = under(&inner.keys.live, prefix)
            .map(|(k, e)| ConfigEntry::new(k.clone(), e.value.clone(), e.revision))
            .collect();
        Ok(ConfigSnapshot { entries, revision: inner.index })
    }

    /// How many config keys the store holds.
    pub fn config_len(&self) -> usize {
        self.lock().keys.live.len()
    }

    /// Sets `key` to `value`. Returns the key's revision: the new index if
    /// the value changed, the existing revision if it already had this
    /// value (not a change: no bump, no wake-up).
    pub fn config_put(&self, key: &str, value: &str) -> Result<u64, StoreError> {
        validate_key(key, false)?;
        validate_value(value)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let keys = &mut inner.keys;
        let bytes = match keys.live.get(key) {
            Some(e) if e.value == value => return Ok(e.revision),
            Some(e) => keys.bytes - e.value.len() + value.len(),
            None => {
                if keys.live.len() >= self.config.max_config_keys {
                    return Err(StoreError::TooManyKeys { limit: self.config.max_config_keys });
                }
                keys.bytes + key.len() + value.len()
            }
        };
        if bytes > self.config.max_config_bytes {
            return Err(StoreError::ConfigFull { limit: self.config.max_config_bytes });
        }
        inner.index += 1;
        let index = inner.index;
        keys.bytes = bytes;
        keys.unbury(key);
        keys.live.insert(key.to_owned(), Live { value: value.to_owned(), revision: index });
        keys.changed(key, index);
        drop(guard);
        self.publish(index);
        Ok(index)
    }

    /// Deletes `key`. Returns the global index afterwards and whether the
    /// key existed (deleting a missing key changes nothing).
    pub fn config_delete(&self, key: &str) -> Result<(u64, bool), StoreError> {
        validate_key(key, false)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(old) = inner.keys.live.remove(key) else {
            return Ok((inner.index, false));
        };
        inner.index += 1;
        let index = inner.index;
        let keys = &mut inner.keys;
        keys.bytes -= key.len() + old.value.len();
        keys.bury(key, index, self.config.max_config_keys);
        keys.changed(key, index);
        drop(guard);
        self.publish(index);
        Ok((index, true))
    }

    /// Waits until a key under `prefix` is put or deleted after index
    /// `after_index`, or `timeout` passes. Returns the index of that change
    /// (at once if it happened already), or on timeout the prefix's index as
    /// it was (at most `after_index`).
    ///
    /// If `after_index` is greater than the global index, it comes from an
    /// earlier life of the registry (it restarted and counts from 1 again):
    /// this returns at once so the caller re-lists. `prefix` is not checked
    /// here; [`Store::config_list`] checks it.
    pub async fn wait_for_config_change(&self, prefix: &str, after_index: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        // Look and subscribe under one lock (every change holds it too), so a
        // change between the look and the wait still wakes us.
        let (mut sub, current) = {
            let mut inner = self.lock();
            let current = inner.keys.prefix_index(prefix);
            if current > after_index || after_index > inner.index {
                return current;
            }
            let rx = inner.keys.watchers.entry(prefix.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe();
            (KeySubscription { store: self, prefix, rx }, current)
        };
        // Every send on this channel is a change under `prefix` made after
        // we subscribed, hence past `after_index`: one wake-up is enough.
        match tokio::time::timeout_at(deadline, sub.rx.changed()).await {
            Ok(Ok(())) => *sub.rx.borrow_and_update(),
            Ok(Err(_)) | Err(_) => current,
        }
    }

    /// How many prefixes have a waiter right now (for tests).
    #[cfg(test)]
    fn watched_prefixes(&self) -> usize {
        self.lock().keys.watchers.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchboard::config::{ConfigError, MAX_VALUE_LEN};

    use super::*;
    use crate::config::RegistryConfig;
    use crate::model::RegisterRequest;

    const LONG: Duration = Duration::from_secs(60);

    fn wait(store: &Arc<Store>, prefix: &'static str, after: u64) -> tokio::task::JoinHandle<u64> {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for_config_change(prefix, after, LONG).await })
    }

    fn keys(store: &Store, prefix: &str) -> Vec<(String, String, u64)> {
        store.config_list(prefix).unwrap().entries.into_iter().map(|e| (e.key, e.value, e.revision)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn puts_and_deletes_share_the_index_with_instances() {
        let store = Store::new(RegistryConfig::default());
        assert_eq!(store.config_put("a/x", "1"), Ok(2));
        assert_eq!(store.register(RegisterRequest::new("S", "i", "127.0.0.1:1")), Ok(3));
        assert_eq!(store.config_put("a/y", "2"), Ok(4));
        assert_eq!(store.index(), 4);

        // The same value again: not a change, the key keeps its revision.
        assert_eq!(store.config_put("a/x", "1"), Ok(2));
        assert_eq!(store.index(), 4);
        // A new value: a change.
        assert_eq!(store.config_put("a/x", "one"), Ok(5));
        assert_eq!(store.config_get("a/x"), Ok(Some(ConfigEntry::new("a/x", "one", 5))));

        assert_eq!(store.config_delete("a/x"), Ok((6, true)));
        assert_eq!(store.config_delete("a/x"), Ok((6, false)), "a missing key: nothing changes");
        assert_eq!(store.config_get("a/x"), Ok(None));
        assert_eq!(keys(&store, ""), [("a/y".to_owned(), "2".to_owned(), 4)]);
        let snapshot = store.config_list("").unwrap();
        assert_eq!(snapshot.revision, 6, "a list is read at the global index");

        // Re-created: a new revision, the deletion record gone.
        assert_eq!(store.config_put("a/x", "1"), Ok(7));
        assert!(store.lock().keys.tombstones.is_empty());
        assert_eq!(store.config_len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn lists_and_prefixes_are_plain_string_prefixes() {
        let store = Store::new(RegistryConfig::default());
        for key in ["routing/Arith", "routing/Echo", "routingx", "plugins/a", "r"] {
            store.config_put(key, key).unwrap();
        }
        let listed = |p: &str| keys(&store, p).into_iter().map(|(k, ..)| k).collect::<Vec<_>>();
        assert_eq!(listed("routing/"), ["routing/Arith", "routing/Echo"]);
        assert_eq!(listed("rout"), ["routing/Arith", "routing/Echo", "routingx"]);
        assert_eq!(listed(""), ["plugins/a", "r", "routing/Arith", "routing/Echo", "routingx"]);
        assert!(listed("zzz").is_empty());
        assert!(matches!(store.config_list("/etc"), Err(StoreError::Config(ConfigError::InvalidKey { .. }))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delete_wakes_a_waiter_and_a_change_elsewhere_does_not() {
        let store = Arc::new(Store::new(RegistryConfig::default()));
        store.config_put("a/1", "x").unwrap();
        store.config_put("b/1", "x").unwrap();
        let seen = store.config_list("a/").unwrap().revision;
        let (on_a, on_b, on_all) = (wait(&store, "a/", seen), wait(&store, "b/", seen), wait(&store, "", seen));
        tokio::task::yield_now().await;
        assert_eq!(store.watched_prefixes(), 3);

        // A put under b/ wakes b/ and everything, not a/.
        let put_b = store.config_put("b/2", "y").unwrap();
        assert_eq!(on_b.await.unwrap(), put_b);
        assert_eq!(on_all.await.unwrap(), put_b);
        tokio::task::yield_now().await;
        assert!(!on_a.is_finished(), "a change under b/ woke a waiter on a/");
        // An instance registration does not wake config waiters either.
        store.register(RegisterRequest::new("S", "i", "127.0.0.1:1")).unwrap();
        tokio::task::yield_now().await;
        assert!(!on_a.is_finished(), "a registration woke a config waiter");

        // A delete under a/ does.
        let (deleted, existed) = store.config_delete("a/1").unwrap();
        assert!(existed);
        assert_eq!(on_a.await.unwrap(), deleted);
        tokio::task::yield_now().await;
        assert_eq!(store.watched_prefixes(), 0, "every channel went with its last waiter");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_between_two_waits_is_not_missed() {
        let store = Arc::new(Store::new(RegistryConfig::default()));
        store.config_put("a/1", "x").unwrap();
        let seen = store.config_list("a/").unwrap().revision;
        // Nothing changed: the wait times out with the prefix's index, at most `seen`.
        let timed_out = store.wait_for_config_change("a/", seen, Duration::from_secs(1)).await;
        assert!(timed_out <= seen);
        // Deleted while nobody waited: the next wait from `seen` returns at once.
        let (deleted, _) = store.config_delete("a/1").unwrap();
        store.config_put("b/1", "x").unwrap(); // a later change elsewhere
        let began = Instant::now();
        assert_eq!(store.wait_for_config_change("a/", seen, LONG).await, deleted);
        assert_eq!(began.elapsed(), Duration::ZERO);
        // From the delete on, a/ is quiet again.
        let now = store.config_list("a/").unwrap().revision;
        let quiet = wait(&store, "a/", now);
        tokio::task::yield_now().await;
        assert!(!quiet.is_finished());
        quiet.abort();
        assert!(quiet.await.unwrap_err().is_cancelled());
        assert_eq!(store.watched_prefixes(), 0, "an abandoned wait leaves no channel");
    }

    #[tokio::test(start_paused = true)]
    async fn an_index_from_an_earlier_life_answers_at_once() {
        let store = Store::new(RegistryConfig::default());
        store.config_put("a/1", "x").unwrap();
        let began = Instant::now();
        assert_eq!(store.wait_for_config_change("a/", 1_000, LONG).await, 2);
        assert_eq!(began.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_deletion_records_raise_the_floor_so_no_delete_is_missed() {
        let config = RegistryConfig { max_config_keys: 2, ..RegistryConfig::default() };
        let store = Store::new(config);
        store.config_put("a/1", "x").unwrap();
        let seen = store.config_list("").unwrap().revision;
        store.config_delete("a/1").unwrap();
        // Two more deletions elsewhere push a/1's record out (the cap is 2).
        for key in ["b/1", "b/2"] {
            store.config_put(key, "x").unwrap();
        }
        store.config_delete("b/1").unwrap();
        let (last, _) = store.config_delete("b/2").unwrap();
        assert!(!store.lock().keys.tombstones.contains_key("a/1"));
        assert_eq!(store.lock().keys.tombstones.len(), 2);
        // A waiter on a/ from before the delete still returns at once.
        let began = Instant::now();
        let got = store.wait_for_config_change("a/", seen, LONG).await;
        assert!(got > seen);
        assert_eq!(began.elapsed(), Duration::ZERO);
        // One from after the last change waits.
        let waited = store.wait_for_config_change("a/", last, Duration::from_secs(5)).await;
        assert!(waited <= last);
        assert_eq!(began.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn limits_refuse_and_change_nothing() {
        let config = RegistryConfig { max_config_keys: 2, max_config_bytes: 20, ..RegistryConfig::default() };
        let store = Store::new(config);
        store.config_put("k1", "aaaa").unwrap(); // 6 bytes
        store.config_put("k2", "bbbb").unwrap(); // 12 bytes
        let index = store.index();
        assert_eq!(store.config_put("k3", "c"), Err(StoreError::TooManyKeys { limit: 2 }));
        // Changing an existing key is fine, within the byte limit...
        assert_eq!(store.config_put("k1", "aaaaaaaaaaaa"), Ok(index + 1)); // 14 + 6 = 20 bytes
                                                                           // ...and refused past it.
        assert_eq!(store.config_put("k2", "bbbbb"), Err(StoreError::ConfigFull { limit: 20 }));
        assert_eq!(store.index(), index + 1);
        assert_eq!(store.config_get("k2").unwrap().map(|e| e.value), Some("bbbb".to_owned()));
        // A delete frees room.
        store.config_delete("k1").unwrap();
        assert_eq!(store.config_put("k3", "ccccccccccccc"), Err(StoreError::ConfigFull { limit: 20 })); // 6 + 15
        assert!(store.config_put("k3", "cccccccccccc").is_ok()); // 6 + 14 = 20
    }

    #[test]
    fn bad_keys_and_values_are_refused() {
        let store = Store::new(RegistryConfig::default());
        for key in ["", "/a", "a/", "a//b", "a/../b", "a\u{7}"] {
            assert!(
                matches!(store.config_put(key, "x"), Err(StoreError::Config(ConfigError::InvalidKey { .. }))),
                "{key:?}"
            );
            assert!(store.config_get(key).is_err() && store.config_delete(key).is_err(), "{key:?}");
        }
        let big = "x".repeat(MAX_VALUE_LEN + 1);
        assert_eq!(
            store.config_put("k", &big),
            Err(StoreError::Config(ConfigError::TooLarge { len: MAX_VALUE_LEN + 1 }))
        );
        assert_eq!(store.index(), 1);
        assert!(store.config_put("k", &big[1..]).is_ok(), "exactly the limit is fine");
    }
}
