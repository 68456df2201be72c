//! Calls `Arith.Multiply` and prints the product; with `--calls N`, makes N
//! calls and prints how they spread over the instances; with `--rate N
//! --duration D`, makes N calls a second for D (open loop: on schedule,
//! whether or not earlier calls answered), checks every product, and prints
//! `calls: … ok: … failed: … p50: … p99: … max: …` at the end.
//!
//! ```text
//! cargo run --release --example arith_client -- --addr 127.0.0.1:9000 [A B]
//! cargo run --release --example arith_client -- --registry http://127.0.0.1:7700 --calls 300
//! cargo run --release --example arith_client -- --registry http://127.0.0.1:7700 --rate 5000 --duration 10s
//! ```
//!
//! Exits non-zero if any call failed.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchboard_cli::arith::{multiply_checked, Args, ArithClient};
use switchboard_cli::load::{micros, OpenLoop, Tally};
use switchboard_cli::{parse_duration, Balancing, Target};

#[derive(Parser)]
#[command(about = "Multiply two numbers on an Arith server")]
struct Cli {
    /// Server address (when no --registry is given).
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: String,
    /// Find the servers through this registry (http://HOST:PORT for the
    /// built-in one, etcd://HOST:PORT[,HOST:PORT...] for etcd) and balance
    /// over them.
    #[arg(long)]
    registry: Option<String>,
    /// How many calls to make, one after the other.
    #[arg(long, default_value_t = 1, conflicts_with = "rate")]
    calls: u64,
    /// Pause between calls (e.g. 10ms), to watch failover by hand.
    #[arg(long, value_parser = parse_duration, conflicts_with = "rate")]
    interval: Option<Duration>,
    /// Open loop: this many calls per second (with varied operands, each
    /// product checked), for --duration.
    #[arg(long, requires = "duration")]
    rate: Option<u64>,
    /// How long to run at --rate (e.g. 500ms, 10s, 1m).
    #[arg(long, value_parser = parse_duration, requires = "rate")]
    duration: Option<Duration>,
    /// With --rate: most calls running at once; a call due beyond that is
    /// not sent and reported as shed.
    #[arg(long, default_value_t = 1000)]
    max_in_flight: usize,
    /// Give up on a call (all failover attempts together) after this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Balancer, fail mode and zone (with --registry).
    #[command(flatten)]
    balancing: Balancing,
    /// First factor.
    #[arg(default_value_t = 7, allow_negative_numbers = true)]
    a: i64,
    /// Second factor.
    #[arg(default_value_t = 8, allow_negative_numbers = true)]
    b: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = Target::new("Arith", cli.registry.as_deref(), &cli.addr, cli.timeout, &cli.balancing)?;
    match (cli.rate, cli.duration) {
        (Some(rate), Some(duration)) => at_rate(&cli, target, rate, duration).await,
        _ => one_by_one(&cli, target).await,
    }
}

/// `--calls N [--interval D]`: sequential calls.
async fn one_by_one(cli: &Cli, target: Target) -> anyhow::Result<()> {
    let arith = ArithClient::new(&target);
    let mut failed = 0u64;
    let mut product = None;
    for _ in 0..cli.calls.max(1) {
        match arith.multiply(Args { a: cli.a, b: cli.b }).await {
            Ok(p) => product = product.or(Some(p)),
            Err(e) if cli.calls <= 1 => return Err(e.into()),
            Err(e) => {
                failed += 1;
                eprintln!("call failed: {e}");
            }
        }
        if let Some(pause) = cli.interval {
            tokio::time::sleep(pause).await;
        }
    }
    if let Some(p) = product {
        println!("{p}");
    }
    if cli.calls > 1 {
        println!("{} calls, {failed} failed", cli.calls);
        print_spread(&target);
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} calls failed", cli.calls);
    }
    Ok(())
}

/// `--rate N --duration D`: open-loop load, a progress line a second on
/// stderr, the totals on stdout.
async fn at_rate(cli: &Cli, target: Target, rate: u64, duration: Duration) -> anyhow::Result<()> {
    if rate == 0 {
        anyhow::bail!("--rate must be at least 1");
    }
    if let Target::Discovered(balanced) = &target {
        // Start with the list, so the first calls do not all wait for it.
        if balanced.ready(Duration::from_secs(5)).await == 0 {
            eprintln!("warning: discovery lists no Arith instance yet");
        }
    }
    let tally = Arc::new(Tally::new());
    let plan = OpenLoop { rate, duration, max_in_flight: cli.max_in_flight };
    let arith = ArithClient::new(target.clone());
    let progress = tokio::spawn(progress(Arc::clone(&tally)));
    plan.run(Arc::clone(&tally), move |i| {
        let arith = arith.clone();
        async move { multiply_checked(&arith, i).await }
    })
    .await;
    progress.abort();

    let counts = tally.counts();
    println!("{}", tally.summary_line());
    print_spread(&target);
    for (what, n) in tally.errors() {
        eprintln!("  {n:>8} × {what}");
    }
    if counts.shed > 0 {
        eprintln!(
            "warning: {} calls were not sent ({} already in flight); raise --max-in-flight or lower --rate",
            counts.shed, cli.max_in_flight
        );
    }
    if counts.failed > 0 {
        anyhow::bail!("{} of {} calls failed", counts.failed, counts.issued());
    }
    Ok(())
}

/// Once a second on stderr: calls/s, failures so far, p99 of that second.
async fn progress(tally: Arc<Tally>) {
    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut before = tally.counts();
    loop {
        ticker.tick().await;
        let now = tally.counts();
        let window = tally.take_window();
        eprintln!(
            "[{:>3.0}s] {:>6} calls/s  failed so far: {}  p99: {}",
            started.elapsed().as_secs_f64(),
            now.issued() - before.issued(),
            now.failed,
            micros(window.value_at_quantile(0.99))
        );
        let _ = std::io::stderr().flush();
        before = now;
    }
}

/// How the calls spread over the instances (through discovery only).
fn print_spread(target: &Target) {
    if let Target::Discovered(balanced) = target {
        for s in balanced.stats() {
            let gone = if s.listed { "" } else { "  (left the registry)" };
            println!("  {:<22} answered {:>6}  failed {:>4}{gone}", s.instance.address, s.answered, s.failed);
        }
    }
}
