//! `switchboard-bench`: Switchboard side by side with the RPC frameworks its
//! users compare it with (tonic, tarpc, Go's net/rpc) and with raw TCP
//! floors, in one run, reporting ratios. `scripts/bench.sh` builds
//! everything and runs it; docs/BENCHMARKS.md has the latest results.
//!
//! ## Layout
//!
//! | module | what it holds |
//! |--------|---------------|
//! | `main.rs` | the command line: `run`, `serve SYSTEM`, `list` |
//! | [`orchestrator`] | `run`: per cell, per system, a fresh server process, the callers, the result |
//! | [`workload`] | the message, the cells (payload × callers), the echo check |
//! | [`driver`] | the closed loop, async and blocking: warm-up, measured window, first error fails, bounded in time |
//! | [`stats`] | HDR latency histograms and a cell's [`Measurement`](stats::Measurement) |
//! | [`process`] | child processes: servers (address, peak RSS) and the Go client; killed on drop |
//! | [`systems`] | one module per system: its server and its callers |
//! | [`compare`] | Switchboard's ratios to the peers and floors in a cell |
//! | [`targets`] | the performance targets, judged on a run |
//! | [`report`] | text and markdown tables |
//! | [`machine`] | what the run ran on |
//!
//! A measurement: `orchestrator` starts the system's server (the
//! `echo_server` example, `switchboard-bench serve SYSTEM`, or the Go
//! server) and reads its `listening on ADDR` line → the system module
//! connects its callers → `driver` runs them for the warm-up and the
//! measured window → `stats` turns the histogram into calls/s and
//! percentiles → the server's VmHWM is read and the server is killed →
//! `report` prints the cell; after the last cell, the summary and targets.

mod compare;
mod driver;
mod machine;
mod orchestrator;
mod process;
mod report;
mod stats;
mod systems;
mod targets;
mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use switchboard_cli::parse_duration;

use crate::driver::Plan;
use crate::systems::System;
use crate::workload::Cell;

/// Set by scripts/bench.sh to the command it was run as, for the report.
const COMMAND_ENV: &str = "SWITCHBOARD_BENCH_COMMAND";

#[derive(Parser)]
#[command(name = "switchboard-bench", about = "Benchmark Switchboard against tonic, tarpc, Go net/rpc and raw TCP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the systems cell by cell and report (what scripts/bench.sh runs).
    Run(RunArgs),
    /// Serve one of the harness's own servers (tonic, tarpc, raw-tokio,
    /// raw-std) until standard input closes. `run` starts these itself.
    Serve {
        #[arg(value_parser = System::parse)]
        system: System,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// List the systems and the cells of a full run.
    List,
}

#[derive(Args)]
struct RunArgs {
    /// One cell (128 B, 64 callers), 0.3 s warm-up, 1 s measured: the CI
    /// check that the harness still works.
    #[arg(long)]
    quick: bool,
    /// Warm-up per cell and system [default: 1s; --quick: 0.3s].
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Measured time per cell and system [default: 5s; --quick: 1s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// How long a call may stay unanswered after the measured time before
    /// the run fails as stalled.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    grace: Duration,
    /// Only these systems (comma-separated; see `list`).
    #[arg(long, value_delimiter = ',', value_parser = System::parse)]
    systems: Vec<System>,
    /// Only these cells, as SIZE/CALLERS (comma-separated), e.g. 128B/64,16KiB/1,1MiB/16.
    #[arg(long, value_delimiter = ',', value_parser = Cell::parse)]
    cells: Vec<Cell>,
    /// Also write the report as markdown to FILE (between the generated-section
    /// markers if the file exists; the rest of it is kept).
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// The echo_server example binary [default: examples/echo_server next to this binary].
    #[arg(long, value_name = "PATH")]
    echo_server: Option<PathBuf>,
    /// Where go-echo-server and go-echo-client are [default: next to this binary].
    #[arg(long, value_name = "DIR")]
    go_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Serve { system, listen } => systems::serve(system, listen).map(|()| true),
        Command::List => {
            list();
            Ok(true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: not every system could be measured in every cell (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<bool> {
    process::kill_children_on_signal()?;
    let (warmup, duration) = if args.quick {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    };
    let plan =
        Plan { warmup: args.warmup.unwrap_or(warmup), duration: args.duration.unwrap_or(duration), grace: args.grace };
    if plan.duration.is_zero() {
        bail!("--duration must be more than zero");
    }
    let cells = match (args.cells.is_empty(), args.quick) {
        (false, _) => args.cells,
        (true, true) => Cell::quick_grid(),
        (true, false) => Cell::full_grid(),
    };
    let systems = if args.systems.is_empty() { System::ALL.to_vec() } else { args.systems };
    let exe = std::env::current_exe().context("cannot find the harness binary")?;
    let exe_dir = exe.parent().unwrap_or(Path::new("."));
    let command = std::env::var(COMMAND_ENV).unwrap_or_else(|_| {
        std::iter::once("switchboard-bench".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ")
    });
    orchestrator::run(&orchestrator::Options {
        cells,
        systems,
        plan,
        echo_server: args.echo_server.unwrap_or_else(|| exe_dir.join("examples").join("echo_server")),
        go_dir: args.go_dir.unwrap_or_else(|| exe_dir.to_path_buf()),
        markdown: args.markdown,
        command,
    })
}

fn list() {
    println!("systems:");
    for system in System::ALL {
        println!("  {:<18} {}", system.name(), system.describe());
    }
    let cells: Vec<String> = Cell::full_grid().iter().map(Cell::spec).collect();
    println!("cells of a full run: {}", cells.join(", "));
    let quick: Vec<String> = Cell::quick_grid().iter().map(Cell::spec).collect();
    println!("cells of --quick: {}", quick.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_parses() {
        let cli = Cli::try_parse_from([
            "switchboard-bench",
            "run",
            "--quick",
            "--systems",
            "tonic,raw-std",
            "--cells",
            "1MiB/16",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert!(args.quick);
        assert_eq!(args.systems, [System::Tonic, System::RawStd]);
        assert_eq!(args.cells, [Cell::parse("1MiB/16").expect("cell")]);
        assert!(Cli::try_parse_from(["switchboard-bench", "run", "--systems", "grpc"]).is_err());
    }
}
