//! Registry configuration: liveness timings, self-preservation, API limits.

use std::time::Duration;

/// Everything the registry lets you tune. `RegistryConfig::default()` gives
/// the documented defaults (docs/REGISTRY.md has the table).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// How often servers should heartbeat (advertised in `/v1/status`). Default 2 s.
    pub heartbeat_interval: Duration,
    /// TTL for registrations that do not set `ttl_ms`. Default 6 s (three missed heartbeats).
    pub default_ttl: Duration,
    /// How often the background sweep looks for expired instances. Default 1.5 s
    /// (a quarter of the default TTL), so an instance is evicted at most
    /// TTL + sweep interval after its last heartbeat.
    pub sweep_interval: Duration,
    /// Self-preservation threshold: if more than this share of all instances
    /// is expiring (see `self_preservation_window`) at one sweep, nothing is
    /// evicted. Default 0.5. `1.0` disables
    /// self-preservation.
    pub self_preservation_share: f64,
    /// Self-preservation looks ahead by this window: an instance counts as
    /// "expiring" if its TTL has passed or will pass within the window (capped
    /// at half the instance's TTL). Instances cut off together stop at
    /// different points of their heartbeat cycle, so their TTLs run out spread
    /// over one heartbeat interval; without the look-ahead, each sweep would
    /// see only a small share expired and evict them a few at a time. A
    /// healthy instance (silent at most one heartbeat interval) never counts.
    /// Default 3 s (half the default TTL).
    pub self_preservation_window: Duration,
    /// Self-preservation only applies when at least this many instances are
    /// registered. Default 3: with one or two instances, "most of them died at
    /// once" is too plausible to blame on a partition.
    pub self_preservation_min_instances: usize,
    /// Largest request body the API accepts. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Wait of a blocking query without `wait=`. Default 30 s.
    pub default_wait: Duration,
    /// Longest wait a blocking query may ask for; longer ones are cut to this. Default 5 min.
    pub max_wait: Duration,
    /// Most config keys the registry holds (see [`store`](crate::store)'s
    /// config keys); a put of a new key beyond it is refused. Also bounds
    /// the deletion records kept for watchers. Default 10,000.
    pub max_config_keys: usize,
    /// Most bytes all config keys and values may take together; a put that
    /// would pass it is refused. Default 64 MiB.
    pub max_config_bytes: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            heartbeat_interval: Duration::from_secs(2),
            default_ttl: Duration::from_secs(6),
            sweep_interval: Duration::from_millis(1500),
            self_preservation_share: 0.5,
            self_preservation_window: Duration::from_secs(3),
            self_preservation_min_instances: 3,
            max_body_bytes: 64 * 1024,
            default_wait: Duration::from_secs(30),
            max_wait: Duration::from_secs(300),
            max_config_keys: 10_000,
            max_config_bytes: 64 * 1024 * 1024,
        }
    }
}
