//! Config keys in etcd: [`EtcdConfigStore`], the
//! [`ConfigStore`] trait over `<root>/config/`.

use etcd_client::DeleteOptions;
use switchboard::config::{
    validate_key, validate_value, ConfigEntry, ConfigError, ConfigEvent, ConfigEventSender, ConfigSnapshot,
    ConfigStore, ConfigWatch,
};
use switchboard::BoxFuture;

use super::watch::{list, Follower, Kv, KvEvent};
use super::{EtcdConnection, EtcdError};

/// Plain config keys under `<root>/config/` in etcd.
///
/// Values are UTF-8 text; a key whose value is not (written by some other
/// tool) reads as an error and is left out of lists and watches, with a
/// warning. Watches use the same list-diff-watch recipe as discovery
/// ([`super::watch`]), so a compaction or a lost connection never loses a
/// change.
#[derive(Debug, Clone)]
pub struct EtcdConfigStore {
    conn: EtcdConnection,
}

impl EtcdConfigStore {
    /// Config keys over `conn`.
    pub fn new(conn: EtcdConnection) -> EtcdConfigStore {
        EtcdConfigStore { conn }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.conn.options().config_prefix())
    }
}

fn unavailable(error: EtcdError) -> ConfigError {
    match error {
        EtcdError::Etcd(etcd_client::Error::GRpcStatus(status)) if status.code() == tonic::Code::InvalidArgument => {
            ConfigError::Backend(status.message().to_owned())
        }
        other => ConfigError::Unavailable(other.to_string()),
    }
}

/// The entry a stored key-value is, keyed relative to the config root.
fn entry(root: &str, kv: Kv) -> Result<ConfigEntry, ConfigError> {
    let key = kv.key.strip_prefix(root).unwrap_or(&kv.key).to_owned();
    let revision = u64::try_from(kv.mod_revision).unwrap_or(0);
    match String::from_utf8(kv.value) {
        Ok(value) => Ok(ConfigEntry { key, value, revision }),
        Err(_) => Err(ConfigError::Backend(format!("the value of {key:?} is not UTF-8 text"))),
    }
}

impl ConfigStore for EtcdConfigStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ConfigEntry>, ConfigError>> {
        Box::pin(async move {
            validate_key(key, false)?;
            let full = self.full_key(key);
            let answer =
                self.conn.request(|mut c| async move { c.get(full, None).await }).await.map_err(unavailable)?;
            let Some(kv) = answer.kvs().first() else { return Ok(None) };
            let kv = Kv {
                key: self.full_key(key),
                value: kv.value().to_vec(),
                mod_revision: kv.mod_revision(),
                lease: kv.lease(),
            };
            entry(&self.conn.options().config_prefix(), kv).map(Some)
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<ConfigSnapshot, ConfigError>> {
        Box::pin(async move {
            validate_key(prefix, true)?;
            let root = self.conn.options().config_prefix();
            let listing = list(&self.conn, &self.full_key(prefix)).await.map_err(unavailable)?;
            let mut entries = Vec::with_capacity(listing.kvs.len());
            for kv in listing.kvs {
                match entry(&root, kv) {
                    Ok(e) => entries.push(e),
                    Err(error) => tracing::warn!(%error, "leaving a config key out of the list"),
                }
            }
            Ok(ConfigSnapshot { entries, revision: u64::try_from(listing.revision).unwrap_or(0) })
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<u64, ConfigError>> {
        Box::pin(async move {
            validate_key(key, false)?;
            validate_value(value)?;
            let full = self.full_key(key);
            let value = value.to_owned();
            let answer =
                self.conn.request(|mut c| async move { c.put(full, value, None).await }).await.map_err(unavailable)?;
            Ok(answer.header().map(|h| u64::try_from(h.revision()).unwrap_or(0)).unwrap_or(0))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, ConfigError>> {
        Box::pin(async move {
            validate_key(key, false)?;
            let full = self.full_key(key);
            let answer = self
                .conn
                .request(|mut c| async move { c.delete(full, Some(DeleteOptions::new())).await })
                .await
                .map_err(unavailable)?;
            Ok(answer.deleted() > 0)
        })
    }

    fn watch(&self, prefix: &str) -> ConfigWatch {
        let (tx, rx) = ConfigWatch::channel(16);
        let root = self.conn.options().config_prefix();
        if let Err(error) = validate_key(prefix, true) {
            // Nothing to follow: the watch ends at once, and says why.
            tracing::warn!(%error, "not watching an invalid config prefix");
            return rx;
        }
        let follower = Follower::new(self.conn.clone(), self.full_key(prefix));
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                _ = follow(follower, root, &tx) => {}
            }
        });
        rx
    }
}

async fn follow(mut follower: Follower, root: String, tx: &ConfigEventSender) {
    let mut first = true;
    loop {
        let mut batch = Vec::new();
        for event in follower.next().await {
            match event {
                KvEvent::Put(kv) => match entry(&root, kv) {
                    Ok(e) => batch.push(ConfigEvent::Put(e)),
                    Err(error) => tracing::warn!(%error, "skipping a config change"),
                },
                KvEvent::Deleted(key) => {
                    let key = key.strip_prefix(&root).unwrap_or(&key).to_owned();
                    batch.push(ConfigEvent::Deleted { key });
                }
            }
        }
        if first || !batch.is_empty() {
            first = false;
            if tx.send(batch).await.is_err() {
                return;
            }
        }
    }
}
