//! Caller side of the built-in registry: a [`Discover`] source
//! ([`BuiltinDiscover`]) that follows a service with blocking queries.
//!
//! Per watched service, one task:
//!
//! 1. Lists the service (`GET /v1/services/{s}`) and reports every instance
//!    as added: the initial batch (sent even when empty). A service whose
//!    list is larger than the registry's listing cap arrives in several
//!    pages, each reported as it comes.
//! 2. Long-polls from the cursor it last saw (`?index=N&epoch=E&wait=…`).
//!    The registry answers as soon as the service's index passes `N`, with
//!    only what changed after `N`: the records added or changed and the ids
//!    removed (see [`ServiceChanges`](crate::model::ServiceChanges)). No
//!    change between two polls is missed: it is simply in the next answer.
//! 3. Reports each answer's differences from its cache (added, updated,
//!    removed); an answer with nothing new reports nothing. A *reset* answer
//!    (a first listing, or the registry could not answer from the cursor:
//!    it restarted, or no longer keeps that far back) lists every live
//!    instance; once its last page is in, the task removes the instances it
//!    knew that the reset did not mention.
//! 4. A registry that has just started (restarted, say) only knows the
//!    instances that have heartbeated since, so its answers carry
//!    `warming_up_ms` for one TTL. Meanwhile a reset's unmentioned instances
//!    are kept rather than removed, and the task lists the service again
//!    when the warm-up ends, when the list is trusted whole. Without this,
//!    every caller would drop every instance the moment a restarted
//!    registry answered, and calls would fail until servers re-registered.
//! 5. If the registry cannot be reached, the consumer keeps the last list
//!    (nothing is reported), and the task retries with exponential backoff
//!    (100 ms doubling to 5 s), each wait randomised anywhere between none
//!    and twice the step, so clients that lost the registry together do not
//!    come back together. It resumes from its cursor: a registry that
//!    restarted meanwhile has another epoch and answers with a reset.
//!
//! Memory per watched service: the cache (bounded by the registry's
//! `max_instances_per_service`), one page at a time (bounded by its listing
//! cap, and by [`RegistryClient::max_answer_bytes`] whatever the registry
//! sends), and during a reset the ids it mentioned.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use switchboard::backoff::Backoff;
use switchboard::discovery::{Change, ChangeSender, Changes, Discover, Instance};

use crate::client::RegistryClient;
use crate::model::Cursor;

/// Follows services in the built-in registry.
#[derive(Debug, Clone)]
pub struct BuiltinDiscover {
    client: RegistryClient,
    wait: Duration,
    backoff: Backoff,
}

impl BuiltinDiscover {
    /// A source reading from `client`'s registry.
    pub fn new(client: RegistryClient) -> BuiltinDiscover {
        BuiltinDiscover { client, wait: Duration::from_secs(30), backoff: crate::RETRY_BACKOFF }
    }

    /// Longest a blocking query waits before re-asking. Default 30 s.
    pub fn wait(mut self, wait: Duration) -> BuiltinDiscover {
        self.wait = wait;
        self
    }

    /// Backoff between attempts while the registry is unreachable.
    pub fn backoff(mut self, backoff: Backoff) -> BuiltinDiscover {
        self.backoff = backoff;
        self
    }
}

impl Discover for BuiltinDiscover {
    fn discover(&self, service: &str) -> Changes {
        let (tx, rx) = Changes::channel(16);
        let source = self.clone();
        let service = service.to_owned();
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                _ = source.follow(&service, &tx) => {}
            }
        });
        rx
    }
}

impl BuiltinDiscover {
    async fn follow(&self, service: &str, tx: &ChangeSender) {
        let mut known: HashMap<String, Instance> = HashMap::new();
        let mut first = true;
        // `listed`: the first answer is a plain listing (answered at once,
        // even for a service nobody registered); later ones are blocking
        // queries from `cursor`.
        let mut listed = false;
        let mut cursor = Cursor::default();
        // During a reset: the ids its pages mentioned so far.
        let mut mentioned: Option<HashSet<String>> = None;
        let mut failures: u32 = 0;
        // Instances a reset during the warm-up did not mention are kept;
        // list again once the warm-up is over.
        let mut relist_at: Option<tokio::time::Instant> = None;
        loop {
            if relist_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                relist_at = None;
                listed = false;
                cursor = Cursor::default();
            }
            let answer = if listed {
                let wait = match relist_at {
                    Some(at) => self.wait.min(at.saturating_duration_since(tokio::time::Instant::now())),
                    None => self.wait,
                };
                self.client.watch(service, cursor, wait).await
            } else {
                self.client.changes(service, cursor).await
            };
            let page = match answer {
                Ok(page) => page,
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(%service, %error, "registry unreachable; keeping the last known instances");
                    } else {
                        tracing::debug!(%service, %error, failures, "registry still unreachable");
                    }
                    tokio::time::sleep(self.backoff.delay(failures)).await;
                    continue;
                }
            };
            if failures > 0 {
                tracing::info!(%service, failures, "registry reachable again");
                failures = 0;
            }
            listed = true;
            cursor = page.cursor();
            if page.reset {
                mentioned = Some(HashSet::new());
            }
            let mut changes = Vec::new();
            for record in page.instances {
                let instance = Instance::from(record);
                if let Some(seen) = mentioned.as_mut() {
                    seen.insert(instance.id.clone());
                }
                match known.get(&instance.id) {
                    None => changes.push(Change::Added(instance.clone())),
                    Some(old) if *old != instance => changes.push(Change::Updated(instance.clone())),
                    Some(_) => {}
                }
                known.insert(instance.id.clone(), instance);
            }
            for id in page.removed {
                if known.remove(&id).is_some() {
                    changes.push(Change::Removed(id));
                }
            }
            if !page.more {
                if let Some(seen) = mentioned.take() {
                    let mut gone: Vec<String> = known.keys().filter(|id| !seen.contains(*id)).cloned().collect();
                    if page.warming_up_ms > 0 && !gone.is_empty() {
                        // A registry that just started does not know every
                        // live instance yet: keep what it lacks, ask again
                        // when the warm-up is over.
                        relist_at = Some(tokio::time::Instant::now() + Duration::from_millis(page.warming_up_ms));
                    } else {
                        gone.sort();
                        for id in gone {
                            known.remove(&id);
                            changes.push(Change::Removed(id));
                        }
                    }
                }
            }
            if first || !changes.is_empty() {
                first = false;
                if tx.send(changes).await.is_err() {
                    return;
                }
            }
        }
    }
}
