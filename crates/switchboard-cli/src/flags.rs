//! Flag groups shared by the `switchboard` command and the example
//! programs (flatten them into a clap `Parser` with `#[command(flatten)]`),
//! and the parsers of the values they take.
//!
//! Durations everywhere go through [`parse_duration`] (the registry crate's,
//! so `--ttl 6s` and `etcd://...?ttl=6s` agree); sizes through
//! [`parse_size`].

use std::sync::Arc;
use std::time::Duration;

use switchboard::balance::{Balanced, FailMode};
use switchboard::discovery::InstanceMeta;
use switchboard::Client;

/// `500ms`, `3s`, `1m`, `1.5s`, `1m30s`, or a bare number of seconds: see
/// [`switchboard_registry::parse_duration`].
pub use switchboard_registry::parse_duration;

/// Where a server announces itself: `--registry` and the instance metadata.
#[derive(Debug, Clone, clap::Args)]
pub struct Announce {
    /// Register with this registry (http://HOST:PORT for the built-in one,
    /// etcd://HOST:PORT[,HOST:PORT...] for etcd).
    #[arg(long)]
    pub registry: Option<String>,
    /// The address to register (default: the one the listener got).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Version to register (metadata, for version routing).
    #[arg(long = "app-version", default_value = "")]
    pub version: String,
    /// Zone to register (metadata, for zone-aware balancing).
    #[arg(long, default_value = "")]
    pub zone: String,
    /// Weight to register (metadata, for weighted balancing).
    #[arg(long, default_value_t = 100)]
    pub weight: u32,
}

impl Announce {
    /// `builder` with the registrar and metadata set, if `--registry` was
    /// given.
    pub fn apply(
        &self,
        mut builder: switchboard::server::ServerBuilder,
    ) -> anyhow::Result<switchboard::server::ServerBuilder> {
        let Some(url) = &self.registry else { return Ok(builder) };
        let backend = switchboard_registry::from_url(url)?;
        let metadata = InstanceMeta {
            version: self.version.clone(),
            zone: self.zone.clone(),
            weight: self.weight,
            ..InstanceMeta::default()
        };
        builder = builder.registrar(backend.registrar).metadata(metadata);
        if let Some(address) = &self.advertise {
            builder = builder.advertise(address.clone());
        }
        Ok(builder)
    }
}

/// How a caller balances over discovered instances: `--balancer`,
/// `--fail-mode`, `--zone`.
#[derive(Debug, Clone, clap::Args)]
pub struct Balancing {
    /// Balancer: round-robin, random, weighted, least-outstanding,
    /// peak-ewma (the default), consistent-hash.
    #[arg(long, default_value = "peak-ewma", value_parser = parse_balancer)]
    pub balancer: String,
    /// Fail mode: failfast, failover (the default, 3 attempts; failover:N
    /// for N), failtry (failtry:N), backup (hedged requests after the
    /// observed p95; backup:DELAY for a fixed delay, e.g. backup:20ms).
    #[arg(long, default_value = "failover", value_parser = FailMode::parse)]
    pub fail_mode: FailMode,
    /// The caller's zone: prefer instances registered with the same zone.
    #[arg(long)]
    pub zone: Option<String>,
}

fn parse_balancer(name: &str) -> Result<String, String> {
    match switchboard::balance::by_name(name) {
        Some(_) => Ok(name.to_owned()),
        None => Err(format!("unknown balancer {name:?}; one of: {}", switchboard::balance::NAMES.join(", "))),
    }
}

impl Balancing {
    /// `builder` with these settings.
    pub fn apply(&self, mut builder: switchboard::balance::BalancedBuilder) -> switchboard::balance::BalancedBuilder {
        if let Some(balancer) = switchboard::balance::by_name(&self.balancer) {
            builder = builder.balancer_arc(balancer);
        }
        builder = builder.fail_mode(self.fail_mode);
        if let Some(zone) = &self.zone {
            builder = builder.zone(zone.clone());
        }
        builder
    }
}

/// A channel to `service`: through discovery if `registry` is set, else
/// straight to `addr`.
#[derive(Clone)]
pub enum Target {
    /// One server.
    Direct(Client),
    /// Every instance the registry lists.
    Discovered(Balanced),
}

impl Target {
    /// The channel for `--registry` (if given) or `--addr`; `timeout` covers
    /// a whole call (every failover attempt together).
    pub fn new(
        service: &str,
        registry: Option<&str>,
        addr: &str,
        timeout: Duration,
        balancing: &Balancing,
    ) -> anyhow::Result<Target> {
        Ok(match registry {
            Some(url) => {
                let backend = switchboard_registry::from_url(url)?;
                let builder = Balanced::builder(service, Arc::clone(&backend.discover)).timeout(Some(timeout));
                Target::Discovered(balancing.apply(builder).build())
            }
            None => Target::Direct(Client::builder(addr).timeout(Some(timeout)).build()),
        })
    }
}

impl switchboard::Channel for Target {
    fn call_raw<'a>(
        &'a self,
        req: switchboard::Request,
        opts: &'a switchboard::CallOptions,
    ) -> switchboard::BoxFuture<'a, Result<switchboard::Response, switchboard::Error>> {
        match self {
            Target::Direct(c) => c.call_raw(req, opts),
            Target::Discovered(b) => b.call_raw(req, opts),
        }
    }
}

/// The server limits every example server takes on its command line
/// (`--handshake-timeout 2s`, `--memory-budget 64MiB`, ...); unset flags
/// keep [`switchboard::server::ServerConfig`]'s defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerFlags {
    /// Time a new connection has to send its first complete frame.
    #[arg(long, value_parser = parse_duration)]
    pub handshake_timeout: Option<Duration>,
    /// Time a started frame has to arrive whole (and answers to be read).
    #[arg(long, value_parser = parse_duration)]
    pub frame_timeout: Option<Duration>,
    /// Close connections with nothing in flight for this long (`off`: never).
    #[arg(long, value_parser = parse_idle)]
    pub idle_timeout: Option<Option<Duration>>,
    /// Bytes all connections may buffer and queue together (`256MiB`, `1GiB`, or bytes).
    #[arg(long, value_parser = parse_size)]
    pub memory_budget: Option<usize>,
    /// Most connections served at once.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Most connections from one IP address.
    #[arg(long)]
    pub max_connections_per_peer: Option<usize>,
}

impl ServerFlags {
    /// Apply the flags that were given to `builder`.
    pub fn apply(&self, mut builder: switchboard::server::ServerBuilder) -> switchboard::server::ServerBuilder {
        if let Some(t) = self.handshake_timeout {
            builder = builder.handshake_timeout(t);
        }
        if let Some(t) = self.frame_timeout {
            builder = builder.frame_timeout(t);
        }
        if let Some(t) = self.idle_timeout {
            builder = builder.idle_timeout(t);
        }
        if let Some(bytes) = self.memory_budget {
            builder = builder.memory_budget(bytes);
        }
        if let Some(n) = self.max_connections {
            builder = builder.max_connections(n);
        }
        if let Some(n) = self.max_connections_per_peer {
            builder = builder.max_connections_per_peer(n);
        }
        builder
    }
}

fn parse_idle(s: &str) -> Result<Option<Duration>, String> {
    if s.trim() == "off" {
        return Ok(None);
    }
    parse_duration(s).map(Some)
}

/// A size in bytes: `4096`, `128B`, `64KiB`, `256MiB`, `1GiB`; `K`/`k`,
/// `M` and `G` are the same binary units (`16K` is 16,384 bytes), and a
/// space may stand between number and unit.
///
/// ```
/// use switchboard_cli::parse_size;
///
/// assert_eq!(parse_size("64KiB"), Ok(65_536));
/// assert_eq!(parse_size("16 K"), Ok(16_384));
/// assert!(parse_size("64KB").unwrap_err().contains("\"KB\""));
/// ```
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = number.parse().map_err(|_| format!("{s:?} is not a size like 4096, 64KiB or 256MiB"))?;
    let scale: usize = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_form_the_flags_and_bench_cells_took() {
        for (text, want) in [
            ("4096", 4096),
            ("128B", 128),
            ("16KiB", 16 << 10),
            ("16K", 16 << 10),
            ("16k", 16 << 10),
            ("16 KiB", 16 << 10),
            ("256MiB", 256 << 20),
            ("1M", 1 << 20),
            ("1GiB", 1 << 30),
            ("2G", 2 << 30),
            (" 64MiB ", 64 << 20),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_sizes_say_what_was_wrong() {
        for (text, says) in [
            ("", "is not a size"),
            ("KiB", "is not a size"),
            ("-1", "is not a size"),
            ("1.5MiB", "unknown unit \".5MiB\""),
            ("64KB", "unknown unit \"KB\""),
            ("99999999999GiB", "is too large"),
        ] {
            let error = parse_size(text).expect_err(text);
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }

    #[test]
    fn idle_timeout_takes_off_or_a_duration() {
        assert_eq!(parse_idle("off"), Ok(None));
        assert_eq!(parse_idle("30s"), Ok(Some(Duration::from_secs(30))));
        assert!(parse_idle("never").is_err());
    }
}
