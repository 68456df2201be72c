//! `switchboard bench`: a load generator for any `Service.Method`, in the
//! spirit of ghz for gRPC.
//!
//! `--concurrency` workers share one client (one multiplexed connection, as a
//! service would use it) and call in a closed loop: each worker sends its next
//! call when the previous one answers. Every worker records latencies in its
//! own HDR histogram (no shared state on the hot path); they are merged at the
//! end. A progress line on stderr shows calls/s while it runs.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use switchboard::balance::Balanced;
use switchboard::frame::ByteStr;
use switchboard::{CallOptions, Channel, Client, Codec, Encode, Request};
use switchboard_cli::load::micros;

/// The message `--payload-size` sends: the shape of the `Echo` example.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")] // Go's field names: Go's net/rpc client calls the same server
struct Message {
    id: u64,
    name: String,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

/// What to send.
pub(crate) enum Body {
    /// A JSON document (any method).
    Json(serde_json::Value),
    /// An `{id, name, payload}` message with this many payload bytes.
    Payload(usize),
}

/// When to stop.
#[derive(Clone, Copy)]
pub(crate) enum Stop {
    After(Duration),
    Requests(u64),
}

/// Where the calls go.
pub(crate) enum Target {
    /// One server, over one multiplexed connection.
    Addr(String),
    /// The method's service, through this registry's discovery (a
    /// balanced channel: every instance listed gets calls).
    Registry(String),
}

pub(crate) struct Plan {
    pub(crate) target: Target,
    /// User metadata sent with every call (`--meta KEY=VALUE`).
    pub(crate) metadata: Vec<(String, String)>,
    pub(crate) method: String,
    pub(crate) body: Body,
    pub(crate) codec: Option<Codec>,
    pub(crate) concurrency: usize,
    pub(crate) stop: Stop,
    pub(crate) warmup: Duration,
    pub(crate) timeout: Duration,
}

struct Shared {
    calls: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    /// `Stop::Requests`: tickets left to hand out.
    tickets: AtomicU64,
}

struct WorkerReport {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

pub(crate) async fn run(plan: Plan) -> anyhow::Result<bool> {
    let codec = match (&plan.body, plan.codec) {
        (_, Some(c)) => c,
        (Body::Json(_), None) => Codec::Json,
        (Body::Payload(_), None) => Codec::Binary,
    };
    if matches!(plan.body, Body::Json(_)) && codec == Codec::Binary {
        anyhow::bail!("--data needs a self-describing codec (json or msgpack); binary payloads need compiled types");
    }
    let payload = encode_body(&plan.body, codec)?;
    if plan.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }

    match &plan.target {
        Target::Addr(addr) => {
            let client = Client::builder(addr.clone()).codec(codec).timeout(Some(plan.timeout)).connect().await?;
            load(&client, &plan, &payload, codec, None).await
        }
        Target::Registry(url) => {
            let backend = switchboard_registry::from_url(url)?;
            let Some((service, _)) = plan.method.rsplit_once('.') else {
                anyhow::bail!("{:?} is not Service.Method", plan.method);
            };
            let channel = Balanced::builder(service, backend.discover).codec(codec).timeout(Some(plan.timeout)).build();
            let listed = channel.wait_for(1, plan.timeout).await?;
            eprintln!("{service}: {listed} instance(s) listed");
            load(&channel, &plan, &payload, codec, Some(&channel)).await
        }
    }
}

/// The load itself, over any channel; `balanced` adds the per-instance
/// spread to the summary.
async fn load<C: Channel + Clone + Send + Sync + 'static>(
    channel: &C,
    plan: &Plan,
    payload: &Bytes,
    codec: Codec,
    balanced: Option<&Balanced>,
) -> anyhow::Result<bool> {
    // One call up front: a wrong method or argument fails now, with its
    // message, instead of as a wall of errors.
    let opts = options(plan, codec);
    channel
        .call_raw(Request::new(plan.method.clone(), codec, payload.clone()), &opts)
        .await
        .map_err(|e| anyhow::anyhow!("the first call failed: {}", e.coded()))?;

    if !plan.warmup.is_zero() {
        eprintln!("warming up for {:?} ...", plan.warmup);
        drive(channel, plan, payload, codec, Stop::After(plan.warmup), false).await;
    }
    // The spread counts the measured run only.
    let before = balanced.map(answered_by_instance).unwrap_or_default();

    let started = Instant::now();
    let reports = drive(channel, plan, payload, codec, plan.stop, true).await;
    let elapsed = started.elapsed();

    let mut histogram = new_histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for report in reports {
        histogram.add(&report.histogram).map_err(|e| anyhow::anyhow!("merging histograms: {e}"))?;
        for (k, v) in report.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    print_summary(plan, codec, payload.len(), elapsed, &histogram, &errors);
    if let Some(balanced) = balanced {
        println!();
        println!("Instances:");
        for (address, (answered, failed)) in answered_by_instance(balanced) {
            let (a0, f0) = before.get(&address).copied().unwrap_or_default();
            println!("  {address:<22} answered {:>9}  failed {:>6}", answered - a0, failed - f0);
        }
    }
    Ok(errors.is_empty())
}

/// Calls answered and failed so far, by instance address.
fn answered_by_instance(balanced: &Balanced) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for s in balanced.stats() {
        let entry = out.entry(s.instance.address.clone()).or_default();
        entry.0 += s.answered;
        entry.1 += s.failed;
    }
    out
}

/// The options every call of the run carries.
fn options(plan: &Plan, codec: Codec) -> CallOptions {
    plan.metadata.iter().fold(CallOptions::new().codec(codec), |o, (k, v)| o.metadata(k.clone(), v.clone()))
}

impl Shared {
    fn new(stop: Stop) -> Shared {
        let tickets = match stop {
            Stop::Requests(n) => n,
            Stop::After(_) => u64::MAX,
        };
        Shared {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            tickets: AtomicU64::new(tickets),
        }
    }

    /// May a worker make one more call?
    fn take_ticket(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        self.tickets.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1)).is_ok()
    }
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("static histogram bounds are valid")
}

fn encode_body(body: &Body, codec: Codec) -> anyhow::Result<Bytes> {
    let mut buf = Vec::new();
    match body {
        Body::Json(value) => value.encode(codec, &mut buf)?,
        Body::Payload(n) => {
            Message { id: 1, name: "benchmark".into(), payload: vec![0xA5; *n] }.encode(codec, &mut buf)?
        }
    }
    Ok(Bytes::from(buf))
}

async fn drive<C: Channel + Clone + Send + Sync + 'static>(
    client: &C,
    plan: &Plan,
    payload: &Bytes,
    codec: Codec,
    stop: Stop,
    progress: bool,
) -> Vec<WorkerReport> {
    let shared = Arc::new(Shared::new(stop));
    let method = ByteStr::from(plan.method.clone());
    let started = Instant::now();
    let workers: Vec<_> = (0..plan.concurrency)
        .map(|_| {
            let client = client.clone();
            let shared = Arc::clone(&shared);
            let method = method.clone();
            let payload = payload.clone();
            let opts = options(plan, codec);
            tokio::spawn(async move { worker(client, method, codec, payload, opts, shared).await })
        })
        .collect();

    let interactive = std::io::stderr().is_terminal();
    let tick = if interactive { Duration::from_millis(200) } else { Duration::from_secs(1) };
    loop {
        let done = match stop {
            Stop::After(d) => started.elapsed() >= d,
            Stop::Requests(n) => shared.calls.load(Ordering::Relaxed) + shared.errors.load(Ordering::Relaxed) >= n,
        };
        if done || workers.iter().all(|w| w.is_finished()) {
            break;
        }
        tokio::time::sleep(tick.min(match stop {
            Stop::After(d) => d.saturating_sub(started.elapsed()).max(Duration::from_millis(1)),
            Stop::Requests(_) => tick,
        }))
        .await;
        if progress {
            print_progress(&shared, started.elapsed(), stop, interactive);
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::with_capacity(workers.len());
    for w in workers {
        if let Ok(report) = w.await {
            reports.push(report);
        }
    }
    if progress && interactive {
        eprintln!();
    }
    reports
}

async fn worker<C: Channel>(
    client: C,
    method: ByteStr,
    codec: Codec,
    payload: Bytes,
    opts: CallOptions,
    shared: Arc<Shared>,
) -> WorkerReport {
    let mut histogram = new_histogram();
    let mut errors = BTreeMap::new();
    while shared.take_ticket() {
        let start = Instant::now();
        let result = client.call_raw(Request::new(method.clone(), codec, payload.clone()), &opts).await;
        let micros = start.elapsed().as_micros() as u64;
        match result {
            Ok(_) => {
                histogram.saturating_record(micros.max(1));
                shared.calls.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                *errors.entry(e.coded().to_string()).or_insert(0u64) += 1;
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    WorkerReport { histogram, errors }
}

fn print_progress(shared: &Shared, elapsed: Duration, stop: Stop, interactive: bool) {
    let calls = shared.calls.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let rate = calls as f64 / elapsed.as_secs_f64().max(1e-9);
    let (done, total) = match stop {
        Stop::After(d) => (elapsed.as_secs_f64(), d.as_secs_f64()),
        Stop::Requests(n) => ((calls + errors) as f64, n as f64),
    };
    let share = (done / total.max(1e-9)).clamp(0.0, 1.0);
    let width = 30;
    let filled = (share * width as f64) as usize;
    let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
    let line = format!(
        "[{bar}] {:>5.1}% {:>6.1}s  {calls} calls  {rate:>10.0} calls/s  {errors} errors",
        share * 100.0,
        elapsed.as_secs_f64()
    );
    if interactive {
        eprint!("\r{line}");
        let _ = std::io::stderr().flush();
    } else {
        eprintln!("{line}");
    }
}

fn print_summary(
    plan: &Plan,
    codec: Codec,
    request_bytes: usize,
    elapsed: Duration,
    h: &Histogram<u64>,
    errors: &BTreeMap<String, u64>,
) {
    let ok = h.len();
    let failed: u64 = errors.values().sum();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let us = |v: u64| micros(v);
    println!("Summary:");
    let target = match &plan.target {
        Target::Addr(addr) => addr.clone(),
        Target::Registry(url) => format!("{url} (discovery)"),
    };
    println!("  target:       {target} {}", plan.method);
    println!("  codec:        {codec} ({request_bytes} B request)");
    println!("  concurrency:  {}", plan.concurrency);
    println!("  duration:     {:.2} s", secs);
    println!("  calls:        {ok} ok, {failed} failed");
    println!("  calls/s:      {:.0}", ok as f64 / secs);
    println!();
    println!("Latency:");
    if ok > 0 {
        println!("  min     {}", us(h.min()));
        println!("  mean    {}", us(h.mean() as u64));
        for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)] {
            println!("  {name:<7} {}", us(h.value_at_quantile(q)));
        }
        println!("  max     {}", us(h.max()));
        println!();
        println!("Histogram:");
        print_histogram(h);
    } else {
        println!("  (no successful calls)");
    }
    if !errors.is_empty() {
        println!();
        println!("Errors:");
        for (message, count) in errors {
            println!("  {count:>8}  {message}");
        }
    }
}

/// Ten buckets from min to max, on a log scale, with a bar per bucket.
fn print_histogram(h: &Histogram<u64>) {
    let (lo, hi) = (h.min().max(1) as f64, h.max().max(1) as f64);
    let buckets = 10;
    let ratio = (hi / lo).max(1.0001).powf(1.0 / buckets as f64);
    let mut edges = Vec::with_capacity(buckets + 1);
    let mut edge = lo;
    for _ in 0..buckets {
        edge *= ratio;
        edges.push(edge.ceil() as u64);
    }
    let mut counts = vec![0u64; buckets];
    for v in h.iter_recorded() {
        let value = v.value_iterated_to();
        let i = edges.iter().position(|e| value <= *e).unwrap_or(buckets - 1);
        counts[i] += v.count_at_value();
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    for (edge, count) in edges.iter().zip(&counts) {
        let bar = "■".repeat(((*count as f64 / most as f64) * 40.0).ceil() as usize);
        println!("  <= {:>10} [{count:>9}] {bar}", micros(*edge));
    }
}
