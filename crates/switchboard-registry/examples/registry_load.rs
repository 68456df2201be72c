//! Load measurement for the built-in registry: write throughput and watch
//! propagation.
//!
//! ```text
//! cargo run --release -p switchboard-registry --example registry_load
//! cargo run --release -p switchboard-registry --example registry_load -- --registry http://127.0.0.1:7700
//! ```
//!
//! Without `--registry` it starts a registry in this process, on an
//! ephemeral port of 127.0.0.1, with the default [`RegistryConfig`]; the
//! clients then share the machine's cores (and this tokio runtime) with it.
//! With `--registry` it measures that registry process instead. Either way
//! every request goes over HTTP through [`RegistryClient`], exactly as a
//! server or a discovery client would send it.
//!
//! What it measures, in order:
//!
//! 1. **Registrations per second.** `--instances` (1,000) instances, spread
//!    round-robin over `--services` (10) services, each registered once with
//!    a unique id, by `--concurrency` (32) client tasks sharing one
//!    connection pool, so at most that many requests are in flight. The rate
//!    is successful registrations / wall time from the first send to the
//!    last reply. Every registration asks for the longest TTL (1 h), so
//!    nothing expires or trips self-preservation during the run and no
//!    background heartbeats disturb the numbers.
//! 2. **Heartbeats per second.** The same, one heartbeat per registered
//!    instance.
//! 3. **Watch propagation.** `--watchers` (100) tasks each run a
//!    blocking-query loop (`RegistryClient::watch(service, cursor, wait)`) on
//!    the service `Watched` (one of the services above, so it already holds
//!    its share of the instances). Then, for up to `--rounds` (200) rounds,
//!    capped at `--time-cap-secs` (40 s) in total: wait `--settle-ms` (10 ms)
//!    so every watcher is parked in its blocking query again, note the
//!    instant, register one new instance of `Watched`, and wait until every
//!    watcher has reported a reply that lists it (each reply holds what
//!    changed since the watcher's last one). A watcher notes
//!    the instant its `watch` call returned; propagation is that instant
//!    minus the instant just before the register request was sent, so it
//!    includes the register round trip, the wake-up of every blocking query,
//!    encoding the change (once, shared by the watchers it wakes), the HTTP reply
//!    and the JSON decoding in the watcher. A watcher that has not reported
//!    within `--round-timeout-ms` (5 s) counts as a miss for that round (a
//!    late report is dropped). The register round trip alone is reported as
//!    well, for comparison.
//! 4. **Deregistrations per second**, removing everything the run added
//!    (also what keeps an external registry clean afterwards).
//!
//! The output ends with a Markdown table meant for docs/REGISTRY.md. Ids
//! carry a random per-run tag, so repeated runs against one external
//! registry never collide. The whole run stays well under a minute on a
//! 2-core machine with the defaults.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use switchboard_registry::client::Heartbeat;
use switchboard_registry::model::{Cursor, RegisterRequest, MAX_TTL};
use switchboard_registry::{RegistryClient, RegistryConfig, RegistryServer};
use tokio::sync::mpsc;

/// The service the watchers follow (index 0 of the services).
const WATCHED: &str = "Watched";
/// How long one blocking query may wait before it is sent again.
const WATCH_WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Parser)]
#[command(about = "Measure the built-in registry: registrations/s, heartbeats/s, watch propagation")]
struct Args {
    /// Measure the registry at this URL (http://HOST:PORT) instead of one started in this process.
    #[arg(long)]
    registry: Option<String>,
    /// Instances to register (and heartbeat).
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// Services the instances are spread over (the first is `Watched`).
    #[arg(long, default_value_t = 10)]
    services: usize,
    /// Requests in flight at once for registrations, heartbeats and deregistrations.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Blocking-query loops on `Watched`.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Propagation rounds (one new `Watched` instance each).
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Stop starting rounds after this many seconds.
    #[arg(long, default_value_t = 40)]
    time_cap_secs: u64,
    /// A watcher that has not seen a round's instance after this long is a miss.
    #[arg(long, default_value_t = 5000)]
    round_timeout_ms: u64,
    /// Pause before each round so every watcher is parked in its blocking query again.
    #[arg(long, default_value_t = 10)]
    settle_ms: u64,
}

/// What a batch of concurrent requests achieved.
struct Batch {
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Batch {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn cell(&self) -> String {
        let mut cell = format!("{:.0} /s ({} in {:.2} s)", self.rate(), self.ok, self.elapsed.as_secs_f64());
        if self.failed > 0 {
            cell.push_str(&format!(", {} failed", self.failed));
        }
        cell
    }

    fn warn(&self, what: &str) {
        if let Some(e) = &self.first_error {
            eprintln!("warning: {} {what} failed; first error: {e}", self.failed);
        }
    }
}

/// Runs `op(0..n)` with at most `concurrency` calls in flight.
async fn batch<F, Fut>(n: usize, concurrency: usize, op: F) -> Result<Batch>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (op, next, first_error) = (op.clone(), next.clone(), first_error.clone());
        tasks.spawn(async move {
            let (mut ok, mut failed) = (0usize, 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return (ok, failed);
                }
                match op(i).await {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (o, f) = done.context("a client task panicked")?;
        ok += o;
        failed += f;
    }
    let elapsed = start.elapsed();
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok(Batch { ok, failed, first_error, elapsed })
}

/// The layout of the run: which service and id instance `i` gets.
struct Plan {
    tag: String,
    services: Vec<String>,
}

impl Plan {
    fn service(&self, i: usize) -> &str {
        &self.services[i % self.services.len()]
    }

    fn id(&self, i: usize) -> String {
        format!("{}-{i:05}", self.tag)
    }

    fn round_id(&self, round: usize) -> String {
        format!("{}-round-{round:05}", self.tag)
    }

    /// The instance whose registration tells the watchers to stop.
    fn stop_id(&self) -> String {
        format!("{}-stop", self.tag)
    }

    fn request(service: &str, id: String, port: usize) -> RegisterRequest {
        let mut req = RegisterRequest::new(service, id, format!("127.0.0.1:{}", 10_000 + port % 50_000));
        req.ttl_ms = Some(u64::try_from(MAX_TTL.as_millis()).unwrap_or(3_600_000));
        req
    }
}

/// What a watcher tells the coordinator.
enum Report {
    /// The first listing arrived; the watcher is now in its blocking-query loop.
    Ready,
    /// A reply returned at `at` listed round `round`'s instance for the first time.
    Seen { round: usize, at: Instant },
    /// A watch call failed (the watcher retries).
    Error(String),
}

/// One blocking-query loop on `WATCHED`, reporting each round's instance once, in order,
/// until a reply arrives after `stop` was set.
async fn watcher(client: RegistryClient, plan: Arc<Plan>, stop: Arc<AtomicBool>, tx: mpsc::UnboundedSender<Report>) {
    let mut cursor = Cursor::default();
    let mut next_round = 0;
    let mut ready = false;
    loop {
        // Each answer holds what changed since the last one (the first: every instance).
        match client.watch(WATCHED, cursor, WATCH_WAIT).await {
            Ok(list) => {
                let at = Instant::now();
                cursor = list.cursor();
                loop {
                    let id = plan.round_id(next_round);
                    if !list.instances.iter().any(|i| i.id == id) {
                        break;
                    }
                    if tx.send(Report::Seen { round: next_round, at }).is_err() {
                        return;
                    }
                    next_round += 1;
                }
                if !ready {
                    ready = true;
                    if tx.send(Report::Ready).is_err() {
                        return;
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(e) => {
                if tx.send(Report::Error(e.to_string())).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

struct Propagation {
    hist: Histogram<u64>,
    register_rtt: Histogram<u64>,
    rounds: usize,
    misses: usize,
    late: usize,
    watch_errors: usize,
    first_watch_error: Option<String>,
    register_errors: usize,
    elapsed: Duration,
}

fn histogram() -> Result<Histogram<u64>> {
    // Microseconds, 1 µs ..= 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

async fn propagation(client: &RegistryClient, plan: &Arc<Plan>, args: &Args) -> Result<Propagation> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let mut watchers = tokio::task::JoinSet::new();
    for _ in 0..args.watchers {
        watchers.spawn(watcher(client.clone(), plan.clone(), stop.clone(), tx.clone()));
    }
    drop(tx);

    let mut watch_errors = 0;
    let mut first_watch_error = None;
    let mut note_error = |e: String| {
        watch_errors += 1;
        first_watch_error.get_or_insert(e);
    };

    // Every watcher has its first listing before round 0.
    let mut ready = 0;
    let ready_by = tokio::time::Instant::now() + Duration::from_secs(10);
    while ready < args.watchers {
        match tokio::time::timeout_at(ready_by, rx.recv()).await {
            Ok(Some(Report::Ready)) => ready += 1,
            Ok(Some(Report::Error(e))) => note_error(e),
            Ok(Some(Report::Seen { .. })) => {}
            Ok(None) => bail!("every watcher stopped"),
            Err(_) => bail!("only {ready} of {} watchers got their first listing within 10 s", args.watchers),
        }
    }

    let mut hist = histogram()?;
    let mut register_rtt = histogram()?;
    let (mut rounds, mut misses, mut late, mut register_errors) = (0, 0, 0, 0);
    let settle = Duration::from_millis(args.settle_ms);
    let round_timeout = Duration::from_millis(args.round_timeout_ms);
    let start = Instant::now();
    let cap = Duration::from_secs(args.time_cap_secs);
    for round in 0..args.rounds {
        if start.elapsed() >= cap {
            break;
        }
        tokio::time::sleep(settle).await;
        let req = Plan::request(WATCHED, plan.round_id(round), args.instances + round);
        let t0 = Instant::now();
        let registered = client.register(&req).await;
        register_rtt.record(micros(t0.elapsed()))?;
        rounds += 1;
        if let Err(e) = registered {
            register_errors += 1;
            misses += args.watchers;
            eprintln!("warning: round {round}: registering {} failed: {e}", req.id);
            continue;
        }
        let mut seen = 0;
        let give_up = tokio::time::Instant::now() + round_timeout;
        while seen < args.watchers {
            match tokio::time::timeout_at(give_up, rx.recv()).await {
                Ok(Some(Report::Seen { round: r, at })) if r == round => {
                    hist.record(micros(at.saturating_duration_since(t0)))?;
                    seen += 1;
                }
                Ok(Some(Report::Seen { .. })) => late += 1,
                Ok(Some(Report::Error(e))) => note_error(e),
                Ok(Some(Report::Ready)) => {}
                Ok(None) => bail!("every watcher stopped"),
                Err(_) => break,
            }
        }
        misses += args.watchers - seen;
    }
    let elapsed = start.elapsed();
    // Stop the watchers with one more change, so no blocking query is left
    // parked in the registry to wake up during the deregistrations.
    stop.store(true, Ordering::Relaxed);
    let sentinel = Plan::request(WATCHED, plan.stop_id(), 0);
    if client.register(&sentinel).await.is_ok() {
        let all_done = async { while watchers.join_next().await.is_some() {} };
        if tokio::time::timeout(round_timeout, all_done).await.is_err() {
            eprintln!("warning: some watchers did not stop within {round_timeout:?}; aborting them");
        }
    }
    watchers.shutdown().await;
    Ok(Propagation {
        hist,
        register_rtt,
        rounds,
        misses,
        late,
        watch_errors,
        first_watch_error,
        register_errors,
        elapsed,
    })
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.services == 0 || args.instances < args.services {
        bail!("need at least one instance per service (--instances {} --services {})", args.instances, args.services);
    }
    if args.watchers == 0 || args.concurrency == 0 {
        bail!("--watchers and --concurrency must be at least 1");
    }

    let (server, url) = match &args.registry {
        Some(url) => (None, url.clone()),
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding 127.0.0.1:0")?;
            let handle = RegistryServer::builder()
                .config(RegistryConfig::default())
                .build()
                .spawn(listener)
                .context("starting the registry")?;
            let url = format!("http://{}", handle.local_addr());
            (Some(handle), url)
        }
    };
    let client = RegistryClient::new(&url)?;
    let status = client.status().await.with_context(|| format!("registry at {url} does not answer"))?;

    let services: Vec<String> =
        std::iter::once(WATCHED.to_owned()).chain((1..args.services).map(|s| format!("Load{s}"))).collect();
    let plan = Arc::new(Plan { tag: format!("load-{:08x}", fastrand::u32(..)), services });

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) { "debug (use --release)" } else { "release" };
    let mode = if server.is_some() { "in-process (shares the cores with the clients)" } else { "external" };
    println!("registry_load: {mode} registry at {url}, {} instances there before the run", status.instances);
    println!(
        "machine: {cpus} CPUs (available_parallelism), {}/{}, {profile} build",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!(
        "params: {} instances over {} services, {} requests in flight, TTL 1 h; {} watchers on `{WATCHED}` \
         ({} instances + 1 per round), up to {} rounds / {} s, {} ms settle, {} ms round timeout",
        args.instances,
        args.services,
        args.concurrency,
        args.watchers,
        args.instances.div_ceil(args.services),
        args.rounds,
        args.time_cap_secs,
        args.settle_ms,
        args.round_timeout_ms,
    );

    // 1. Registrations.
    let register = {
        let (client, plan) = (client.clone(), plan.clone());
        batch(args.instances, args.concurrency, move |i| {
            let (client, req) = (client.clone(), Plan::request(plan.service(i), plan.id(i), i));
            async move { client.register(&req).await.map(drop).map_err(Into::into) }
        })
        .await?
    };
    register.warn("registrations");

    // 2. Heartbeats.
    let heartbeat = {
        let (client, plan) = (client.clone(), plan.clone());
        batch(args.instances, args.concurrency, move |i| {
            let (client, service, id) = (client.clone(), plan.service(i).to_owned(), plan.id(i));
            async move {
                match client.heartbeat(&service, &id).await? {
                    Heartbeat::Renewed => Ok(()),
                    Heartbeat::Unknown => bail!("{service}/{id}: unknown_instance"),
                }
            }
        })
        .await?
    };
    heartbeat.warn("heartbeats");

    // 3. Watch propagation.
    let prop = propagation(&client, &plan, &args).await?;
    if let Some(e) = &prop.first_watch_error {
        eprintln!("warning: {} watch calls failed; first error: {e}", prop.watch_errors);
    }

    // 4. Deregister everything this run added.
    let deregister = {
        let (client, plan) = (client.clone(), plan.clone());
        let rounds = prop.rounds;
        let instances = args.instances;
        batch(instances + rounds, args.concurrency, move |i| {
            let client = client.clone();
            let (service, id) = if i < instances {
                (plan.service(i).to_owned(), plan.id(i))
            } else {
                (WATCHED.to_owned(), plan.round_id(i - instances))
            };
            async move { client.deregister(&service, &id).await.map(drop).map_err(Into::into) }
        })
        .await?
    };
    deregister.warn("deregistrations");
    // The watchers' stop signal, outside the measurement; it may not exist.
    let _ = client.deregister(WATCHED, &plan.stop_id()).await;

    if let Some(handle) = server {
        handle.shutdown().await.context("stopping the registry")?;
    }

    let h = &prop.hist;
    let rtt = &prop.register_rtt;
    let samples = h.len();
    let rows = [
        ("registrations", register.cell()),
        ("heartbeats", heartbeat.cell()),
        ("deregistrations", deregister.cell()),
        (
            "watch propagation p50 / p99 / max",
            format!("{} / {} / {}", ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99)), ms(h.max())),
        ),
        (
            "samples / misses / late",
            format!(
                "{samples} ({} rounds × {} watchers, {:.1} s) / {} / {}",
                prop.rounds,
                args.watchers,
                prop.elapsed.as_secs_f64(),
                prop.misses,
                prop.late
            ),
        ),
        (
            "register round trip in rounds p50 / p99 / max",
            format!("{} / {} / {}", ms(rtt.value_at_quantile(0.5)), ms(rtt.value_at_quantile(0.99)), ms(rtt.max())),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let vwidth = rows.iter().map(|(_, v)| v.chars().count()).max().unwrap_or(0);
    println!();
    println!("| {:<width$} | {:<vwidth$} |", "measurement", "result");
    println!("|{}|{}|", "-".repeat(width + 2), "-".repeat(vwidth + 2));
    for (k, v) in &rows {
        println!("| {k:<width$} | {v:<vwidth$} |");
    }
    if prop.register_errors > 0 || prop.watch_errors > 0 {
        println!("\nerrors: {} round registrations, {} watch calls", prop.register_errors, prop.watch_errors);
    }
    Ok(())
}
