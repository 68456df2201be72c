//! Load measurement for the built-in registry's config keys: write and
//! delete throughput, and watch propagation with bystanders.
//!
//! ```text
//! cargo run --release -p switchboard-registry --example config_load
//! cargo run --release -p switchboard-registry --example config_load -- --registry http://127.0.0.1:7700
//! ```
//!
//! Without `--registry` it starts a registry in this process on an ephemeral
//! port of 127.0.0.1 (sharing the cores with the clients). Every operation
//! goes over HTTP through `BuiltinConfigStore`, the `ConfigStore` users get
//! from `from_url`.
//!
//! 1. **Puts per second.** `--keys` (1,000) distinct keys of `--value-bytes`
//!    (64) bytes, by `--concurrency` (32) tasks.
//! 2. **Watch propagation.** `--watchers` (100) watches on the prefix
//!    `watched/`, and `--bystanders` (100) on `other/`, where nothing
//!    changes. For `--rounds` (200) rounds: wait 10 ms so every watch is
//!    parked in its blocking query, note the instant, put one new key under
//!    `watched/`, and wait until every watcher has reported it. Propagation
//!    is the report instant minus the instant before the put was sent: the
//!    put round trip, the wake-up, the list answered to each watcher, its
//!    diff, and the channel to the consumer. A watcher silent for 5 s counts
//!    as a miss. Bystanders must report nothing after their first batch.
//! 3. **Deletes per second**, removing everything the run added.
//!
//! Keys carry a random per-run tag, so runs against one external registry
//! never collide.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use switchboard::config::{ConfigEvent, ConfigStore};
use switchboard_registry::{BuiltinConfigStore, RegistryClient, RegistryServer};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(about = "Measure the built-in registry's config keys: puts/s, deletes/s, watch propagation")]
struct Args {
    /// Measure the registry at this URL instead of one started in this process.
    #[arg(long)]
    registry: Option<String>,
    /// Keys to put (and delete) in the throughput phases.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Size of each value, in bytes.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Requests in flight at once in the throughput phases.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Watches on the prefix that changes.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Watches on a prefix that never changes.
    #[arg(long, default_value_t = 100)]
    bystanders: usize,
    /// Propagation rounds.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
}

/// Runs `op(i)` for `i` in `0..n` with `concurrency` tasks; returns ops/s.
async fn rate<F, Fut>(n: usize, concurrency: usize, op: F) -> Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                op(i).await?;
            }
        }));
    }
    for task in tasks {
        task.await.context("task")??;
    }
    Ok(n as f64 / began.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (url, local) = match &args.registry {
        Some(url) => (url.clone(), None),
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let handle = RegistryServer::builder().build().spawn(listener)?;
            (format!("http://{}", handle.local_addr()), Some(handle))
        }
    };
    let store = BuiltinConfigStore::new(RegistryClient::new(&url)?);
    let tag = format!("{:08x}", fastrand::u32(..));
    let value = "v".repeat(args.value_bytes);

    let (s, v, t) = (store.clone(), value.clone(), tag.clone());
    let puts = rate(args.keys, args.concurrency, move |i| {
        let (s, v, key) = (s.clone(), v.clone(), format!("bulk-{t}/k{i}"));
        async move { s.put(&key, &v).await.map(drop).map_err(Into::into) }
    })
    .await?;

    // Watchers report (round, instant) for every key put under watched/.
    let watched = format!("watched-{tag}/");
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let mut watches = Vec::new();
    for _ in 0..args.watchers {
        let mut watch = store.watch(&watched);
        let first = watch.next().await.context("watch ended")?;
        if !first.is_empty() {
            bail!("{watched} is not empty");
        }
        let tx = tx.clone();
        watches.push(tokio::spawn(async move {
            while let Some(batch) = watch.next().await {
                let now = Instant::now();
                for event in batch {
                    if let ConfigEvent::Put(e) = event {
                        let round = e.key.rsplit('r').next().and_then(|n| n.parse().ok());
                        if let Some(round) = round {
                            let _ = tx.send((round, now));
                        }
                    }
                }
            }
        }));
    }
    let spurious = Arc::new(AtomicU64::new(0));
    for _ in 0..args.bystanders {
        let mut watch = store.watch(&format!("other-{tag}/"));
        watch.next().await.context("watch ended")?;
        let spurious = spurious.clone();
        watches.push(tokio::spawn(async move {
            while let Some(batch) = watch.next().await {
                spurious.fetch_add(batch.len().max(1) as u64, Ordering::Relaxed);
            }
        }));
    }

    let mut propagation = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut missed = 0usize;
    for round in 0..args.rounds {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let sent = Instant::now();
        store.put(&format!("{watched}r{round}"), &value).await?;
        let mut seen = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen < args.watchers {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((r, at))) if r == round => {
                    seen += 1;
                    propagation.record(at.duration_since(sent).as_micros().max(1) as u64)?;
                }
                Ok(Some(_)) => {} // a late report of an earlier round
                Ok(None) | Err(_) => break,
            }
        }
        missed += args.watchers - seen;
    }
    for w in &watches {
        w.abort();
    }

    let mut all: Vec<String> = (0..args.keys).map(|i| format!("bulk-{tag}/k{i}")).collect();
    all.extend((0..args.rounds).map(|r| format!("{watched}r{r}")));
    let all = Arc::new(all);
    let (s, keys) = (store.clone(), all.clone());
    let deletes = rate(all.len(), args.concurrency, move |i| {
        let (s, key) = (s.clone(), keys[i].clone());
        async move { s.delete(&key).await.map(drop).map_err(Into::into) }
    })
    .await?;

    let ms = |q: f64| propagation.value_at_quantile(q) as f64 / 1000.0;
    println!("| measurement | result |");
    println!("|-------------|--------|");
    println!(
        "| puts ({} keys, {} B values, {} in flight) | {puts:.0} /s |",
        args.keys, args.value_bytes, args.concurrency
    );
    println!(
        "| watch propagation p50 / p99 / max ({} watchers, {} rounds, {} samples, {missed} missed) | {:.2} ms / {:.2} ms / {:.2} ms |",
        args.watchers,
        args.rounds,
        propagation.len(),
        ms(0.5),
        ms(0.99),
        propagation.max() as f64 / 1000.0
    );
    println!(
        "| batches reported to {} bystander watches on another prefix | {} |",
        args.bystanders,
        spurious.load(Ordering::Relaxed)
    );
    println!("| deletes ({} keys) | {deletes:.0} /s |", all.len());
    if let Some(handle) = local {
        handle.shutdown().await?;
    }
    Ok(())
}
