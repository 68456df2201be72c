//! How fast a registration reaches callers: a server announces (or
//! withdraws) an instance through a registry's [`Registrar`], and the time
//! until a caller's [`Discover`] stream reports it is measured, over many
//! rounds, for each registry given. The built-in registry always runs
//! (in-process, on a loopback port); `--etcd URL` adds etcd beside it, so
//! the two are measured in one run.
//!
//! ```text
//! cargo run --release --example propagation -- --etcd etcd://127.0.0.1:2379 --rounds 300
//! ```
//!
//! Prints one line per backend and direction: p50, p99 and max.

use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use switchboard::discovery::{Change, InstanceMeta, Registration};
use switchboard_cli::load::micros;
use switchboard_registry::{from_url, Backend, RegistryConfig, RegistryServer};
use tokio::sync::watch;

#[derive(Parser)]
#[command(about = "Measure registration propagation: registrar to discovery")]
struct Cli {
    /// An etcd to measure beside the built-in registry, e.g. etcd://127.0.0.1:2379.
    #[arg(long)]
    etcd: Option<String>,
    /// Registrations (each also withdrawn) per backend.
    #[arg(long, default_value_t = 200)]
    rounds: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    switchboard_cli::init_logging("info");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let registry = RegistryServer::builder().config(RegistryConfig::default()).build().spawn(listener)?;
    // A registry that has just started holds back removals for one TTL (it
    // cannot tell a withdrawn instance from one that has not heartbeated
    // since the restart; docs/REGISTRY.md), so measure after that.
    tokio::time::sleep(registry.store().warming_up()).await;
    let mut backends = vec![("built-in".to_owned(), format!("http://{}", registry.local_addr()))];
    if let Some(etcd) = cli.etcd {
        backends.push(("etcd".to_owned(), etcd));
    }
    println!("{:<10} {:<10} {:>9} {:>9} {:>9}  ({} rounds)", "REGISTRY", "CHANGE", "p50", "p99", "max", cli.rounds);
    for (name, url) in backends {
        let (added, removed) = measure(from_url(&url)?, cli.rounds).await?;
        for (what, h) in [("register", added), ("withdraw", removed)] {
            println!(
                "{name:<10} {what:<10} {:>9} {:>9} {:>9}",
                micros(h.value_at_quantile(0.5)),
                micros(h.value_at_quantile(0.99)),
                micros(h.max())
            );
        }
    }
    registry.shutdown().await?;
    Ok(())
}

/// Registers and withdraws one instance `rounds` times; returns the
/// propagation times (µs) of each direction.
async fn measure(backend: Backend, rounds: u32) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let service = format!("Propagation{}", std::process::id());
    let mut changes = backend.discover.discover(&service);
    // The first batch is the (empty) initial list.
    tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .map_err(|_| anyhow::anyhow!("no initial list from discovery within 10 s"))?;
    let (wanted, rx) = watch::channel(Vec::<Registration>::new());
    let keeper = tokio::spawn(backend.registrar.keep_registered(rx));
    let mut added = Histogram::<u64>::new(3)?;
    let mut removed = Histogram::<u64>::new(3)?;
    for round in 0..rounds {
        let id = format!("127.0.0.1:{}", 10_000 + round);
        let registration = Registration {
            service: service.clone(),
            id: id.clone(),
            address: id.clone(),
            metadata: InstanceMeta::default(),
            methods: vec![format!("{service}.Ping")],
        };
        for (list, into) in [(vec![registration], &mut added), (Vec::new(), &mut removed)] {
            let adding = !list.is_empty();
            let began = Instant::now();
            wanted.send_replace(list);
            loop {
                let batch = tokio::time::timeout(Duration::from_secs(10), changes.next())
                    .await
                    .map_err(|_| anyhow::anyhow!("round {round}: no change within 10 s"))?
                    .ok_or_else(|| anyhow::anyhow!("discovery stopped"))?;
                let seen = batch.iter().any(|c| match c {
                    Change::Added(i) => adding && i.id == id,
                    Change::Removed(gone) => !adding && *gone == id,
                    Change::Updated(_) => false,
                });
                if seen {
                    break;
                }
            }
            into.record(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        }
    }
    drop(wanted); // the registrar deregisters and returns
    let _ = keeper.await;
    Ok((added, removed))
}
