//! Calls `Arith.Multiply` and prints the product; with `--calls N`, makes N
//! calls and prints how they spread over the instances.
//!
//! ```text
//! cargo run --release --example arith_client -- --addr 127.0.0.1:9000 [A B]
//! cargo run --release --example arith_client -- --registry http://127.0.0.1:7700 --calls 300
//! ```

use std::time::Duration;

use clap::Parser;
use switchboard_examples::arith::{Args, ArithClient};
use switchboard_examples::Target;

#[derive(Parser)]
#[command(about = "Multiply two numbers on an Arith server")]
struct Cli {
    /// Server address (when no --registry is given).
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: String,
    /// Find the servers through this registry (http://HOST:PORT for the
    /// built-in one) and balance over them.
    #[arg(long)]
    registry: Option<String>,
    /// How many calls to make.
    #[arg(long, default_value_t = 1)]
    calls: u64,
    /// Pause between calls (e.g. 10ms), to watch failover by hand.
    #[arg(long, value_parser = humantime_ms)]
    interval: Option<Duration>,
    /// First factor.
    #[arg(default_value_t = 7, allow_negative_numbers = true)]
    a: i64,
    /// Second factor.
    #[arg(default_value_t = 8, allow_negative_numbers = true)]
    b: i64,
}

fn humantime_ms(s: &str) -> Result<Duration, String> {
    let ms = s.strip_suffix("ms").ok_or("give the pause in ms, e.g. 10ms")?;
    ms.parse().map(Duration::from_millis).map_err(|e| format!("{s:?}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = Target::new("Arith", cli.registry.as_deref(), &cli.addr)?;
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
        if let Target::Discovered(balanced) = &target {
            for s in balanced.stats() {
                let gone = if s.listed { "" } else { "  (left the registry)" };
                println!("  {:<22} answered {:>6}  failed {:>4}{gone}", s.instance.address, s.answered, s.failed);
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} calls failed", cli.calls);
    }
    Ok(())
}
