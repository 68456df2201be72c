//! Registry configuration: liveness timings, self-preservation, API limits,
//! and the HTTP server's timeouts and connection cap.
//!
//! Every limit has a default meant for one registry serving a small fleet
//! on one machine or a few (docs/REGISTRY.md, "Limits", has the table and
//! the memory budget they add up to). Raise them with the setters, one per
//! field and named after it (the struct is `#[non_exhaustive]`, so a new
//! setting is not a breaking change):
//!
//! ```
//! use switchboard_registry::RegistryConfig;
//!
//! let config = RegistryConfig::default().max_instances(50_000);
//! assert_eq!(config.max_instances_per_service, 1_000);
//! ```

use std::time::Duration;

/// Everything the registry lets you tune. `RegistryConfig::default()` gives
/// the documented defaults (docs/REGISTRY.md has the table).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// How often servers should heartbeat (advertised in `/v1/status`). Default 2 s.
    pub heartbeat_interval: Duration,
    /// TTL for registrations that do not set `ttl_ms`. Default 6 s (three missed heartbeats).
    pub default_ttl: Duration,
    /// How often the background sweep looks for expired instances. Default 1.5 s
    /// (a quarter of the default TTL), so an instance is evicted at most
    /// TTL + sweep interval after its last heartbeat.
    pub sweep_interval: Duration,
    /// Whether self-preservation may stop evictions at all. Default true.
    /// Turn it off where a mass loss of heartbeats means the instances
    /// really died (one machine, tests, a fleet behind one switch): then
    /// every silent instance is evicted after its TTL, as etcd leases are.
    pub self_preservation: bool,
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
    /// Most instances the registry holds, over all services. Registering a
    /// new instance beyond it is refused with 409 `too_many_instances`;
    /// heartbeats and re-registrations of instances already held always
    /// work. Also bounds the removal records kept for watchers. Default 10,000.
    pub max_instances: usize,
    /// Most instances one service may have. A new instance beyond it is
    /// refused with 409 `service_full`. Default 1,000.
    pub max_instances_per_service: usize,
    /// Most bytes a record's `metadata` and `methods` may take, measured as
    /// the JSON the registry stores and lists them as. A registration past
    /// it is refused with 413 `metadata_too_large`. Default 8 KiB.
    pub max_metadata_bytes: usize,
    /// Most bytes of one answer listing a service's instances (a plain GET
    /// or a blocking query): a listing that would be larger is sent in
    /// pages (`"more": true`, see [`server`](crate::server)). Never less than
    /// one record can take: values below `max_metadata_bytes` + 4 KiB are
    /// raised to that. Default 256 KiB.
    pub max_listing_bytes: usize,
    /// Accept instance addresses no caller can dial: unspecified (`0.0.0.0`,
    /// `::`), multicast, broadcast and link-local (`169.254.0.0/16`,
    /// `fe80::/10`) IPs. Off by default: such a registration is refused with
    /// 400 `invalid_field`. Loopback and private addresses are always fine.
    pub allow_unroutable_addresses: bool,
    /// Time a client has to send a request's complete head (request line
    /// and headers) once its first byte arrived. Past it the connection is
    /// closed. Default 10 s.
    pub header_timeout: Duration,
    /// Time a request body has to arrive completely once its head did
    /// (past it: 408 `body_timeout` and the connection closes), and time an
    /// answer has to be taken by the client once it is ready (past it the
    /// connection closes). A blocking query's wait is neither: it is bounded
    /// by `max_wait`. Default 30 s.
    pub body_timeout: Duration,
    /// Time a keep-alive connection may sit idle between requests (no
    /// request in progress, no byte of a new one) before it is closed.
    /// Default 60 s.
    pub idle_timeout: Duration,
    /// Most HTTP connections open at once. A connection beyond it gets a
    /// 503 `too_many_connections` answer at once and is closed. Default
    /// 2,048 (the process's file descriptor limit must be above it:
    /// `ulimit -n`).
    pub max_connections: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            heartbeat_interval: Duration::from_secs(2),
            default_ttl: Duration::from_secs(6),
            sweep_interval: Duration::from_millis(1500),
            self_preservation: true,
            self_preservation_share: 0.5,
            self_preservation_window: Duration::from_secs(3),
            self_preservation_min_instances: 3,
            max_body_bytes: 64 * 1024,
            default_wait: Duration::from_secs(30),
            max_wait: Duration::from_secs(300),
            max_config_keys: 10_000,
            max_config_bytes: 64 * 1024 * 1024,
            max_instances: 10_000,
            max_instances_per_service: 1_000,
            max_metadata_bytes: 8 * 1024,
            max_listing_bytes: 256 * 1024,
            allow_unroutable_addresses: false,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 2_048,
        }
    }
}

switchboard::__setters!(RegistryConfig {
    heartbeat_interval: Duration,
    default_ttl: Duration,
    sweep_interval: Duration,
    self_preservation: bool,
    self_preservation_share: f64,
    self_preservation_window: Duration,
    self_preservation_min_instances: usize,
    max_body_bytes: usize,
    default_wait: Duration,
    max_wait: Duration,
    max_config_keys: usize,
    max_config_bytes: usize,
    max_instances: usize,
    max_instances_per_service: usize,
    max_metadata_bytes: usize,
    max_listing_bytes: usize,
    allow_unroutable_addresses: bool,
    header_timeout: Duration,
    body_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize
});

/// What one record may take in a listing besides its metadata and methods:
/// service, id and address (256 bytes each, doubled if every byte needs
/// escaping), field names, numbers and health.
pub(crate) const RECORD_OVERHEAD: usize = 4 * 1024;

impl RegistryConfig {
    /// The listing cap in force: [`max_listing_bytes`](Self::max_listing_bytes),
    /// raised if needed so that the largest record the registry accepts fits
    /// in one page.
    pub fn listing_cap(&self) -> usize {
        self.max_listing_bytes.max(self.max_metadata_bytes.saturating_add(RECORD_OVERHEAD))
    }
}
