//! Each service's change log, and the pages [`Store::changes`] answers from it.
//!
//! ## Why changes, not lists
//!
//! A blocking query used to answer with the service's whole list. With
//! thousands of instances, each change then sent every watcher the whole
//! list again: one registration to a 100,000-instance service woke 20
//! watchers with 26 MB each. Now a watcher passes the index it has applied
//! everything up to, and gets only what changed after it: one registration
//! is one record for each watcher, however large the service.
//!
//! ## The log
//!
//! Per service, a map from index to what happened at that index:
//!
//! - every live instance, at the index of its last change (registration,
//!   update, health change). When it changes again its entry moves to the
//!   new index, so each id appears once and the log never holds more live
//!   entries than the service has instances;
//! - a removal record for every instance deregistered or evicted, at the
//!   index of the removal. Re-registering the id replaces the record.
//!
//! "What changed after N" is then the log's range `(N, ..]`, in index order.
//! That order also makes the answer pageable without any snapshot: a page
//! stops at the listing cap, its `index` is the last change it holds, and
//! the next page is simply the range after that. A record that changes
//! between two pages moves ahead of the cursor and is met again later; one
//! that is removed leaves a removal record ahead of it. Applying the pages
//! in order therefore always ends at the service's state, however it
//! changed meanwhile.
//!
//! ## Bounds and the floor
//!
//! Live entries are bounded by the instances. Removal records are bounded
//! over all services by [`max_instances`](crate::RegistryConfig::max_instances)
//! ([`Removals`]): beyond it the oldest is dropped, and its service's
//! *floor* rises to its index. A watcher whose index is below the floor may
//! have missed a removal it can no longer be told about, so its answer is a
//! *reset*: every live instance (paged the same way, without removal
//! records), after which the watcher drops whatever those pages did not
//! mention. A first listing (index 0), an index from before a restart
//! (higher than the registry's) and an epoch from another life of the
//! registry are resets too. A service left with no instances and no
//! removal records is forgotten; a service created later under a forgotten
//! name starts with the highest forgotten index as its floor.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::Arc;

use super::{Inner, Store};
use crate::model::{json_len, Cursor, InstanceRecord, ServiceChanges};

/// The most bytes of an answer besides its records: `{"index":…,"epoch":…,
/// "reset":false,"more":false,"instances":[],"removed":[]}` with 20-digit
/// numbers, and `"warming_up_ms"` (the unit tests check it).
pub(crate) const ENVELOPE_MAX: usize = 160;

/// What happened at one index of a service's log.
#[derive(Debug)]
enum Logged {
    /// The last change of this live instance.
    Live(String),
    /// This instance was removed.
    Removed(String),
}

/// One service's change log (see the module docs).
#[derive(Debug)]
pub(super) struct Log {
    by_index: BTreeMap<u64, Logged>,
    /// Removal records: id → their index in `by_index`.
    removed: HashMap<String, u64>,
    /// Highest index of a removal record dropped (or inherited from a
    /// forgotten service): a watcher from below it must re-list.
    floor: u64,
}

impl Log {
    pub(super) fn new(floor: u64) -> Log {
        Log { by_index: BTreeMap::new(), removed: HashMap::new(), floor }
    }

    pub(super) fn floor(&self) -> u64 {
        self.floor
    }
}

/// Every service's removal records by index, oldest first, so that the
/// oldest can be dropped once there are more than `cap`.
#[derive(Debug)]
pub(super) struct Removals {
    /// Index → the service it belongs to.
    by_index: BTreeMap<u64, String>,
    cap: usize,
    /// The highest index of a service forgotten entirely.
    forgotten: u64,
}

impl Removals {
    pub(super) fn new(cap: usize) -> Removals {
        Removals { by_index: BTreeMap::new(), cap, forgotten: 0 }
    }

    /// The floor of a service that does not exist (or is created now).
    pub(super) fn forgotten(&self) -> u64 {
        self.forgotten
    }
}

impl Inner {
    /// Bumps the index for a change to the live instance `service`/`id` and
    /// moves its log entry there (replacing a removal record of the same
    /// id). Returns the new index.
    pub(super) fn record_live(&mut self, service: &str, id: &str) -> u64 {
        let index = self.bump(service);
        let Some(s) = self.services.get_mut(service) else { return index };
        if let Some(entry) = s.instances.get_mut(id) {
            if entry.changed != 0 {
                s.log.by_index.remove(&entry.changed);
            }
            entry.changed = index;
        }
        if let Some(old) = s.log.removed.remove(id) {
            s.log.by_index.remove(&old);
            self.removals.by_index.remove(&old);
        }
        s.log.by_index.insert(index, Logged::Live(id.to_owned()));
        index
    }

    /// Bumps the index for the removal of `service`/`id` (already taken out
    /// of the service's instances; `changed` was its log index), leaves a
    /// removal record and drops the oldest records beyond the cap. Returns
    /// the new index.
    pub(super) fn record_removed(&mut self, service: &str, id: &str, changed: u64) -> u64 {
        self.instance_count = self.instance_count.saturating_sub(1);
        let index = self.bump(service);
        if let Some(s) = self.services.get_mut(service) {
            s.log.by_index.remove(&changed);
            s.log.by_index.insert(index, Logged::Removed(id.to_owned()));
            s.log.removed.insert(id.to_owned(), index);
            self.removals.by_index.insert(index, service.to_owned());
        }
        while self.removals.by_index.len() > self.removals.cap {
            let Some((oldest, name)) = self.removals.by_index.pop_first() else { break };
            self.forget_removal(&name, oldest);
        }
        index
    }

    /// Drops the removal record at `index` of `service`, raising its floor;
    /// forgets the service if nothing is left of it.
    fn forget_removal(&mut self, service: &str, index: u64) {
        let Some(s) = self.services.get_mut(service) else { return };
        if let Some(Logged::Removed(id)) = s.log.by_index.remove(&index) {
            s.log.removed.remove(&id);
        }
        s.log.floor = s.log.floor.max(index);
        if s.instances.is_empty() && s.log.removed.is_empty() {
            let last = s.index;
            self.services.remove(service);
            self.removals.forgotten = self.removals.forgotten.max(last);
        }
    }
}

/// One page of a service's changes as the store read it, records shared
/// with the store; [`Page::encode`] makes the JSON the API sends.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub(crate) index: u64,
    pub(crate) reset: bool,
    pub(crate) more: bool,
    /// Sorted by id.
    pub(crate) instances: Vec<Arc<InstanceRecord>>,
    /// Sorted.
    pub(crate) removed: Vec<String>,
    /// The most bytes the page's JSON can take (at most the cap it was read with).
    pub(crate) max_len: usize,
}

impl Page {
    /// The page as JSON, exactly as `serde_json` encodes the
    /// [`ServiceChanges`] it stands for when `warming_up_ms` is 0 (the field
    /// is left out; the server adds it when needed).
    pub(crate) fn encode(&self, epoch: u64) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.max_len);
        // Writing to a Vec cannot fail; serde_json reports what could.
        let _ = write!(
            out,
            "{{\"index\":{},\"epoch\":{},\"reset\":{},\"more\":{},\"instances\":[",
            self.index, epoch, self.reset, self.more
        );
        for (i, instance) in self.instances.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &**instance)?;
        }
        out.extend_from_slice(b"],\"removed\":[");
        for (i, id) in self.removed.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, id)?;
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }

    /// The page as the API's type, records copied.
    pub(crate) fn to_changes(&self, epoch: u64, warming_up_ms: u64) -> ServiceChanges {
        ServiceChanges {
            index: self.index,
            epoch,
            reset: self.reset,
            more: self.more,
            instances: self.instances.iter().map(|i| InstanceRecord::clone(i)).collect(),
            removed: self.removed.clone(),
            warming_up_ms,
        }
    }
}

impl Store {
    /// What changed in `service` after `cursor`: the records added or
    /// changed, the ids removed, in one page whose JSON takes at most
    /// [`RegistryConfig::listing_cap`](crate::RegistryConfig::listing_cap)
    /// bytes. A cursor at index 0, below the service's floor, above the
    /// registry's index or from another [`epoch`](Store::epoch) gets a
    /// reset (see [`ServiceChanges`] and the module docs).
    ///
    /// ```
    /// use switchboard_registry::{RegistryConfig, Store, model::{Cursor, RegisterRequest}};
    ///
    /// let store = Store::new(RegistryConfig::default());
    /// store.register(RegisterRequest::new("Arith", "a1", "127.0.0.1:9001")).unwrap();
    /// let first = store.changes("Arith", Cursor::default());
    /// assert!(first.reset && !first.more);
    /// store.register(RegisterRequest::new("Arith", "a2", "127.0.0.1:9002")).unwrap();
    /// store.deregister("Arith", "a1").unwrap();
    /// let next = store.changes("Arith", first.cursor());
    /// assert_eq!(next.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["a2"]);
    /// assert_eq!(next.removed, ["a1"]);
    /// ```
    pub fn changes(&self, service: &str, cursor: Cursor) -> ServiceChanges {
        let page = self.page(service, cursor, self.config.listing_cap());
        page.to_changes(self.epoch, u64::try_from(self.warming_up().as_millis()).unwrap_or(u64::MAX))
    }

    /// [`Store::changes`] as the server needs it: records shared, not copied.
    pub(crate) fn page(&self, service: &str, cursor: Cursor, cap: usize) -> Page {
        let inner = self.lock();
        let after = cursor.index;
        let (_, global, floor) = inner.look(Some(service));
        let reset = after == 0 || after > global || after < floor || (cursor.epoch != 0 && cursor.epoch != self.epoch);
        let Some(s) = inner.services.get(service) else {
            return Page {
                index: 0,
                reset,
                more: false,
                instances: Vec::new(),
                removed: Vec::new(),
                max_len: ENVELOPE_MAX,
            };
        };
        let budget = cap.saturating_sub(ENVELOPE_MAX);
        let from = if reset { 0 } else { after };
        let (mut instances, mut removed) = (Vec::new(), Vec::new());
        let (mut used, mut last, mut more) = (0usize, from, false);
        for (&index, logged) in s.log.by_index.range(from.saturating_add(1)..) {
            let (cost, record) = match logged {
                Logged::Live(id) => match s.instances.get(id) {
                    Some(entry) => (entry.listed_len, Ok(&entry.instance)),
                    None => continue, // cannot happen: live entries follow the instances
                },
                Logged::Removed(_) if reset => continue,
                Logged::Removed(id) => (json_len(id), Err(id)),
            };
            let cost = cost.saturating_add(1); // the comma
                                               // Always at least one record: the cap is never below what one takes.
            if used > 0 && used.saturating_add(cost) > budget {
                more = true;
                break;
            }
            used = used.saturating_add(cost);
            last = index;
            match record {
                Ok(instance) => instances.push(instance.clone()),
                Err(id) => removed.push(id.clone()),
            }
        }
        let index = if more { last } else { s.index };
        drop(inner);
        instances.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        removed.sort_unstable();
        Page { index, reset, more, instances, removed, max_len: used.saturating_add(ENVELOPE_MAX) }
    }

    /// How many removal records the store keeps, over all services (for tests).
    #[cfg(test)]
    pub(super) fn removal_records(&self) -> usize {
        self.lock().removals.by_index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RegisterRequest;
    use crate::RegistryConfig;

    fn store(config: RegistryConfig) -> Store {
        Store::new(config)
    }

    fn ids(changes: &ServiceChanges) -> Vec<&str> {
        changes.instances.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn the_envelope_bound_holds_for_the_largest_numbers() {
        let largest = ServiceChanges {
            index: u64::MAX,
            epoch: u64::MAX,
            reset: false,
            more: false,
            instances: Vec::new(),
            removed: Vec::new(),
            warming_up_ms: u64::MAX,
        };
        let len = serde_json::to_vec(&largest).unwrap().len();
        assert!(len <= ENVELOPE_MAX, "{len}");
    }

    #[test]
    fn encoding_is_byte_for_byte_the_serde_encoding() {
        let s = store(RegistryConfig::default());
        for i in 0..3 {
            let mut req = RegisterRequest::new("A", format!("i\"{i}"), format!("127.0.0.1:{}", 9000 + i));
            req.metadata.kv.insert("k}".into(), "{\"v\"}\\\u{1}".into());
            s.register(req).unwrap();
        }
        s.deregister("A", "i\"1").unwrap();
        let first = s.page("A", Cursor::default(), usize::MAX);
        let later = s.page("A", Cursor { index: 2, epoch: s.epoch() }, usize::MAX);
        assert!(!later.removed.is_empty() && !later.reset);
        for page in [first, later] {
            let ours = page.encode(s.epoch()).unwrap();
            let serde = serde_json::to_vec(&page.to_changes(s.epoch(), 0)).unwrap();
            assert_eq!(String::from_utf8(ours.clone()).unwrap(), String::from_utf8(serde).unwrap());
            assert!(ours.len() <= page.max_len, "{} > {}", ours.len(), page.max_len);
        }
    }

    #[test]
    fn changes_after_an_index_are_only_the_changes() {
        let s = store(RegistryConfig::default());
        for id in ["a", "b", "c"] {
            s.register(RegisterRequest::new("A", id, "127.0.0.1:1")).unwrap();
        }
        s.register(RegisterRequest::new("B", "x", "127.0.0.1:1")).unwrap();
        let all = s.changes("A", Cursor::default());
        assert!(all.reset && !all.more);
        assert_eq!(ids(&all), ["a", "b", "c"]);
        assert_eq!(all.index, s.service_index("A"));

        // An update moves "a" ahead; a removal leaves a record; B is not A.
        let mut moved = RegisterRequest::new("A", "a", "127.0.0.1:2");
        moved.metadata.version = "2".into();
        s.register(moved).unwrap();
        s.deregister("A", "b").unwrap();
        s.register(RegisterRequest::new("B", "y", "127.0.0.1:1")).unwrap();
        let next = s.changes("A", all.cursor());
        assert!(!next.reset && !next.more);
        assert_eq!((ids(&next), next.removed.as_slice()), (vec!["a"], ["b".to_owned()].as_slice()));
        assert_eq!(next.instances[0].metadata.version, "2");
        assert_eq!(next.index, s.service_index("A"));

        // Nothing new: empty, same index. A re-registered id replaces its removal record.
        let none = s.changes("A", next.cursor());
        assert!(none.instances.is_empty() && none.removed.is_empty() && none.index == next.index);
        s.register(RegisterRequest::new("A", "b", "127.0.0.1:3")).unwrap();
        let back = s.changes("A", next.cursor());
        assert_eq!((ids(&back), back.removed.len()), (vec!["b"], 0));
        assert_eq!(s.removal_records(), 0);

        // A reset lists the live instances only, no removal records.
        s.deregister("A", "c").unwrap();
        let reset = s.changes("A", Cursor { index: 1, epoch: s.epoch() + 1 });
        assert!(reset.reset);
        assert_eq!((ids(&reset), reset.removed.len()), (vec!["a", "b"], 0));
        assert!(s.changes("A", Cursor { index: s.index() + 1, epoch: 0 }).reset, "from a later life");
    }

    #[test]
    fn pages_stop_at_the_cap_and_their_cursors_cover_everything() {
        let config = RegistryConfig { max_listing_bytes: 0, max_metadata_bytes: 1024, ..RegistryConfig::default() };
        let cap = config.listing_cap();
        let s = store(config);
        let mut want = Vec::new();
        for i in 0..200 {
            let mut req = RegisterRequest::new("A", format!("i{i:03}"), "127.0.0.1:1");
            req.metadata.zone = "z".repeat(200);
            s.register(req).unwrap();
            want.push(format!("i{i:03}"));
        }
        let mut cursor = Cursor::default();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = s.page("A", cursor, cap);
            let bytes = page.encode(s.epoch()).unwrap().len();
            assert!(bytes <= cap, "page of {bytes} bytes over the cap of {cap}");
            assert_eq!(page.reset, pages == 0);
            pages += 1;
            seen.extend(page.instances.iter().map(|i| i.id.clone()));
            cursor = Cursor { index: page.index, epoch: s.epoch() };
            if !page.more {
                break;
            }
            // Changes while paging: one record already sent changes, one not yet sent goes.
            if pages == 2 {
                s.register(RegisterRequest::new("A", "i000", "127.0.0.1:2")).unwrap();
                s.deregister("A", "i199").unwrap();
            }
        }
        assert!(pages > 3, "{pages} pages");
        seen.sort();
        seen.dedup();
        want.pop(); // i199 went before its page
        assert_eq!(seen, want);
        assert_eq!(cursor.index, s.service_index("A"));
    }

    #[test]
    fn dropped_removal_records_raise_the_floor_and_forget_empty_services() {
        let config = RegistryConfig { max_instances: 2, ..RegistryConfig::default() };
        let s = store(config);
        s.register(RegisterRequest::new("A", "a", "127.0.0.1:1")).unwrap();
        let seen = s.changes("A", Cursor::default()).cursor();
        s.deregister("A", "a").unwrap(); // record 1
        s.register(RegisterRequest::new("B", "b", "127.0.0.1:1")).unwrap();
        s.deregister("B", "b").unwrap(); // record 2
        assert!(!s.changes("A", seen).reset, "A's record is still there");
        s.register(RegisterRequest::new("C", "c", "127.0.0.1:1")).unwrap();
        s.deregister("C", "c").unwrap(); // record 3: A's goes, and A with it
        assert_eq!(s.removal_records(), 2);
        assert_eq!(s.service_index("A"), 0, "forgotten");
        let after = s.changes("A", seen);
        assert!(after.reset && after.instances.is_empty(), "{after:?}");
        // A new A inherits the floor: a watcher from the old one re-lists.
        s.register(RegisterRequest::new("A", "a2", "127.0.0.1:1")).unwrap();
        let again = s.changes("A", seen);
        assert!(again.reset);
        assert_eq!(ids(&again), ["a2"]);
    }
}
