//! Balancers: which of the candidate instances takes a call.
//!
//! The channel narrows the instances down first (not yet tried for this call,
//! in rotation, circuit not open, routing rules and zone preference: see the
//! module docs of [`crate::balance`]); a [`Balancer`] then picks one of
//! those *candidates*. Balancers see every membership change through
//! [`Balancer::update`], so those that keep state per instance (hash rings,
//! weights) rebuild it there, off the call path.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Member;

/// What a balancer knows about the call it places.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickInfo<'a> {
    /// The caller's affinity key ([`CallOptions::key`](crate::CallOptions::key)),
    /// for consistent hashing.
    pub key: Option<&'a str>,
    /// 1 for the first attempt of a call, 2 for the first retry, and so on.
    pub attempt: u32,
}

/// Chooses which candidate takes a call.
pub trait Balancer: Send + Sync + fmt::Debug + 'static {
    /// Choose one of `candidates` (never empty, sorted by instance id);
    /// returns its index. An index out of range is treated as 0.
    fn pick(&self, candidates: &[&Member], call: &PickInfo<'_>) -> usize;

    /// The service's instances changed; `members` is the whole new list,
    /// sorted by instance id. Called before any pick sees the new list.
    fn update(&self, members: &[Arc<Member>]) {
        let _ = members;
    }
}

/// Each candidate in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round-robin balancer.
    pub fn new() -> RoundRobin {
        RoundRobin::default()
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, candidates: &[&Member], _call: &PickInfo<'_>) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()
    }
}
