//! One call through a [`Balanced`](super::Balanced) channel: the fail mode's
//! loop, picking an instance, and one attempt on it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::Permit;
use super::policy::BackupDelay;
use super::route::{self, Group};
use super::{Affinity, FailMode, Inner, Member, PickInfo};
use crate::call::{Request, Response};
use crate::client::{CallOptions, Channel};
use crate::error::{Error, Retry};
use crate::status::Code;

/// A filter over members: one preference level of [`Inner::pick`].
type Tier<'a> = dyn Fn(&Member) -> bool + 'a;

/// Where a call stands: the instances it used, and how many attempts.
struct Progress<'a> {
    tried: Vec<Arc<Member>>,
    sent: u32,
    group: Group<'a>,
    key: Option<&'a str>,
}

impl Inner {
    /// Every attempt of one call, by its fail mode. The caller holds the
    /// deadline around this.
    pub(super) async fn call(
        self: &Arc<Self>,
        req: Request,
        opts: &CallOptions,
        deadline: Option<Instant>,
    ) -> Result<Response, Error> {
        self.wait_ready(deadline).await?;
        self.budget.deposit();
        let mode = opts.extensions.get::<FailMode>().copied().unwrap_or(self.settings.fail_mode);
        let max = mode.attempts();
        let mut progress = Progress {
            tried: Vec::new(),
            sent: 0,
            group: route::route(&self.settings.rules, &opts.metadata),
            key: opts.extensions.get::<Affinity>().map(|a| a.0.as_str()),
        };
        let mut backoffs = 0u32;
        let mut next = self.pick(&progress)?;
        loop {
            let (member, permit) = next;
            progress.sent += 1;
            let result = match mode {
                FailMode::Backup { delay, .. } if opts.idempotent && progress.sent < max => {
                    self.hedged(Arc::clone(&member), permit, delay, &req, opts, deadline, &mut progress).await
                }
                _ => {
                    progress.tried.push(Arc::clone(&member));
                    self.attempt(&member, permit, &req, opts, deadline).await
                }
            };
            let error = match result {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let retry = error.retry();
            let allowed = match retry {
                Retry::Always => true,
                Retry::IfIdempotent => opts.idempotent,
                Retry::Never => false,
            };
            if !allowed || progress.sent >= max {
                return Err(error);
            }
            // Someone to try next, or this error is the call's.
            let picked = match mode {
                FailMode::FailTry { .. } => match member.state.breaker.try_acquire() {
                    Some(permit) => Ok((Arc::clone(&member), permit)),
                    None => Err(()),
                },
                _ => self.pick(&progress).map_err(drop),
            };
            let Ok(picked) = picked else { return Err(error) };
            next = picked;
            let may_have_run = retry != Retry::Always;
            if may_have_run && !self.budget.withdraw() {
                self.counters.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(service = %self.service, %error, "retry budget spent; not retrying");
                return Err(error);
            }
            // Back off before repeating a call that may have run, and before
            // knocking on the same door again; a call that never left this
            // process moves to the next instance at once.
            if may_have_run || matches!(mode, FailMode::FailTry { .. }) {
                backoffs += 1;
                let wait = self.settings.retry.backoff.delay(backoffs);
                if deadline.is_some_and(|at| Instant::now() + wait >= at) {
                    return Err(error);
                }
                tokio::time::sleep(wait).await;
            }
            let counter = if may_have_run { &self.counters.retries } else { &self.counters.transparent };
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(service = %self.service, instance = %member.instance().address, %error,
                attempt = progress.sent + 1, "retrying");
        }
    }

    /// Waits for discovery's first list, up to the first-list timeout or
    /// the call's deadline, whichever comes first; either way, running out
    /// is reported as what it is, no list yet (a registry not reachable,
    /// most often), not as a deadline that says nothing about why.
    async fn wait_ready(&self, deadline: Option<Instant>) -> Result<(), Error> {
        if *self.ready.borrow() {
            return Ok(());
        }
        let mut ready = self.ready.clone();
        let began = Instant::now();
        let mut limit = began + self.settings.first_list_timeout;
        if let Some(at) = deadline {
            limit = limit.min(at);
        }
        let listed = tokio::time::timeout_at(limit, ready.wait_for(|r| *r)).await.is_ok();
        if listed {
            Ok(())
        } else {
            let waited = limit.saturating_duration_since(began);
            Err(self.no_instances(format!(
                "discovery has listed nothing yet after {waited:?} (is the registry reachable?)"
            )))
        }
    }

    pub(super) fn no_instances(&self, reason: String) -> Error {
        Error::NoInstances { service: self.service.clone(), reason }
    }

    /// An attempt on `member`; if it has not answered after the backup
    /// delay, a copy on another instance (budget allowing). The first answer
    /// wins; the other attempt is dropped, which cancels it on its server.
    #[allow(clippy::too_many_arguments)]
    async fn hedged(
        self: &Arc<Self>,
        first: Arc<Member>,
        permit: Permit,
        delay: BackupDelay,
        req: &Request,
        opts: &CallOptions,
        deadline: Option<Instant>,
        progress: &mut Progress<'_>,
    ) -> Result<Response, Error> {
        progress.tried.push(Arc::clone(&first));
        let wait = self.latencies.backup_delay(delay);
        let primary = self.attempt(&first, permit, req, opts, deadline);
        tokio::pin!(primary);
        tokio::select! {
            biased;
            result = &mut primary => return result,
            _ = tokio::time::sleep(wait) => {}
        }
        if !self.budget.withdraw() {
            self.counters.budget_exhausted.fetch_add(1, Ordering::Relaxed);
            return primary.await;
        }
        let Ok((second, permit)) = self.pick(progress) else { return primary.await };
        progress.tried.push(Arc::clone(&second));
        progress.sent += 1;
        self.counters.backups.fetch_add(1, Ordering::Relaxed);
        let backup = self.attempt(&second, permit, req, opts, deadline);
        tokio::pin!(backup);
        tokio::select! {
            result = &mut primary => match result {
                Ok(response) => Ok(response),
                Err(_) => {
                    let result = backup.await;
                    if result.is_ok() {
                        self.counters.backup_wins.fetch_add(1, Ordering::Relaxed);
                    }
                    result
                }
            },
            result = &mut backup => match result {
                Ok(response) => {
                    self.counters.backup_wins.fetch_add(1, Ordering::Relaxed);
                    Ok(response)
                }
                Err(_) => primary.await,
            },
        }
    }

    /// One attempt on one instance, with the time left; records what it
    /// teaches about the instance (latency, breaker, ejection).
    async fn attempt(
        self: &Arc<Self>,
        member: &Arc<Member>,
        permit: Permit,
        req: &Request,
        opts: &CallOptions,
        deadline: Option<Instant>,
    ) -> Result<Response, Error> {
        let mut attempt = opts.clone();
        if let Some(at) = deadline {
            attempt.timeout = Some(at.saturating_duration_since(Instant::now()));
        }
        // A call that has to dial first measures the TCP handshake too. Its
        // sample is capped at what an unmeasured instance is assumed to
        // cost, or one slow connection set-up (a busy machine, a cold
        // instance) would make P2C avoid the instance for as long as the
        // peak takes to decay (tens of seconds).
        let client = member.client();
        let dialled = !client.is_connected();
        let began = Instant::now();
        let result = {
            let _outstanding = member.start();
            client.call_raw(req.clone(), &attempt).await
        };
        let state = &member.state;
        match &result {
            Ok(_) => {
                let rtt = began.elapsed();
                member.observe(sample(rtt, dialled));
                self.latencies.record(rtt);
                state.answered.fetch_add(1, Ordering::Relaxed);
                permit.success();
                if state.ejected_at.swap(0, Ordering::Relaxed) != 0 {
                    tracing::info!(service = %self.service, instance = %member.instance().address, "back in rotation");
                }
            }
            Err(Error::Status(status)) if status.is_forwarded() => {
                // It answered, healthy, with the failure of a call it made
                // itself: nothing against this instance (breaker,
                // ejection), and no latency sample either, since the time
                // was the downstream's.
                state.answered.fetch_add(1, Ordering::Relaxed);
                permit.success();
            }
            Err(Error::Status(status)) => {
                // It answered: an application error is not the instance's
                // sickness, but these codes say the instance itself is in
                // trouble. Their (often fast) round trips stay out of the
                // latency estimate, or a failing instance would look like
                // the fastest and attract the traffic.
                state.answered.fetch_add(1, Ordering::Relaxed);
                match status.code() {
                    Code::Unavailable | Code::Internal | Code::Unknown | Code::DataLoss | Code::ResourceExhausted => {
                        permit.failure()
                    }
                    _ => {
                        member.observe(sample(began.elapsed(), dialled));
                        permit.success()
                    }
                }
            }
            Err(error) => {
                state.failed.fetch_add(1, Ordering::Relaxed);
                match error {
                    // A draining server: healthy, but leaving.
                    Error::Refused { .. } => {
                        permit.ignore();
                        self.eject(member, error);
                    }
                    Error::Connect { .. } | Error::ConnectionLost { .. } => {
                        permit.failure();
                        self.eject(member, error);
                    }
                    Error::DeadlineExceeded(_) | Error::Protocol { .. } => permit.failure(),
                    // Our side's problem (encoding, size), not the instance's.
                    _ => permit.ignore(),
                }
            }
        }
        result
    }

    /// The balancer's choice among the instances this call may use, with a
    /// breaker permit. Preference, best first: in the call's routing group,
    /// in rotation and healthy; in the group and in rotation; then the same
    /// outside the group; within each, the caller's zone first. Failing all
    /// that, any untried instance whose circuit allows it, least recently
    /// ejected first (it may have come back; trying beats failing).
    fn pick(&self, progress: &Progress<'_>) -> Result<(Arc<Member>, Permit), Error> {
        let members = self.members.load();
        if members.is_empty() {
            return Err(self.no_instances("discovery lists none".to_owned()));
        }
        let info = PickInfo { key: progress.key, attempt: progress.sent + 1 };
        let group = progress.group;
        // Members whose breaker refused a permit between check and take.
        let mut refused: Vec<&Member> = Vec::new();
        'again: loop {
            let usable = |m: &Member| {
                !progress.tried.iter().any(|t| std::ptr::eq(&**t, m))
                    && !refused.iter().any(|r| std::ptr::eq(*r, m))
                    && m.state.breaker.available()
            };
            let in_rotation = |m: &Member| m.state.ejected_at.load(Ordering::Relaxed) == 0;
            let t1 = |m: &Member| group.admits(m) && in_rotation(m) && m.instance().healthy;
            let t2 = |m: &Member| group.admits(m) && in_rotation(m);
            let t3 = |m: &Member| in_rotation(m) && m.instance().healthy;
            let tiers: [&Tier<'_>; 4] = [&t1, &t2, &t3, &in_rotation];
            for tier in tiers {
                let mut candidates: Vec<&Member> =
                    members.iter().map(|m| &**m).filter(|m| usable(m) && tier(m)).collect();
                if let Some(zone) = &self.settings.zone {
                    if candidates.iter().any(|m| &m.instance().metadata.zone == zone) {
                        candidates.retain(|m| &m.instance().metadata.zone == zone);
                    }
                }
                if candidates.is_empty() {
                    continue;
                }
                let chosen = self.settings.balancer.pick(&candidates, &info);
                let chosen = candidates.get(chosen).copied().unwrap_or(candidates[0]);
                match chosen.state.breaker.try_acquire() {
                    Some(permit) => return Ok((self.arc_of(&members, chosen), permit)),
                    None => {
                        refused.push(chosen);
                        continue 'again;
                    }
                }
            }
            let last_resort =
                members.iter().filter(|m| usable(m)).min_by_key(|m| m.state.ejected_at.load(Ordering::Relaxed));
            if let Some(member) = last_resort {
                match member.state.breaker.try_acquire() {
                    Some(permit) => return Ok((Arc::clone(member), permit)),
                    None => {
                        refused.push(member);
                        continue 'again;
                    }
                }
            }
            break;
        }
        // Every instance not yet tried has its circuit open (or its probe
        // slot taken): rather than fail shut, send the call as an early
        // probe to one of them, least recently ejected first, as far as
        // their early-probe interval allows.
        let mut untried: Vec<&Arc<Member>> =
            members.iter().filter(|m| !progress.tried.iter().any(|t| Arc::ptr_eq(t, m))).collect();
        untried.sort_by_key(|m| m.state.ejected_at.load(Ordering::Relaxed));
        for member in &untried {
            if let Some(permit) = member.state.breaker.try_acquire_early() {
                return Ok((Arc::clone(member), permit));
            }
        }
        let untried = untried.len();
        Err(self.no_instances(if untried == 0 {
            "every instance was tried".to_owned()
        } else {
            format!("the circuit is open on all {untried} instances not yet tried")
        }))
    }

    fn arc_of(&self, members: &[Arc<Member>], chosen: &Member) -> Arc<Member> {
        members.iter().find(|m| std::ptr::eq(&***m, chosen)).map(Arc::clone).unwrap_or_else(|| {
            // Unreachable: `chosen` was borrowed from `members`.
            Arc::clone(&members[0])
        })
    }

    #[cfg(test)]
    pub(super) fn pick_for_test(&self, tried: &[Arc<Member>], key: Option<&str>) -> Option<Arc<Member>> {
        let progress = Progress { tried: tried.to_vec(), sent: 0, group: Group::All, key };
        self.pick(&progress).ok().map(|(member, permit)| {
            permit.ignore();
            member
        })
    }
}

/// The latency sample an attempt contributes: what it took, capped at the
/// unmeasured default if it had to connect first.
fn sample(rtt: Duration, dialled: bool) -> Duration {
    if dialled {
        rtt.min(super::balancer::PeakEwma::DEFAULT_RTT)
    } else {
        rtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dialling_call_counts_no_worse_than_an_unmeasured_instance() {
        let slow = Duration::from_millis(400);
        assert_eq!(sample(slow, true), super::super::balancer::PeakEwma::DEFAULT_RTT);
        assert_eq!(sample(slow, false), slow);
        assert_eq!(sample(Duration::from_millis(2), true), Duration::from_millis(2));
    }
}
