//! Caller side: [`EtcdDiscover`] turns a service's records in etcd into the
//! same change stream the built-in registry's discovery produces.

use std::collections::{BTreeMap, HashMap};

use switchboard::discovery::{diff, ChangeSender, Changes, Discover, Instance};

use super::watch::{Follower, KvEvent};
use super::EtcdConnection;
use crate::model::RegisterRequest;

/// Follows services registered in etcd (`<root>/services/<service>/`).
///
/// One task per watched service runs a [`Follower`] (list at a revision,
/// watch from the next, re-list and diff after any lost watch) and reports
/// the instances that came, changed and went. A record that does not parse
/// or does not match its key is skipped with a warning, so one bad writer
/// cannot take a service's callers down.
#[derive(Debug, Clone)]
pub struct EtcdDiscover {
    conn: EtcdConnection,
}

impl EtcdDiscover {
    /// Discovery over `conn`.
    pub fn new(conn: EtcdConnection) -> EtcdDiscover {
        EtcdDiscover { conn }
    }
}

impl Discover for EtcdDiscover {
    fn discover(&self, service: &str) -> Changes {
        let (tx, rx) = Changes::channel(16);
        let conn = self.conn.clone();
        let service = service.to_owned();
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                _ = follow(conn, &service, &tx) => {}
            }
        });
        rx
    }
}

async fn follow(conn: EtcdConnection, service: &str, tx: &ChangeSender) {
    let prefix = conn.options().service_prefix(service);
    let mut follower = Follower::new(conn, prefix.clone());
    // Instances by key, as etcd holds them, and by id, as reported.
    let mut current: BTreeMap<String, Instance> = BTreeMap::new();
    let mut known: HashMap<String, Instance> = HashMap::new();
    let mut first = true;
    loop {
        let events = follower.next().await;
        for event in events {
            match event {
                KvEvent::Put(kv) => match parse_record(&kv.key, &kv.value) {
                    Ok(record) if record.service == service && kv.key.strip_prefix(&prefix) == Some(&record.id) => {
                        current.insert(kv.key, instance_of(record));
                    }
                    Ok(record) => {
                        tracing::warn!(key = %kv.key, service = %record.service, id = %record.id,
                            "skipping a record whose service or id does not match its key");
                        current.remove(&kv.key);
                    }
                    Err(reason) => {
                        tracing::warn!(key = %kv.key, %reason, "skipping a record that does not parse");
                        current.remove(&kv.key);
                    }
                },
                KvEvent::Deleted(key) => {
                    current.remove(&key);
                }
            }
        }
        let changes = diff(&mut known, current.values().cloned().collect());
        if first || !changes.is_empty() {
            first = false;
            if tx.send(changes).await.is_err() {
                return;
            }
        }
    }
}

/// An instance record as stored: JSON [`RegisterRequest`], validated.
pub(crate) fn parse_record(key: &str, value: &[u8]) -> Result<RegisterRequest, String> {
    let record: RegisterRequest = serde_json::from_slice(value).map_err(|e| format!("{key}: not a record: {e}"))?;
    record.validate().map_err(|e| format!("{key}: {e}"))?;
    Ok(record)
}

/// The instance a record describes (records in etcd are alive while their
/// lease is, so always healthy).
fn instance_of(r: RegisterRequest) -> Instance {
    Instance { id: r.id, address: r.address, metadata: r.metadata, methods: r.methods, healthy: true }
}
