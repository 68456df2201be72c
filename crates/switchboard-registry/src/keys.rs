//! Config keys in the built-in registry, behind the backend-neutral
//! [`ConfigStore`] trait: [`BuiltinConfigStore`].
//!
//! Code that reads configuration holds an `Arc<dyn ConfigStore>` (from
//! [`Backend::config`](crate::Backend::config)) and never learns which
//! registry it talks to; this is the built-in registry's side, a thin layer
//! over [`RegistryClient`]'s `config_*` methods. Keys and values are checked
//! here with the core's [`validate_key`] / [`validate_value`] before any
//! request goes out, so a bad key costs no round trip and gets the same
//! error from every backend.
//!
//! ## Watching
//!
//! [`ConfigStore::watch`] follows a prefix the way
//! [`BuiltinDiscover`](crate::BuiltinDiscover) follows a service, one task
//! per watch:
//!
//! 1. Lists the prefix (`GET /v1/config?prefix=P`) and reports every entry
//!    as a put: the first batch, sent even when empty so the consumer knows
//!    the prefix has been read.
//! 2. Long-polls from the index of its last answer
//!    (`?index=N&wait=…`). The registry answers as soon as a key under the
//!    prefix is put or deleted after `N` (it keeps deletion records for
//!    this; see the store's config-key docs), so nothing between two polls
//!    is missed.
//! 3. Diffs every answer against its cache with [`diff_entries`] and reports
//!    only the differences; an answer with nothing new reports nothing.
//! 4. If the registry cannot be reached, the consumer keeps what it has
//!    (nothing is reported) and the task retries with exponential backoff
//!    and jitter (100 ms doubling to 5 s, each wait anywhere between none and
//!    twice the step). The first answer after a failure is a fresh list, and
//!    its diff against the cache is exactly what changed meanwhile: keys
//!    deleted, added or changed while the watcher was cut off.
//! 5. A registry that restarted counts its index from 1 again. Asked to wait
//!    from an index it has not reached, it answers at once, and the diff of
//!    that answer is again the difference. Unlike instances, config keys are
//!    not re-announced by anyone after a restart, so there is no warm-up
//!    here: the built-in registry keeps keys in memory, and a restarted one
//!    holds only what was put since (the deletions are real). One race is
//!    left: a registry restarted so fast that the watcher never failed to
//!    reach it, and whose index already passed the watcher's, looks like the
//!    same registry; the watch then catches up at the next change under the
//!    prefix or when its blocking query times out (`wait`, 30 s), since every
//!    answer, a timed-out one included, is a whole list and is diffed.
//! 6. The task ends when the consumer drops its [`ConfigWatch`].
//!
//! ```no_run
//! use switchboard::config::{ConfigEvent, ConfigStore};
//! use switchboard_registry::{BuiltinConfigStore, RegistryClient};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = BuiltinConfigStore::new(RegistryClient::new("http://127.0.0.1:7700")?);
//! store.put("routing/Arith", r#"{"zone": "eu-1"}"#).await?;
//! let mut watch = store.watch("routing/");
//! while let Some(batch) = watch.next().await {
//!     for event in batch {
//!         match event {
//!             ConfigEvent::Put(entry) => println!("{} = {}", entry.key, entry.value),
//!             ConfigEvent::Deleted { key } => println!("{key} deleted"),
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use switchboard::backoff::Backoff;
use switchboard::config::{
    diff_entries, validate_key, validate_value, ConfigEntry, ConfigError, ConfigEventSender, ConfigSnapshot,
    ConfigStore, ConfigWatch,
};
use switchboard::BoxFuture;

use crate::client::{ClientError, RegistryClient};

/// Config keys in the built-in registry, as a [`ConfigStore`].
#[derive(Debug, Clone)]
pub struct BuiltinConfigStore {
    client: RegistryClient,
    wait: Duration,
    backoff: Backoff,
}

impl BuiltinConfigStore {
    /// A store reading and writing `client`'s registry.
    pub fn new(client: RegistryClient) -> BuiltinConfigStore {
        BuiltinConfigStore { client, wait: Duration::from_secs(30), backoff: crate::RETRY_BACKOFF }
    }

    /// Longest a watch's blocking query waits before asking again. Default 30 s.
    pub fn wait(mut self, wait: Duration) -> BuiltinConfigStore {
        self.wait = wait;
        self
    }

    /// Backoff between a watch's attempts while the registry is unreachable.
    pub fn backoff(mut self, backoff: Backoff) -> BuiltinConfigStore {
        self.backoff = backoff;
        self
    }

    /// The registry client underneath.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    async fn follow(&self, prefix: &str, tx: &ConfigEventSender) {
        let mut known: BTreeMap<String, ConfigEntry> = BTreeMap::new();
        let mut first = true;
        // `None`: list afresh (start, or after failures); `Some(i)`: wait for
        // a change under the prefix past index `i`.
        let mut index: Option<u64> = None;
        let mut failures: u32 = 0;
        loop {
            let answer = match index {
                None => self.client.config_list(prefix).await,
                Some(after) => self.client.config_watch(prefix, after, self.wait).await,
            };
            let list = match answer {
                Ok(list) => list,
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(%prefix, %error, "registry unreachable; keeping the last known config keys");
                    } else {
                        tracing::debug!(%prefix, %error, failures, "registry still unreachable");
                    }
                    index = None;
                    tokio::time::sleep(self.backoff.delay(failures)).await;
                    continue;
                }
            };
            if failures > 0 {
                tracing::info!(%prefix, failures, "registry reachable again; re-listed config keys");
                failures = 0;
            }
            if index.is_some_and(|after| list.index < after) {
                tracing::info!(%prefix, index = list.index, "registry index went backwards (it restarted); diffing its list");
            }
            index = Some(list.index);
            let events = diff_entries(&mut known, list.entries.into_iter().map(ConfigEntry::from).collect());
            if first || !events.is_empty() {
                first = false;
                if tx.send(events).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The [`ConfigError`] for a failed registry call about `key` (a value of
/// `value_len` bytes for a put).
fn config_error(error: ClientError, key: &str, value_len: usize) -> ConfigError {
    match error {
        ClientError::Unreachable { .. } => ConfigError::Unavailable(with_causes(&error)),
        ClientError::Api(api) if api.status.is_server_error() => ConfigError::Unavailable(api.to_string()),
        ClientError::Api(api) if api.code == "invalid_key" => {
            ConfigError::InvalidKey { key: key.to_owned(), reason: api.message }
        }
        ClientError::Api(api) if api.status == StatusCode::PAYLOAD_TOO_LARGE => {
            ConfigError::TooLarge { len: value_len }
        }
        other => ConfigError::Backend(other.to_string()),
    }
}

/// `error` and its sources, `: `-separated ("connection refused" is often
/// only in a source), since [`ConfigError`] carries text.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl ConfigStore for BuiltinConfigStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ConfigEntry>, ConfigError>> {
        Box::pin(async move {
            validate_key(key, false)?;
            let entry = self.client.config_get(key).await.map_err(|e| config_error(e, key, 0))?;
            Ok(entry.map(ConfigEntry::from))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<ConfigSnapshot, ConfigError>> {
        Box::pin(async move {
            validate_key(prefix, true)?;
            let list = self.client.config_list(prefix).await.map_err(|e| config_error(e, prefix, 0))?;
            Ok(ConfigSnapshot::from(list))
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<u64, ConfigError>> {
        Box::pin(async move {
            validate_key(key, false)?;
            validate_value(value)?;
            let reply = self.client.config_put(key, value).await.map_err(|e| config_error(e, key, value.len()))?;
            Ok(reply.index)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, ConfigError>> {
        Box::pin(async move {
            validate_key(key, false)?;
            let reply = self.client.config_delete(key).await.map_err(|e| config_error(e, key, 0))?;
            Ok(reply.deleted)
        })
    }

    /// Follows `prefix` (see the module docs). An invalid prefix is logged
    /// and ends the watch at once: its `next()` returns `None`.
    fn watch(&self, prefix: &str) -> ConfigWatch {
        let (tx, rx) = ConfigWatch::channel(16);
        let source = self.clone();
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            if let Err(error) = validate_key(&prefix, true) {
                tracing::error!(%error, "config watch not started");
                return;
            }
            tokio::select! {
                () = tx.closed() => {}
                () = source.follow(&prefix, &tx) => {}
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ApiError;

    fn api(status: StatusCode, code: &str) -> ClientError {
        ClientError::Api(ApiError { status, code: code.to_owned(), message: "no".to_owned() })
    }

    #[test]
    fn registry_errors_map_to_config_errors() {
        assert!(matches!(
            config_error(api(StatusCode::BAD_REQUEST, "invalid_key"), "k", 0),
            ConfigError::InvalidKey { key, .. } if key == "k"
        ));
        assert_eq!(
            config_error(api(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"), "k", 9),
            ConfigError::TooLarge { len: 9 }
        );
        assert!(config_error(api(StatusCode::SERVICE_UNAVAILABLE, ""), "k", 0).is_transient());
        assert!(
            matches!(config_error(api(StatusCode::CONFLICT, "too_many_keys"), "k", 0), ConfigError::Backend(m) if m.contains("too_many_keys"))
        );
        let bad = ClientError::BadAnswer { url: "u".into(), reason: "r".into() };
        assert!(matches!(config_error(bad, "k", 0), ConfigError::Backend(_)));
    }
}
