//! Config keys: `switchboard::config` key validation and diffing, and the
//! built-in registry's config-key store (put, get, delete, list, blocking
//! waits) run through arbitrary operation sequences against a model (a
//! plain `BTreeMap`).
//!
//! Invariants:
//! - nothing panics; every refusal is one the model predicts (bad key or
//!   prefix, value too large, too many keys, too many bytes) and changes
//!   nothing;
//! - a valid key is a valid prefix, so is the key and a trailing `/`, and
//!   valid keys have no empty, `.` or `..` segment, no control character,
//!   no leading or trailing `/`;
//! - gets, deletes and lists (plain string prefixes, sorted) answer what the
//!   model holds, revisions and indexes included;
//! - `diff_entries` between two lists, applied with `apply_events`, turns
//!   the old list into the new one;
//! - a blocking wait on a prefix never misses a change under it, and while
//!   no deletion record was dropped, answers exactly the index of the last
//!   change under the prefix.
#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use switchboard::config::{apply_events, diff_entries, validate_key, ConfigEntry, MAX_KEY_LEN, MAX_VALUE_LEN};
use switchboard_registry::config::RegistryConfig;
use switchboard_registry::store::{Store, StoreError};

const MAX_KEYS: usize = 6;
const MAX_BYTES: usize = 200;

/// A key: usually a few characters from an alphabet that makes prefixes,
/// segments and bad characters likely; sometimes any string.
#[derive(Debug)]
struct Key(String);

impl<'a> Arbitrary<'a> for Key {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        const ALPHABET: &[char] = &['a', 'b', '/', '/', '.', '-', 'é', ' ', '\n', '\u{7f}'];
        if u.ratio(1, 16)? {
            return Ok(Key(String::arbitrary(u)?));
        }
        if u.ratio(1, 64)? {
            return Ok(Key("k".repeat(MAX_KEY_LEN + usize::from(u.arbitrary::<bool>()?))));
        }
        let len = u.int_in_range(0..=8)?;
        let key = (0..len).map(|_| u.choose(ALPHABET).copied()).collect::<arbitrary::Result<String>>()?;
        Ok(Key(key))
    }
}

/// A value: usually short; sometimes large enough for the byte budget, or
/// for the value size limit.
#[derive(Debug)]
struct Value(String);

impl<'a> Arbitrary<'a> for Value {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Value(match u.int_in_range(0..=31)? {
            0 => "v".repeat(MAX_VALUE_LEN + 1),
            1..=4 => "v".repeat(u.int_in_range(0..=MAX_BYTES)?),
            _ => ["", "a", "b", "on", "off", "é"][u.int_in_range(0..=5)?].to_owned(),
        }))
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Put(Key, Value),
    Get(Key),
    Delete(Key),
    List(Key),
    Wait(Key, u8),
}

#[derive(Default)]
struct Model {
    live: BTreeMap<String, (String, u64)>,
    index: u64,
    /// (index, key) of every change.
    changes: Vec<(u64, String)>,
    deletes: usize,
    /// The last list seen per prefix, for the diff check.
    lists: BTreeMap<String, BTreeMap<String, ConfigEntry>>,
}

impl Model {
    fn bytes(&self) -> usize {
        self.live.iter().map(|(k, (v, _))| k.len() + v.len()).sum()
    }

    fn last_change_under(&self, prefix: &str) -> u64 {
        self.changes.iter().filter(|(_, k)| k.starts_with(prefix)).map(|(i, _)| *i).max().unwrap_or(0)
    }
}

fn check_key_rules(key: &str) {
    let as_key = validate_key(key, false).is_ok();
    let as_prefix = validate_key(key, true).is_ok();
    if as_key {
        assert!(as_prefix, "{key:?} is a key but not a prefix");
        if key.len() < MAX_KEY_LEN {
            assert!(validate_key(&format!("{key}/"), true).is_ok(), "{key:?}/ is not a prefix");
        }
        assert!(!key.starts_with('/') && !key.ends_with('/') && !key.chars().any(char::is_control), "{key:?}");
        assert!(key.split('/').all(|s| !matches!(s, "" | "." | "..")), "{key:?}");
    }
    if as_prefix && !key.is_empty() {
        let body = key.strip_suffix('/').unwrap_or(key);
        assert!(validate_key(body, false).is_ok(), "prefix {key:?} without its '/' is not a key");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(ops) = u.arbitrary_iter::<Op>().and_then(|ops| ops.take(64).collect::<arbitrary::Result<Vec<Op>>>()) else {
        return;
    };
    let config = RegistryConfig::default().max_config_keys(MAX_KEYS).max_config_bytes(MAX_BYTES);
    let store = Store::new(config);
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("a runtime");
    let mut model = Model { index: store.index(), ..Model::default() };
    let mut history = vec![model.index];

    for op in ops {
        match op {
            Op::Put(Key(key), Value(value)) => {
                check_key_rules(&key);
                let got = store.config_put(&key, &value);
                let old = model.live.get(&key);
                let bytes = model.bytes() - old.map_or(0, |(v, _)| key.len() + v.len()) + key.len() + value.len();
                match got {
                    Err(StoreError::Config(_)) => {
                        assert!(validate_key(&key, false).is_err() || value.len() > MAX_VALUE_LEN, "{key:?}")
                    }
                    _ if validate_key(&key, false).is_err() => panic!("bad key {key:?} accepted: {got:?}"),
                    Ok(revision) if old.is_some_and(|(v, _)| *v == value) => {
                        assert_eq!(Some(revision), old.map(|(_, r)| *r), "an unchanged put changed the revision")
                    }
                    Err(StoreError::TooManyKeys { .. }) => assert!(old.is_none() && model.live.len() >= MAX_KEYS),
                    Err(StoreError::ConfigFull { .. }) => assert!(bytes > MAX_BYTES),
                    Ok(revision) => {
                        assert!(value.len() <= MAX_VALUE_LEN && bytes <= MAX_BYTES, "{key:?}");
                        assert!(old.is_some() || model.live.len() < MAX_KEYS);
                        model.index += 1;
                        assert_eq!(revision, model.index);
                        model.live.insert(key.clone(), (value, revision));
                        model.changes.push((revision, key));
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            Op::Get(Key(key)) => match store.config_get(&key) {
                Ok(entry) => {
                    let expected = model.live.get(&key).map(|(v, r)| ConfigEntry::new(key.clone(), v.clone(), *r));
                    assert_eq!(entry, expected);
                }
                Err(_) => assert!(validate_key(&key, false).is_err()),
            },
            Op::Delete(Key(key)) => match store.config_delete(&key) {
                Ok((index, existed)) => {
                    assert_eq!(existed, model.live.remove(&key).is_some());
                    if existed {
                        model.index += 1;
                        model.deletes += 1;
                        model.changes.push((model.index, key));
                    }
                    assert_eq!(index, model.index);
                }
                Err(_) => assert!(validate_key(&key, false).is_err()),
            },
            Op::List(Key(prefix)) => {
                check_key_rules(&prefix);
                let Ok(snapshot) = store.config_list(&prefix) else {
                    assert!(validate_key(&prefix, true).is_err(), "{prefix:?}");
                    continue;
                };
                let expected: Vec<ConfigEntry> = model
                    .live
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, (v, r))| ConfigEntry::new(k.clone(), v.clone(), *r))
                    .collect();
                assert_eq!(snapshot.entries, expected);
                assert_eq!(snapshot.revision, model.index);
                let known = model.lists.entry(prefix).or_default();
                let mut replayed = known.clone();
                let events = diff_entries(known, snapshot.entries);
                apply_events(&mut replayed, &events);
                assert_eq!(&replayed, known, "diff_entries then apply_events lost a change");
                let now: BTreeMap<String, ConfigEntry> = expected.into_iter().map(|e| (e.key.clone(), e)).collect();
                assert_eq!(known, &now);
            }
            Op::Wait(Key(prefix), back) => {
                let after = history[history.len() - 1 - usize::from(back) % history.len()];
                let got = runtime.block_on(store.wait_for_config_change(&prefix, after, Duration::ZERO));
                let last = model.last_change_under(&prefix);
                if last > after {
                    assert!(got > after, "missed change {last} under {prefix:?} after {after} (got {got})");
                }
                if model.deletes <= MAX_KEYS {
                    assert_eq!(got, last, "prefix {prefix:?} after {after}");
                }
            }
        }
        history.push(model.index);
    }
});
