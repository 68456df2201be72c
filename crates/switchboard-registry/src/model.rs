//! The registry's data model, as it travels over the HTTP/JSON API.
//!
//! Two shapes, kept apart on purpose:
//!
//! - [`RegisterRequest`] is what a server sends: who it is, where it listens,
//!   what it serves, and optionally its TTL. It carries nothing the registry
//!   decides.
//! - [`InstanceRecord`] is what the registry stores and returns: the request's
//!   fields plus the registry-maintained ones (registration time, last
//!   heartbeat, health, effective TTL).
//!
//! A client can therefore never set its own health or heartbeat time, and the
//! registry can add fields to [`InstanceRecord`] without changing what servers send.
//!
//! A service's instances travel as [`ServiceChanges`]: what changed after
//! the index a watcher passes (everything, for a first listing), in pages
//! of at most the registry's listing cap. [`InstanceList`] is a whole list
//! assembled from those pages (what [`Store::instances`](crate::Store::instances)
//! and [`RegistryClient::instances`](crate::RegistryClient::instances) return).
//!
//! Config keys travel as [`ConfigKey`] (one key), [`ConfigList`] (a prefix)
//! and [`ConfigDeleted`]; a put sends the raw value text as its body and gets
//! an [`IndexReply`].
//!
//! ```
//! use switchboard_registry::model::RegisterRequest;
//!
//! let req: RegisterRequest = serde_json::from_str(
//!     r#"{"service": "Arith", "id": "arith-1", "address": "127.0.0.1:9000"}"#,
//! ).unwrap();
//! assert_eq!(req.metadata.weight, 100); // defaults fill in what was left out
//! assert_eq!(req.ttl_ms, None); // the registry's default TTL applies
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Shortest TTL a registration may ask for.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest TTL a registration may ask for.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Longest service name, instance id, address, method name or tag, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Version, weight, zone, tags and key/values: the same type discovery hands
/// to balancers, so nothing is lost between the registry and the caller.
pub use switchboard::discovery::InstanceMeta;

/// What a server sends to register (or re-register) one instance of a service.
///
/// `service`, `id` and `address` are required; everything else has a default.
/// Registering again with the same `service` and `id` updates the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Service name, e.g. `Arith`.
    pub service: String,
    /// Instance id, unique within the service (e.g. `host:port` or a UUID).
    pub id: String,
    /// Where callers reach the instance, `host:port`.
    pub address: String,
    /// Version, weight, zone, tags, key/values.
    #[serde(default)]
    pub metadata: InstanceMeta,
    /// The methods the instance serves, e.g. `Arith.Multiply`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Time to live without a heartbeat, in milliseconds (default: the
    /// registry's configured TTL; allowed range [`MIN_TTL`]..=[`MAX_TTL`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl RegisterRequest {
    /// A request with the three required fields and defaults for the rest.
    pub fn new(service: impl Into<String>, id: impl Into<String>, address: impl Into<String>) -> Self {
        RegisterRequest {
            service: service.into(),
            id: id.into(),
            address: address.into(),
            metadata: InstanceMeta::default(),
            methods: Vec::new(),
            ttl_ms: None,
        }
    }

    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), InvalidField> {
        check_name("service", &self.service)?;
        check_name("id", &self.id)?;
        check_address(&self.address)?;
        for m in &self.methods {
            check_text("methods", m)?;
        }
        for t in &self.metadata.tags {
            check_text("metadata.tags", t)?;
        }
        for text in [("metadata.version", &self.metadata.version), ("metadata.zone", &self.metadata.zone)] {
            if text.1.len() > MAX_NAME_LEN {
                return Err(InvalidField::new(text.0, format!("longer than {MAX_NAME_LEN} bytes")));
            }
        }
        if let Some(ttl) = self.ttl_ms {
            let (min, max) = (MIN_TTL.as_millis(), MAX_TTL.as_millis());
            if u128::from(ttl) < min || u128::from(ttl) > max {
                return Err(InvalidField::new("ttl_ms", format!("{ttl} is out of range: must be {min}..={max} ms")));
            }
        }
        Ok(())
    }
}

/// A field of a request that failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field `{field}`: {reason}")]
pub struct InvalidField {
    /// The field's JSON name (dotted for nested fields).
    pub field: &'static str,
    /// What was wrong with it.
    pub reason: String,
}

impl InvalidField {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        InvalidField { field, reason: reason.into() }
    }
}

fn check_text(field: &'static str, value: &str) -> Result<(), InvalidField> {
    if value.trim().is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(InvalidField::new(field, format!("longer than {MAX_NAME_LEN} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidField::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// Service names and ids appear as URL path segments, so they also exclude
/// `/` and whitespace.
fn check_name(field: &'static str, value: &str) -> Result<(), InvalidField> {
    check_text(field, value)?;
    if value.chars().any(|c| c == '/' || c.is_whitespace()) {
        return Err(InvalidField::new(field, format!("{value:?} must not contain '/' or whitespace")));
    }
    Ok(())
}

/// `host:port` with a non-zero port; the host is an IP (IPv6 in brackets) or a
/// DNS name. Nothing is resolved.
fn check_address(address: &str) -> Result<(), InvalidField> {
    check_text("address", address)?;
    let bad = |why: &str| InvalidField::new("address", format!("{address:?} is not host:port ({why})"));
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return if addr.port() == 0 { Err(bad("port 0")) } else { Ok(()) };
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port.parse().map_err(|_| bad("port is not a number in 1..=65535"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    let hostname_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !hostname_ok {
        return Err(bad("host is neither an IP address nor a DNS name"));
    }
    Ok(())
}

/// Why no caller could dial `address`, if its host is an IP address of a
/// kind that never names one reachable endpoint: unspecified (`0.0.0.0`,
/// `::`, a listener's wildcard), multicast, broadcast, or link-local
/// (`169.254.0.0/16`, `fe80::/10`, which need an interface to mean
/// anything). IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged as
/// the IPv4 address they carry. `None` for every other address, DNS names
/// included (they are not resolved) and loopback.
///
/// ```
/// use switchboard_registry::model::unroutable;
///
/// assert!(unroutable("0.0.0.0:9000").is_some());
/// assert!(unroutable("[fe80::1]:9000").is_some());
/// assert_eq!(unroutable("127.0.0.1:9000"), None);
/// assert_eq!(unroutable("arith.svc.local:9000"), None);
/// ```
pub fn unroutable(address: &str) -> Option<&'static str> {
    let ip = match address.parse::<SocketAddr>().ok()?.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            Some("an unspecified address (a listener's wildcard, not an address to dial)")
        }
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address (169.254.0.0/16)"),
        IpAddr::V6(v6) if v6.is_unspecified() => {
            Some("an unspecified address (a listener's wildcard, not an address to dial)")
        }
        IpAddr::V6(v6) if v6.is_multicast() => Some("a multicast address"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("a link-local address (fe80::/10)"),
        _ => None,
    }
}

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of `value` as compact JSON, without building it
/// (`usize::MAX` if it cannot be encoded, which no type here does).
pub(crate) fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// The bytes a record's `metadata` and `methods` take in the registry's
/// JSON: what [`RegistryConfig::max_metadata_bytes`](crate::RegistryConfig::max_metadata_bytes) limits.
pub fn metadata_len(metadata: &InstanceMeta, methods: &[String]) -> usize {
    json_len(metadata).saturating_add(json_len(methods))
}

/// Liveness of an instance, as the registry's last sweep saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Heartbeats arrive within the TTL.
    Passing,
    /// The TTL passed without a heartbeat, but self-preservation kept the
    /// instance listed. Clients should prefer passing instances.
    Expired,
}

/// One instance as the registry stores and returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Service name.
    pub service: String,
    /// Instance id, unique within the service.
    pub id: String,
    /// `host:port` callers dial.
    pub address: String,
    /// Version, weight, zone, tags, key/values.
    pub metadata: InstanceMeta,
    /// Methods the instance serves.
    pub methods: Vec<String>,
    /// Effective TTL in milliseconds (the request's, or the registry default).
    pub ttl_ms: u64,
    /// When the instance was first registered (unix ms, wall clock; display only).
    pub registered_at_ms: u64,
    /// When the registry last heard from it (unix ms, wall clock; display only).
    pub last_heartbeat_ms: u64,
    /// Passing, or expired but kept by self-preservation.
    pub health: Health,
}

impl From<InstanceRecord> for switchboard::discovery::Instance {
    fn from(i: InstanceRecord) -> Self {
        switchboard::discovery::Instance {
            id: i.id,
            address: i.address,
            metadata: i.metadata,
            methods: i.methods,
            healthy: i.health == Health::Passing,
        }
    }
}

impl RegisterRequest {
    /// The request registering `r`, with the TTL left to the registry
    /// (`None`) or set.
    pub fn from_registration(r: &switchboard::discovery::Registration, ttl: Option<Duration>) -> RegisterRequest {
        RegisterRequest {
            service: r.service.clone(),
            id: r.id.clone(),
            address: r.address.clone(),
            metadata: r.metadata.clone(),
            methods: r.methods.clone(),
            ttl_ms: ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// One service in the [`ServiceList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    /// Service name.
    pub name: String,
    /// Number of instances listed (passing or expired).
    pub instances: usize,
    /// Modification index of this service.
    pub index: u64,
}

/// Answer of `GET /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceList {
    /// Global modification index.
    pub index: u64,
    /// Services with at least one instance, sorted by name.
    pub services: Vec<ServiceSummary>,
    /// Whether the registry is currently refusing to evict (see the store docs).
    pub self_preservation: bool,
    /// Milliseconds the registry is still warming up after a start (0 when
    /// warm): instances alive but not yet re-registered may be missing, so
    /// treat a missing instance as "not seen yet", not as "gone".
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warming_up_ms: u64,
}

/// A service's whole list of instances, as [`Store::instances`](crate::Store::instances)
/// reads it or [`RegistryClient::instances`](crate::RegistryClient::instances)
/// assembles it from pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceList {
    /// Modification index of the service: pass it back as `?index=` to wait
    /// for the next change.
    pub index: u64,
    /// Instances sorted by id (empty for a service nobody registered).
    pub instances: Vec<InstanceRecord>,
    /// Milliseconds the registry is still warming up after a start (0 when
    /// warm): instances alive but not yet re-registered may be missing, so
    /// treat a missing instance as "not seen yet", not as "gone".
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warming_up_ms: u64,
}

/// Answer of `GET /v1/services/{service}[?index=N]`: the service's
/// instances added or changed after index `N`, and the ids of those
/// removed after it, in one page of at most the registry's listing cap.
///
/// A watcher keeps its view of the service by applying answers in order:
/// insert or replace every record of `instances`, drop every id of
/// `removed`, then ask again from [`cursor`](Self::cursor). Two flags say
/// more:
///
/// - `reset`: the answer starts from nothing (the watcher passed no index,
///   or an index the registry can no longer answer from: older than the
///   removals it keeps, from before a restart, or from another `epoch`).
///   It lists every live instance (over as many pages as it takes) and no
///   removals; once the last page is in (`more` false), the watcher drops
///   every instance those pages did not mention.
/// - `more`: the page stopped at the cap; `index` is the last change it
///   holds. Ask again from it at once for the rest.
///
/// `index` is otherwise the service's index (as the `X-Switchboard-Index`
/// header), and `epoch` identifies this life of the registry: a restarted
/// registry has another, and counts its index from 1 again.
/// [`RegistryClient::instances`](crate::RegistryClient::instances) and
/// [`BuiltinDiscover`](crate::BuiltinDiscover) do all of this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChanges {
    /// The index to ask from next (see above).
    pub index: u64,
    /// This life of the registry.
    pub epoch: u64,
    /// The answer starts from nothing (see above).
    pub reset: bool,
    /// The answer stopped at the listing cap; more follows.
    pub more: bool,
    /// Instances added or changed (every live one, on a reset), sorted by id.
    pub instances: Vec<InstanceRecord>,
    /// Ids of instances removed (deregistered or evicted), sorted.
    pub removed: Vec<String>,
    /// Milliseconds the registry is still warming up after a start (0 when
    /// warm): instances alive but not yet re-registered may be missing, so
    /// treat a missing instance as "not seen yet", not as "gone".
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warming_up_ms: u64,
}

impl ServiceChanges {
    /// Where to ask from next.
    pub fn cursor(&self) -> Cursor {
        Cursor { index: self.index, epoch: self.epoch }
    }
}

/// Where a watcher is in a service's history: the index it has applied
/// everything up to, in which life (`epoch`) of the registry. The default
/// (index 0) asks for a first listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// Index applied up to (0: nothing yet).
    pub index: u64,
    /// The registry's epoch that index belongs to (0: unknown, not checked).
    pub epoch: u64,
}

/// Answer of `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryStatus {
    /// Global modification index.
    pub index: u64,
    /// Number of instances across all services.
    pub instances: usize,
    /// Whether self-preservation is on.
    pub self_preservation: bool,
    /// Default TTL in milliseconds.
    pub ttl_ms: u64,
    /// Heartbeat interval servers should use, in milliseconds.
    pub heartbeat_ms: u64,
    /// Milliseconds the registry is still warming up after a start (0 when
    /// warm): instances alive but not yet re-registered may be missing, so
    /// treat a missing instance as "not seen yet", not as "gone".
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warming_up_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Answer of the mutating routes: the index after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexReply {
    /// Global modification index after the operation.
    pub index: u64,
}

/// One config key as the API returns it (`GET /v1/config/{key}`, and each
/// entry of a [`ConfigList`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigKey {
    /// The key, relative to the config root (`routing/Arith`).
    pub key: String,
    /// The value, UTF-8 text.
    pub value: String,
    /// Index of the change that last set the value.
    pub revision: u64,
}

impl From<switchboard::config::ConfigEntry> for ConfigKey {
    fn from(e: switchboard::config::ConfigEntry) -> Self {
        ConfigKey { key: e.key, value: e.value, revision: e.revision }
    }
}

impl From<ConfigKey> for switchboard::config::ConfigEntry {
    fn from(k: ConfigKey) -> Self {
        switchboard::config::ConfigEntry { key: k.key, value: k.value, revision: k.revision }
    }
}

/// Answer of `GET /v1/config?prefix=P`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigList {
    /// The keys under the prefix, sorted by key.
    pub entries: Vec<ConfigKey>,
    /// The global index the list was read at: pass it back as `?index=` to
    /// wait for the next change under the prefix.
    pub index: u64,
}

impl From<switchboard::config::ConfigSnapshot> for ConfigList {
    fn from(s: switchboard::config::ConfigSnapshot) -> Self {
        ConfigList { entries: s.entries.into_iter().map(ConfigKey::from).collect(), index: s.revision }
    }
}

impl From<ConfigList> for switchboard::config::ConfigSnapshot {
    fn from(l: ConfigList) -> Self {
        switchboard::config::ConfigSnapshot {
            entries: l.entries.into_iter().map(Into::into).collect(),
            revision: l.index,
        }
    }
}

/// Answer of `DELETE /v1/config/{key}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDeleted {
    /// Global modification index after the operation (unchanged if the key
    /// did not exist).
    pub index: u64,
    /// Whether the key existed.
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in ["127.0.0.1:9000", "[::1]:80", "localhost:7700", "arith-1.svc.local:443"] {
            assert_eq!(check_address(ok), Ok(()), "{ok}");
        }
        for bad in ["", "127.0.0.1", "127.0.0.1:0", "host:99999", ":80", "a b:80", "host:port", "-x:1", "1.2.3.4:"] {
            let err = check_address(bad).expect_err(bad);
            assert_eq!(err.field, "address");
        }
    }

    #[test]
    fn unroutable_addresses() {
        for bad in [
            "0.0.0.0:1",
            "[::]:1",
            "[::ffff:0.0.0.0]:1",
            "255.255.255.255:1",
            "224.0.0.1:1",
            "239.255.255.250:1900",
            "[ff02::1]:1",
            "169.254.0.1:1",
            "169.254.169.254:80",
            "[::ffff:169.254.1.1]:1",
            "[fe80::1]:1",
            "[febf:ffff::1]:1",
        ] {
            assert!(unroutable(bad).is_some(), "{bad}");
        }
        for ok in [
            "127.0.0.1:1",
            "[::1]:1",
            "10.0.0.1:1",
            "192.168.1.1:1",
            "169.253.255.255:1",
            "169.255.0.1:1",
            "[fec0::1]:1",
            "[2001:db8::1]:1",
            "localhost:1",
            "0.0.0.0.example:1",
        ] {
            assert_eq!(unroutable(ok), None, "{ok}");
        }
    }

    #[test]
    fn metadata_is_measured_as_its_json() {
        let mut metadata = InstanceMeta::default();
        let empty = metadata_len(&metadata, &[]);
        assert_eq!(empty, serde_json::to_vec(&metadata).unwrap().len() + 2);
        metadata.kv.insert("k".into(), "\"\u{1}".into());
        let methods = vec!["A.B".to_owned()];
        let want = serde_json::to_vec(&metadata).unwrap().len() + serde_json::to_vec(&methods).unwrap().len();
        assert_eq!(metadata_len(&metadata, &methods), want);
    }

    #[test]
    fn ttl_bounds() {
        let mut req = RegisterRequest::new("S", "i", "127.0.0.1:1");
        req.ttl_ms = Some(999);
        assert_eq!(req.validate().map_err(|e| e.field), Err("ttl_ms"));
        req.ttl_ms = Some(3_600_001);
        assert_eq!(req.validate().map_err(|e| e.field), Err("ttl_ms"));
        req.ttl_ms = Some(1000);
        assert_eq!(req.validate(), Ok(()));
        req.ttl_ms = Some(3_600_000);
        assert_eq!(req.validate(), Ok(()));
    }

    #[test]
    fn names() {
        let req = RegisterRequest::new("a/b", "i", "127.0.0.1:1");
        assert_eq!(req.validate().map_err(|e| e.field), Err("service"));
        let req = RegisterRequest::new("S", " ", "127.0.0.1:1");
        assert_eq!(req.validate().map_err(|e| e.field), Err("id"));
        let mut req = RegisterRequest::new("S", "i", "127.0.0.1:1");
        req.methods.push(String::new());
        assert_eq!(req.validate().map_err(|e| e.field), Err("methods"));
    }
}
