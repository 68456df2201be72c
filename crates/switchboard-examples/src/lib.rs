//! Helpers shared by the example programs (`cargo run --example NAME`):
//! the `Arith` service, logging set-up, serving until a signal, and the
//! `--registry` options, and the open-loop load generator ([`load`]).

pub mod arith;
pub mod load;

use std::sync::Arc;
use std::time::Duration;

use switchboard::balance::{Balanced, FailMode};
use switchboard::discovery::Metadata;
use switchboard::{Client, Server};

/// Log to stderr; `RUST_LOG` overrides the default `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

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
        let metadata = Metadata {
            version: self.version.clone(),
            zone: self.zone.clone(),
            weight: self.weight,
            ..Metadata::default()
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
    if s == "off" {
        return Ok(None);
    }
    parse_duration(s).map(Some)
}

/// `4096`, `64KiB`, `256MiB`, `1GiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = number.parse().map_err(|_| format!("{s:?} is not a size like 4096, 64KiB or 256MiB"))?;
    let scale: usize = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("{s:?} is too large"))
}

/// Serve on `listen` until Ctrl-C or SIGTERM, then shut down gracefully
/// (deregistering first when a registrar is set).
pub async fn serve_until_signal(server: Server, listen: &str) -> anyhow::Result<()> {
    serve_until(server, listen, std::future::pending()).await
}

/// Serve on `listen` until `stop` completes (or Ctrl-C / SIGTERM), then shut
/// down gracefully (deregistering first when a registrar is set). Prints
/// `listening on ADDR` on stdout once bound.
pub async fn serve_until(
    server: Server,
    listen: &str,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    // The one line of stdout: scripts read the bound address from it.
    println!("listening on {addr}");
    let mut serving = tokio::spawn(server.clone().serve(listener));
    tokio::select! {
        _ = stop => {}
        _ = shutdown_signal() => {}
        result = &mut serving => {
            // Serving ended on its own: it could not start (say, nothing to advertise).
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::anyhow!("serving on {addr} failed: {e}")),
                Err(e) => Err(anyhow::anyhow!("serving on {addr} failed: {e}")),
            };
        }
    }
    tracing::info!("shutting down");
    let report = tokio::time::timeout(Duration::from_secs(35), server.shutdown()).await;
    tracing::info!(?report, "stopped");
    serving.abort();
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `500ms`, `10s`, `1m` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 500ms, 5s or 1m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}
