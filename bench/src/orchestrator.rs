//! `switchboard-bench run`: measure every selected system in every selected
//! cell, one after another, and report.
//!
//! For each cell and system: start a fresh server process (so its peak RSS
//! is this cell's), connect the callers, run the closed loop (see
//! [`driver`]), read the server's VmHWM, stop the server. Async clients get
//! a fresh multi-thread tokio runtime per run (default worker count); the
//! raw-std floor's callers are plain threads with no runtime at all. A
//! system that fails does not stop the run: the remaining ones are still
//! measured, the failure is reported with its error, and the run exits
//! non-zero.

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use switchboard::Codec;

use crate::driver::{self, AsyncCaller, Plan};
use crate::machine::{self, Machine};
use crate::process::ServerProcess;
use crate::report::{self, CellReport, Outcome, RunInfo};
use crate::stats::{Measurement, Sample};
use crate::systems::go::{self, GoPrograms};
use crate::systems::{self, Role, System};
use crate::workload::Cell;

/// Longest time the callers may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run, and where the programs are.
pub(crate) struct Options {
    pub(crate) cells: Vec<Cell>,
    pub(crate) systems: Vec<System>,
    pub(crate) plan: Plan,
    /// The `echo_server` example binary.
    pub(crate) echo_server: PathBuf,
    /// Where `go-echo-server` and `go-echo-client` are.
    pub(crate) go_dir: PathBuf,
    pub(crate) markdown: Option<PathBuf>,
    /// The command line, for the report.
    pub(crate) command: String,
}

/// The programs the systems' servers run.
struct Programs {
    /// This binary, for `switchboard-bench serve SYSTEM`.
    harness: PathBuf,
    echo_server: PathBuf,
    /// `Ok(None)`: Go is not installed, the system is skipped.
    go: Result<Option<GoPrograms>, String>,
}

/// Run everything; `Ok(false)` if any system could not be measured in some
/// cell (skips are not failures).
pub(crate) fn run(opts: &Options) -> anyhow::Result<bool> {
    let started = Instant::now();
    let date = machine::utc_now();
    let programs = Programs {
        harness: std::env::current_exe().context("cannot find the harness binary")?,
        echo_server: opts.echo_server.clone(),
        go: if opts.systems.iter().any(|s| matches!(s, System::Go | System::SwitchboardGob)) {
            GoPrograms::find(&opts.go_dir).map_err(|e| format!("{e:#}"))
        } else {
            Ok(None)
        },
    };
    if opts.systems.iter().any(|s| s.role() == Role::Subject) && !programs.echo_server.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p switchboard-examples --example echo_server` \
             (scripts/bench.sh does), or pass --echo-server",
            programs.echo_server.display()
        );
    }

    let runs = opts.cells.len() * opts.systems.len();
    let estimate = (opts.plan.warmup + opts.plan.duration + Duration::from_millis(300)) * runs as u32;
    eprintln!(
        "switchboard-bench: {} cell(s) x {} system(s), {:?} warm-up + {:?} measured each: about {}s",
        opts.cells.len(),
        opts.systems.len(),
        opts.plan.warmup,
        opts.plan.duration,
        estimate.as_secs()
    );

    let mut reports = Vec::new();
    let mut done = 0;
    for &cell in &opts.cells {
        let mut results = Vec::new();
        for &system in &opts.systems {
            let outcome = match (system, &programs.go) {
                (System::Go | System::SwitchboardGob, Ok(None)) => {
                    Outcome::Skipped("Go is not installed (no `go` on PATH)".to_owned())
                }
                (System::Go | System::SwitchboardGob, Err(e)) => Outcome::Failed(e.clone()),
                _ => match measure(system, cell, opts.plan, &programs) {
                    Ok(m) => Outcome::Measured(m),
                    Err(e) => Outcome::Failed(format!("{e:#}")),
                },
            };
            done += 1;
            eprintln!("[{done:>2}/{runs}] {cell}: {system:<16} {}", progress(&outcome));
            results.push((system, outcome));
        }
        let report = CellReport { cell, results };
        print!("{}", report::cell_text(&report));
        reports.push(report);
    }
    print!("{}", report::summary_text(&reports));

    let elapsed = started.elapsed();
    println!("\ntotal run time: {}s", elapsed.as_secs());
    if let Some(path) = &opts.markdown {
        let info = RunInfo {
            date,
            machine: Machine::this(),
            command: opts.command.clone(),
            plan: opts.plan,
            elapsed,
            toolchains: toolchains(),
            revision: machine::source_revision(),
        };
        report::write_markdown(path, &report::markdown(&info, &reports))?;
        println!("wrote {}", path.display());
    }

    let failures: Vec<_> = reports.iter().flat_map(|r| r.failures().map(move |(s, e)| (r.cell, s, e))).collect();
    for (cell, system, error) in &failures {
        eprintln!("error: {cell}: {system}: {error}");
    }
    Ok(failures.is_empty())
}

/// One system in one cell, on a fresh server.
fn measure(system: System, cell: Cell, plan: Plan, programs: &Programs) -> anyhow::Result<Measurement> {
    let mut server = ServerProcess::start(&format!("{system} server"), server_command(system, programs)?)?;
    let addr = server.addr();
    let sample = match system {
        System::Switchboard | System::SwitchboardLog => {
            on_tokio(plan, systems::switchboard::callers(addr, cell, Codec::Binary))
        }
        System::SwitchboardJson => on_tokio(plan, systems::switchboard::callers(addr, cell, Codec::Json)),
        System::Tonic => on_tokio(plan, systems::tonic::callers(addr, cell)),
        System::Tarpc => on_tokio(plan, systems::tarpc::callers(addr, cell)),
        System::RawTokio => on_tokio(plan, systems::raw_tokio::callers(addr, cell)),
        System::RawStd => {
            systems::raw_std::callers(addr, cell, plan.grace).and_then(|callers| driver::run_blocking(callers, plan))
        }
        System::Go | System::SwitchboardGob => go_programs(programs)?.run_client(addr, cell, plan),
    };
    let sample = match sample {
        Ok(sample) => sample,
        // Say what became of the server: a crash explains most failed calls.
        Err(e) => match server.peak_rss() {
            Err(dead) => return Err(anyhow!("{e:#}; {dead:#}")),
            Ok(_) => return Err(anyhow!("{e:#} (the server is still running; {})", server.stderr_tail())),
        },
    };
    let peak_rss = server.peak_rss()?;
    Ok(Measurement::new(&sample, plan.duration, peak_rss))
}

fn server_command(system: System, programs: &Programs) -> anyhow::Result<Command> {
    Ok(match system {
        System::Switchboard | System::SwitchboardJson | System::SwitchboardGob => {
            systems::switchboard::server_command(&programs.echo_server, false)
        }
        System::SwitchboardLog => systems::switchboard::server_command(&programs.echo_server, true),
        System::Go => go_programs(programs)?.server_command(),
        System::Tonic | System::Tarpc | System::RawTokio | System::RawStd => {
            let mut command = Command::new(&programs.harness);
            command.args(["serve", system.name(), "--listen", "127.0.0.1:0"]);
            command
        }
    })
}

fn go_programs(programs: &Programs) -> anyhow::Result<&GoPrograms> {
    match &programs.go {
        Ok(Some(go)) => Ok(go),
        Ok(None) => bail!("Go is not installed"),
        Err(e) => bail!("{e}"),
    }
}

/// Connect callers and run the closed loop on a fresh multi-thread runtime.
fn on_tokio<C, F>(plan: Plan, connect: F) -> anyhow::Result<Sample>
where
    C: AsyncCaller,
    F: Future<Output = anyhow::Result<Vec<C>>>,
{
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start a tokio runtime")?;
    let result = runtime.block_on(async {
        let callers = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| anyhow!("connecting took over {CONNECT_TIMEOUT:?}"))??;
        driver::run_async(callers, plan).await
    });
    // Tasks of a failed run may still wait on a dead connection; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn progress(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Measured(m) => format!(
            "{:>10} calls/s  p50 {:>9.1} µs  p99 {:>9.1} µs  server RSS {}",
            report::thousands(m.calls_per_sec),
            m.p50_us,
            m.p99_us,
            report::mib(m.server_peak_rss)
        ),
        Outcome::Skipped(why) => format!("skipped: {why}"),
        Outcome::Failed(e) => format!("FAILED: {e}"),
    }
}

/// The compiler and peer versions, for the report.
fn toolchains() -> String {
    let go = go::go_version().unwrap_or_else(|| "go: not installed".to_owned());
    format!("{}; {go}; crates: {}", env!("BENCH_RUSTC_VERSION"), env!("BENCH_PEER_VERSIONS"))
}
