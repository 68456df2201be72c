//! Server side: [`EtcdRegistrar`] keeps a server's records in etcd under a
//! lease, and never lets them drop out silently.
//!
//! One lease per server (not per record): its records live and die
//! together, which is what they do in reality. The loop:
//!
//! 1. **Grant** a lease with the configured TTL, **put** every wanted record
//!    at `<root>/services/<service>/<id>` attached to it, and open a
//!    keepalive stream.
//! 2. **Renew** every TTL/3. Each answer carries the lease's remaining TTL;
//!    an answer with TTL 0 means etcd has expired the lease (the keys are
//!    gone already).
//! 3. **Lease lost** (etcd said it expired, a keepalive could not be
//!    reopened because the lease is unknown, or no renewal got through for a
//!    whole TTL): log a warning naming the lease, grant a new one and put
//!    every record again. The old lease, if it still exists, is revoked
//!    once the records sit on the new one. This is the bug rpcx#420 and
//!    Kitex's registry-etcd#11 shipped: a server that lost its lease
//!    stayed up, unregistered, and nobody noticed.
//! 4. A record added, changed or dropped while running (a service added at
//!    run time) is put or deleted at once.
//! 5. Anything that fails is retried with backoff and jitter (100 ms
//!    doubling to 5 s); the first failure is logged as a warning, the
//!    recovery as info.
//! 6. On graceful shutdown, **revoke** the lease: etcd deletes every record
//!    at once, and watchers see the instances go before the process exits.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use switchboard::backoff::Backoff;
use switchboard::discovery::{Registrar, Registration};
use switchboard::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{EtcdConnection, EtcdError};
use crate::model::RegisterRequest;

/// Keeps registrations alive in etcd under a lease.
#[derive(Debug, Clone)]
pub struct EtcdRegistrar {
    conn: EtcdConnection,
}

impl EtcdRegistrar {
    /// A registrar over `conn` (its options give the TTL and key root).
    pub fn new(conn: EtcdConnection) -> EtcdRegistrar {
        EtcdRegistrar { conn }
    }
}

impl Registrar for EtcdRegistrar {
    fn keep_registered(&self, wanted: watch::Receiver<Vec<Registration>>) -> BoxFuture<'static, ()> {
        Box::pin(Keeper::new(self.conn.clone()).run(wanted))
    }
}

type Key = (String, String);

fn key(r: &Registration) -> Key {
    (r.service.clone(), r.id.clone())
}

/// The lease the records sit on.
struct Lease {
    id: i64,
    /// When etcd last confirmed it (granted or renewed).
    renewed_at: Instant,
    /// The keepalive stream; `None` while it has to be reopened.
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

/// What woke the loop.
enum Wake {
    Wanted(bool),
    Tick,
    Answer(Result<Option<etcd_client::LeaseKeepAliveResponse>, etcd_client::Error>),
    Expired,
    Retry,
}

struct Keeper {
    conn: EtcdConnection,
    ttl: Duration,
    lease: Option<Lease>,
    /// A lease we gave up on, to revoke once the records moved off it.
    abandoned: Option<i64>,
    /// What etcd holds under the current lease, as far as we know.
    registered: HashMap<Key, Registration>,
    /// Consecutive failed attempts to reach the wanted state.
    failures: u32,
    retry_at: Instant,
    backoff: Backoff,
}

impl Keeper {
    fn new(conn: EtcdConnection) -> Keeper {
        let ttl = Duration::from_secs(u64::try_from(conn.options().ttl_secs()).unwrap_or(6));
        Keeper {
            conn,
            ttl,
            lease: None,
            abandoned: None,
            registered: HashMap::new(),
            failures: 0,
            retry_at: Instant::now(),
            backoff: crate::RETRY_BACKOFF,
        }
    }

    async fn run(mut self, mut wanted: watch::Receiver<Vec<Registration>>) {
        let renew_every = self.ttl / 3;
        let mut desired = wanted.borrow_and_update().clone();
        let mut next_tick = Instant::now() + renew_every;
        loop {
            let in_sync = self.in_sync(&desired);
            if !in_sync && Instant::now() >= self.retry_at {
                self.sync(&desired).await;
                continue;
            }
            let expires_at = self.lease.as_ref().map(|l| l.renewed_at + self.ttl);
            let wake = {
                let stream = self.lease.as_mut().and_then(|l| l.stream.as_mut());
                tokio::select! {
                    changed = wanted.changed() => Wake::Wanted(changed.is_ok()),
                    _ = tokio::time::sleep_until(next_tick) => Wake::Tick,
                    answer = async { match stream { Some((_, s)) => s.message().await, None => std::future::pending().await } } => Wake::Answer(answer),
                    _ = async { match expires_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => Wake::Expired,
                    _ = tokio::time::sleep_until(self.retry_at), if !in_sync => Wake::Retry,
                }
            };
            match wake {
                Wake::Wanted(false) => break, // the server is shutting down
                Wake::Wanted(true) => desired = wanted.borrow_and_update().clone(),
                Wake::Tick => {
                    next_tick = Instant::now() + renew_every;
                    self.renew().await;
                }
                Wake::Answer(Ok(Some(answer))) if answer.ttl() > 0 => {
                    if let Some(lease) = self.lease.as_mut() {
                        lease.renewed_at = Instant::now();
                    }
                }
                Wake::Answer(Ok(Some(_))) => self.lost("etcd says it has expired"),
                Wake::Answer(Ok(None)) => self.stream_broke(&EtcdError::WatchEnded),
                Wake::Answer(Err(error)) => self.stream_broke(&EtcdError::Etcd(error)),
                Wake::Expired => self.lost("no renewal got through for a whole TTL"),
                Wake::Retry => {}
            }
        }
        self.withdraw().await;
    }

    /// Whether etcd holds exactly `desired` under a live lease.
    fn in_sync(&self, desired: &[Registration]) -> bool {
        self.lease.is_some()
            && self.registered.len() == desired.len()
            && desired.iter().all(|r| self.registered.get(&key(r)) == Some(r))
    }

    /// Grant a lease if there is none, then put and delete records until
    /// etcd holds `desired`. A failure schedules a retry with backoff.
    async fn sync(&mut self, desired: &[Registration]) {
        match self.try_sync(desired).await {
            Ok(()) => {
                if self.failures > 0 {
                    tracing::info!(failures = self.failures, records = desired.len(), "registered in etcd again");
                }
                self.failures = 0;
                if let Some(old) = self.abandoned.take() {
                    // Best effort: it may be gone already.
                    let revoked = self.conn.request(|mut c| async move { c.lease_revoke(old).await }).await;
                    tracing::debug!(lease = %format!("{old:x}"), ok = revoked.is_ok(), "revoked the abandoned lease");
                }
            }
            Err(error) => {
                self.failures += 1;
                if self.failures == 1 {
                    tracing::warn!(%error, "could not register in etcd; retrying with backoff");
                } else {
                    tracing::debug!(%error, failures = self.failures, "etcd registration failed again");
                }
                if error.to_string().contains("requested lease not found") {
                    self.lost("etcd does not know it");
                }
                self.retry_at = Instant::now() + self.backoff.delay(self.failures);
            }
        }
    }

    async fn try_sync(&mut self, desired: &[Registration]) -> Result<(), EtcdError> {
        let lease_id = match &self.lease {
            Some(lease) => lease.id,
            None => {
                let ttl = self.conn.options().ttl_secs();
                let granted = self.conn.request(|mut c| async move { c.lease_grant(ttl, None).await }).await?;
                let id = granted.id();
                self.registered.clear();
                self.lease = Some(Lease { id, renewed_at: Instant::now(), stream: None });
                tracing::info!(lease = %format!("{id:x}"), ttl_s = ttl, "granted an etcd lease");
                self.open_stream().await;
                id
            }
        };
        let options = self.conn.options().clone();
        let wanted: HashMap<Key, &Registration> = desired.iter().map(|r| (key(r), r)).collect();
        let stale: Vec<Key> = self.registered.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for k in stale {
            let path = options.instance_key(&k.0, &k.1);
            self.conn.request(|mut c| async move { c.delete(path, None).await }).await?;
            tracing::info!(service = %k.0, id = %k.1, "deregistered a service no longer served");
            self.registered.remove(&k);
        }
        for r in desired {
            if self.registered.get(&key(r)) == Some(r) {
                continue;
            }
            let record = RegisterRequest::from_registration(r, None);
            let value = serde_json::to_vec(&record).map_err(|e| {
                EtcdError::Etcd(etcd_client::Error::InvalidArgs(format!("cannot encode the record: {e}")))
            })?;
            let path = options.instance_key(&r.service, &r.id);
            let put = PutOptions::new().with_lease(lease_id);
            self.conn.request(|mut c| async move { c.put(path, value, Some(put)).await }).await?;
            tracing::info!(service = %r.service, id = %r.id, address = %r.address, lease = %format!("{lease_id:x}"),
                "registered in etcd");
            self.registered.insert(key(r), r.clone());
        }
        Ok(())
    }

    /// Opens the keepalive stream of the current lease. etcd answers the
    /// opening with the lease's TTL: an unknown lease is lost.
    async fn open_stream(&mut self) {
        let Some(id) = self.lease.as_ref().map(|l| l.id) else { return };
        match self.conn.request(|mut c| async move { c.lease_keep_alive(id).await }).await {
            Ok(stream) => {
                if let Some(lease) = self.lease.as_mut() {
                    lease.renewed_at = Instant::now();
                    lease.stream = Some(stream);
                }
            }
            Err(EtcdError::Etcd(etcd_client::Error::LeaseKeepAliveError(reason))) => {
                self.lost(&format!("etcd refused to renew it ({reason})"))
            }
            Err(error) => tracing::debug!(%error, "could not open the lease keepalive stream; retrying"),
        }
    }

    /// Sends one keepalive, reopening the stream first if it broke.
    async fn renew(&mut self) {
        let Some(lease) = self.lease.as_mut() else { return };
        match lease.stream.as_mut() {
            Some((keeper, _)) => {
                if let Err(error) = keeper.keep_alive().await {
                    self.stream_broke(&EtcdError::Etcd(error));
                }
            }
            None => self.open_stream().await,
        }
    }

    fn stream_broke(&mut self, error: &EtcdError) {
        if let Some(lease) = self.lease.as_mut() {
            if lease.stream.take().is_some() {
                tracing::debug!(lease = %format!("{:x}", lease.id), %error,
                    "lease keepalive stream broke; reopening at the next renewal");
            }
        }
    }

    /// The lease is gone (or must be presumed gone): start over with a new
    /// one. Never silent.
    fn lost(&mut self, why: &str) {
        let Some(lease) = self.lease.take() else { return };
        tracing::warn!(lease = %format!("{:x}", lease.id), records = self.registered.len(),
            "etcd lease lost: {why}; registering again with a new lease");
        self.abandoned = Some(lease.id);
        self.registered.clear();
        self.retry_at = Instant::now();
    }

    /// Graceful shutdown: revoking the lease deletes every record at once.
    async fn withdraw(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        let id = lease.id;
        drop(lease);
        match self.conn.request(|mut c| async move { c.lease_revoke(id).await }).await {
            Ok(_) => tracing::info!(lease = %format!("{id:x}"), records = self.registered.len(),
                "deregistered from etcd (lease revoked)"),
            Err(error) => tracing::warn!(lease = %format!("{id:x}"), %error,
                "could not revoke the etcd lease; the records expire with it within the TTL"),
        }
    }
}
