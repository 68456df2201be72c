//! Following a prefix in etcd without ever missing a change: the recovery
//! recipe discovery and config watches share.
//!
//! A watch in etcd is a stream from a start revision. Streams die: the
//! member serving it is killed, loses its leader (we ask for require-leader,
//! so it cancels rather than serve stale data), or the revision we want to
//! resume from has been compacted away, after which etcd cannot replay what
//! we missed. etcd's own resolver does not recover from that last case
//! (etcd#8668), and rpcx, Kitex and dubbo-go each shipped bugs here. So a
//! [`Follower`] does this, and only this:
//!
//! 1. **List** the prefix at one revision `R`, page by page (each page
//!    asks for revision `R` explicitly, so the pages are one consistent
//!    snapshot even while keys change).
//! 2. **Diff** the listing against the cache of what it reported before,
//!    and report the difference: new and changed keys as puts, and the keys
//!    that vanished as deletions, including those deleted while no watch
//!    was running, whose delete events we never saw.
//! 3. **Watch** from `R + 1`, applying each event to the cache and
//!    reporting it, and tracking the revision of the last event seen.
//! 4. When the watch fails (the stream breaks or ends, or etcd cancels it),
//!    **resume** from the last event's revision + 1: etcd replays what
//!    happened meanwhile from its history, so nothing is missed and nothing
//!    is listed again. Retries wait with exponential backoff and full
//!    jitter (100 ms doubling to 5 s), so a fleet that lost etcd together
//!    does not return together.
//! 5. When etcd refuses the resume because that revision has been
//!    **compacted** (the history is gone, so the deletions made meanwhile
//!    can no longer be replayed), go back to 1 at once: the listing and the
//!    diff recover exactly the keys that vanished.
//!
//! Resuming instead of re-listing after every failure matters when a
//! member dies: every watcher it served fails at the same moment, and a
//! full listing from each of them would hit the survivors together.
//!
//! Meanwhile the consumer keeps what it was told last: an unreachable etcd
//! means no news, never an empty list.

use std::collections::BTreeMap;

use etcd_client::{GetOptions, WatchOptions, WatchStream};
use switchboard::backoff::Backoff;

use super::{EtcdConnection, EtcdError};

/// Keys asked for per page when listing.
const PAGE: i64 = 500;

/// One key under a followed prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The full key.
    pub key: String,
    /// The value, as stored.
    pub value: Vec<u8>,
    /// The revision of its last change.
    pub mod_revision: i64,
    /// Its lease (0: none).
    pub lease: i64,
}

/// A prefix's keys at one revision.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The keys, sorted.
    pub kvs: Vec<Kv>,
    /// The revision they were read at.
    pub revision: i64,
}

/// One change under a followed prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// The key was created or changed.
    Put(Kv),
    /// The key was deleted (or its lease expired).
    Deleted(String),
}

/// The keys that are not UTF-8 are skipped with a warning (nothing we write
/// has them).
fn to_kv(kv: &etcd_client::KeyValue) -> Option<Kv> {
    match std::str::from_utf8(kv.key()) {
        Ok(key) => Some(Kv {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }),
        Err(_) => {
            tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "skipping a key that is not UTF-8");
            None
        }
    }
}

/// The end of the key range a prefix covers (`prefix` with its last byte
/// incremented, as etcd's `--prefix` does).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // the whole key space
}

/// Lists every key under `prefix` at one revision, in pages.
pub async fn list(conn: &EtcdConnection, prefix: &str) -> Result<Listing, EtcdError> {
    let end = prefix_end(prefix);
    let mut listing = Listing::default();
    let mut from = prefix.as_bytes().to_vec();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if listing.revision > 0 {
            options = options.with_revision(listing.revision);
        }
        let key = from.clone();
        let page = conn.request(|mut c| async move { c.get(key, Some(options)).await }).await?;
        if listing.revision == 0 {
            listing.revision = page.header().map(|h| h.revision()).unwrap_or(0);
        }
        listing.kvs.extend(page.kvs().iter().filter_map(to_kv));
        match page.kvs().last() {
            Some(last) if page.more() => {
                // Continue just after the last key of this page.
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(listing),
        }
    }
}

/// How a [`Follower`] has fared, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowStats {
    /// Full listings made (the first one included).
    pub lists: u64,
    /// Watches that could not resume because etcd had compacted the
    /// history they needed (each one re-listed).
    pub compacted: u64,
    /// Watches lost for any other reason, and failed listings.
    pub failures: u64,
    /// The last revision seen.
    pub revision: i64,
}

/// Follows every key under one prefix; see the [module docs](self).
pub struct Follower {
    conn: EtcdConnection,
    prefix: String,
    cache: BTreeMap<String, Kv>,
    stream: Option<WatchStream>,
    /// Where a new watch starts: one past the last event seen, or past the
    /// listing. `None`: list first.
    resume_from: Option<i64>,
    backoff: Backoff,
    /// Consecutive failures, for the backoff.
    failing: u32,
    first: bool,
    stats: FollowStats,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").field("prefix", &self.prefix).field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl Follower {
    /// A follower of `prefix` (a full key prefix, `/switchboard/services/Arith/`).
    pub fn new(conn: EtcdConnection, prefix: impl Into<String>) -> Follower {
        Follower {
            conn,
            prefix: prefix.into(),
            cache: BTreeMap::new(),
            stream: None,
            resume_from: None,
            backoff: crate::RETRY_BACKOFF,
            failing: 0,
            first: true,
            stats: FollowStats::default(),
        }
    }

    /// How it has fared so far.
    pub fn stats(&self) -> FollowStats {
        self.stats
    }

    /// Every key it knows, as of the last batch returned.
    pub fn cache(&self) -> &BTreeMap<String, Kv> {
        &self.cache
    }

    /// The next batch of changes. The first call returns the whole prefix
    /// (possibly empty); later calls wait for at least one change. Never
    /// fails: trouble is logged and retried.
    pub async fn next(&mut self) -> Vec<KvEvent> {
        loop {
            let events = match (&self.stream, self.resume_from) {
                (Some(_), _) => self.read_watch().await,
                (None, Some(from)) => {
                    self.start_watch(from).await;
                    None
                }
                (None, None) => self.resync().await,
            };
            match events {
                Some(events) if self.first || !events.is_empty() => {
                    self.first = false;
                    return events;
                }
                _ => continue,
            }
        }
    }

    /// Lists, diffs, and starts a watch. `None` after a failure (already
    /// waited for).
    async fn resync(&mut self) -> Option<Vec<KvEvent>> {
        let listing = match list(&self.conn, &self.prefix).await {
            Ok(listing) => listing,
            Err(error) => {
                self.failed("list", &error).await;
                return None;
            }
        };
        self.stats.lists += 1;
        self.stats.revision = self.stats.revision.max(listing.revision);
        let events = self.diff(listing.kvs);
        // The listing counts even if the watch cannot start now: report it;
        // the watch is retried from just after it.
        self.resume_from = Some(listing.revision + 1);
        self.start_watch(listing.revision + 1).await;
        Some(events)
    }

    /// Starts a watch from revision `from`.
    async fn start_watch(&mut self, from: i64) {
        let options = WatchOptions::new().with_range(prefix_end(&self.prefix)).with_start_revision(from);
        let key = self.prefix.clone();
        match self.conn.request(|mut c| async move { c.watch(key, Some(options)).await }).await {
            Ok(stream) => {
                if self.failing > 0 {
                    tracing::info!(prefix = %self.prefix, from, failures = self.failing, "etcd reachable again; watching");
                    self.failing = 0;
                }
                self.stream = Some(stream);
            }
            Err(error) if error.is_compacted() => self.compacted(from, None),
            Err(error) => self.failed("watch", &error).await,
        }
    }

    /// The history from `from` is gone: list again.
    fn compacted(&mut self, from: i64, compacted_to: Option<i64>) {
        self.stats.compacted += 1;
        self.stream = None;
        self.resume_from = None;
        tracing::info!(prefix = %self.prefix, from, ?compacted_to,
            "etcd compacted the history the watch needed; re-listing to catch up");
    }

    /// The cache becomes `now`; returns what changed.
    fn diff(&mut self, now: Vec<Kv>) -> Vec<KvEvent> {
        let mut next: BTreeMap<String, Kv> = now.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        let mut events: Vec<KvEvent> =
            self.cache.keys().filter(|k| !next.contains_key(*k)).map(|k| KvEvent::Deleted(k.clone())).collect();
        for (key, kv) in &next {
            if self.cache.get(key) != Some(kv) {
                events.push(KvEvent::Put(kv.clone()));
            }
        }
        std::mem::swap(&mut self.cache, &mut next);
        events
    }

    /// One message from the watch. `None` when the watch is over (the next
    /// call re-lists).
    async fn read_watch(&mut self) -> Option<Vec<KvEvent>> {
        let stream = self.stream.as_mut()?;
        let message = stream.message().await;
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                self.stream = None;
                self.failed("watch", &EtcdError::WatchEnded).await;
                return None;
            }
            Err(error) => {
                self.stream = None;
                self.failed("watch", &EtcdError::Etcd(error)).await;
                return None;
            }
        };
        if response.canceled() {
            self.stream = None;
            if response.compact_revision() > 0 {
                let from = self.resume_from.unwrap_or(0);
                self.compacted(from, Some(response.compact_revision()));
            } else {
                let reason = response.cancel_reason().to_owned();
                self.failed("watch", &EtcdError::WatchCanceled(reason)).await;
            }
            return None;
        }
        if let Some(header) = response.header() {
            self.stats.revision = self.stats.revision.max(header.revision());
        }
        let mut events = Vec::with_capacity(response.events().len());
        for event in response.events() {
            // Read the raw type: etcd-client's accessor panics on a value it
            // does not know.
            let kind = event.0.r#type;
            let Some(kv) = event.kv().and_then(to_kv) else { continue };
            self.stats.revision = self.stats.revision.max(kv.mod_revision);
            self.resume_from = Some(self.resume_from.unwrap_or(0).max(kv.mod_revision + 1));
            match kind {
                0 => {
                    self.cache.insert(kv.key.clone(), kv.clone());
                    events.push(KvEvent::Put(kv));
                }
                1 => {
                    if self.cache.remove(&kv.key).is_some() {
                        events.push(KvEvent::Deleted(kv.key));
                    }
                }
                other => tracing::warn!(kind = other, key = %kv.key, "ignoring a watch event of unknown type"),
            }
        }
        Some(events)
    }

    async fn failed(&mut self, what: &str, error: &EtcdError) {
        self.failing += 1;
        self.stats.failures += 1;
        if self.failing == 1 {
            tracing::warn!(prefix = %self.prefix, %error,
                "etcd {what} failed; keeping the last known keys and retrying with backoff");
        } else {
            tracing::debug!(prefix = %self.prefix, %error, failures = self.failing, "etcd {what} failed again");
        }
        tokio::time::sleep(self.backoff.delay(self.failing)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("ab"), b"ac".to_vec());
    }
}
