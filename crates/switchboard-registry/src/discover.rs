//! Caller side of the built-in registry: a [`Discover`] source
//! ([`BuiltinDiscover`]) that follows a service with blocking queries.
//!
//! Per watched service, one task:
//!
//! 1. Lists the service (`GET /v1/services/{s}`) and reports every instance
//!    as added: the initial batch.
//! 2. Long-polls from the index it last saw (`?index=N&wait=…`). The
//!    registry answers as soon as the service's index passes `N`, so no
//!    change between two polls is missed: it is simply in the next answer.
//!    A registry whose index went backwards (it restarted) answers at once.
//! 3. Diffs each answer against its cache and reports only the differences
//!    (added, updated, removed); an answer with nothing new reports nothing.
//! 4. A registry that has just started (restarted, say) only knows the
//!    instances that have heartbeated since, so its answers carry
//!    `warming_up_ms` for one TTL. Meanwhile the task takes additions and
//!    updates but keeps instances the registry does not list yet, and asks
//!    again when the warm-up ends, when the list is trusted whole. Without
//!    this, every caller would drop every instance the moment a restarted
//!    registry answered, and calls would fail until servers re-registered.
//! 5. If the registry cannot be reached, the consumer keeps the last list
//!    (nothing is reported), and the task retries with exponential backoff
//!    (100 ms doubling to 5 s), each wait randomised anywhere between none
//!    and twice the step, so clients that lost the
//!    registry together do not come back together. The first success after
//!    failures re-lists and diffs, which reports whatever changed meanwhile.

use std::collections::HashMap;
use std::time::Duration;

use switchboard::client::Backoff;
use switchboard::discovery::{diff, ChangeSender, Changes, Discover, Instance};

use crate::client::RegistryClient;

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
        // `None`: list afresh (start, or after failures); `Some(i)`: wait for
        // a change past index `i`.
        let mut index: Option<u64> = None;
        let mut failures: u32 = 0;
        let mut warm_up_ends: Option<tokio::time::Instant> = None;
        loop {
            let answer = match index {
                None => self.client.instances(service).await,
                Some(after) => {
                    // While the registry warms up, ask again as soon as it is
                    // over, so removals it held back get through.
                    let wait = match warm_up_ends {
                        Some(at) => self.wait.min(at.saturating_duration_since(tokio::time::Instant::now())),
                        None => self.wait,
                    };
                    self.client.watch(service, after, wait).await
                }
            };
            let list = match answer {
                Ok(list) => list,
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(%service, %error, "registry unreachable; keeping the last known instances");
                    } else {
                        tracing::debug!(%service, %error, failures, "registry still unreachable");
                    }
                    index = None;
                    tokio::time::sleep(self.backoff.delay(failures)).await;
                    continue;
                }
            };
            if failures > 0 {
                tracing::info!(%service, failures, "registry reachable again; re-listed");
                failures = 0;
            }
            index = Some(list.index);
            let mut now: Vec<Instance> = list.instances.into_iter().map(Instance::from).collect();
            if list.warming_up_ms > 0 {
                // A registry that just started does not know every live
                // instance yet: take what it adds, keep what it lacks. The
                // wait below ends with the warm-up, and the list after it
                // is trusted whole.
                let listed: std::collections::HashSet<String> = now.iter().map(|i| i.id.clone()).collect();
                now.extend(known.values().filter(|i| !listed.contains(&i.id)).cloned());
                warm_up_ends = Some(tokio::time::Instant::now() + Duration::from_millis(list.warming_up_ms));
            } else {
                warm_up_ends = None;
            }
            let changes = diff(&mut known, now);
            if first || !changes.is_empty() {
                first = false;
                if tx.send(changes).await.is_err() {
                    return;
                }
            }
        }
    }
}
