//! Passive ejection and active probing.
//!
//! A refused or lost connection takes an instance out of rotation at once:
//! the registry may list a dead instance for a whole TTL, and every call
//! sent there would pay a failed attempt. A probe task then reconnects with
//! the client's backoff (a ping), and puts the instance back when a ping
//! answers (a successful call does too, when the instance was the last
//! resort). With active probing on, every instance in rotation is also
//! pinged on a timer, so one that stops answering is ejected before a call
//! finds out.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Inner, Member};
use crate::error::Error;

impl Inner {
    /// Take `member` out of rotation (if it is not out already) and start
    /// probing it.
    pub(super) fn eject(self: &Arc<Self>, member: &Arc<Member>, why: &Error) {
        let now = self.now_ms();
        if member.state.ejected_at.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::info!(service = %self.service, instance = %member.instance().address, error = %why,
                "out of rotation until a reconnect succeeds");
            tokio::spawn(reconnect(Arc::downgrade(self), Arc::clone(member)));
        }
    }
}

/// Ping an ejected member with backoff until it answers (back in rotation),
/// it leaves discovery, or the channel goes.
async fn reconnect(inner: Weak<Inner>, member: Arc<Member>) {
    let mut failures = 0u32;
    loop {
        failures = failures.saturating_add(1);
        let (wait, timeout) = match inner.upgrade() {
            Some(i) => (i.settings.config.backoff.delay(failures), i.settings.config.connect_timeout),
            None => return,
        };
        tokio::time::sleep(wait).await;
        let Some(i) = inner.upgrade() else { return };
        if !i.in_use(&member.state) || member.state.ejected_at.load(Ordering::Relaxed) == 0 {
            // It left (nothing to bring back), or a call brought it back.
            return;
        }
        drop(i);
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, member.clients[0].ping()).await {
            if member.state.ejected_at.swap(0, Ordering::Relaxed) != 0 {
                if let Some(i) = inner.upgrade() {
                    tracing::info!(service = %i.service, instance = %member.instance().address, failures,
                        "reconnected; back in rotation");
                }
            }
            return;
        }
    }
}

/// Active probing: ping every member in rotation every `every`; eject those
/// that fail or do not answer within the connect timeout.
pub(super) async fn probe_all(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        let timeout = i.settings.config.connect_timeout;
        let members = i.members.load_full();
        drop(i);
        let mut pings = tokio::task::JoinSet::new();
        for member in members.iter().filter(|m| m.state.ejected_at.load(Ordering::Relaxed) == 0) {
            let member = Arc::clone(member);
            pings.spawn(async move {
                let result = match tokio::time::timeout(timeout, member.clients[0].ping()).await {
                    Ok(result) => result.map(|_| ()),
                    Err(_) => Err(Error::DeadlineExceeded(timeout)),
                };
                (member, result)
            });
        }
        while let Some(done) = pings.join_next().await {
            let Ok((member, Err(error))) = done else { continue };
            if let Some(i) = inner.upgrade() {
                if i.in_use(&member.state) {
                    i.eject(&member, &error);
                }
            }
        }
    }
}
