//! Go's net/rpc with its default gob codec: the server and the client are
//! Go programs (`bench/go`, standard library only), built by
//! `scripts/bench.sh` into the harness's directory as `go-echo-server` and
//! `go-echo-client`.
//!
//! The Go client runs as its own process with the same workload and rules as
//! the Rust drivers (closed loop, one shared `rpc.Client`, counted calls
//! completing in the window, first error fails) and prints its latency
//! histogram as JSON, which is loaded into the same HDR histogram type the
//! other systems use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Deserialize;

use crate::driver::Plan;
use crate::process;
use crate::stats::{Latencies, Sample};
use crate::workload::Cell;

/// The two Go programs.
#[derive(Debug, Clone)]
pub(crate) struct GoPrograms {
    pub(crate) server: PathBuf,
    pub(crate) client: PathBuf,
}

impl GoPrograms {
    /// The programs in `dir`: `Ok(None)` when Go is not installed (the
    /// system is skipped), an error when Go is installed but they were not
    /// built.
    pub(crate) fn find(dir: &Path) -> anyhow::Result<Option<GoPrograms>> {
        let programs = GoPrograms { server: dir.join("go-echo-server"), client: dir.join("go-echo-client") };
        if programs.server.is_file() && programs.client.is_file() {
            return Ok(Some(programs));
        }
        if !go_installed() {
            return Ok(None);
        }
        bail!(
            "Go is installed but {} and {} are missing: build them with scripts/bench.sh (or pass --go-dir)",
            programs.server.display(),
            programs.client.display()
        )
    }

    pub(crate) fn server_command(&self) -> Command {
        let mut command = Command::new(&self.server);
        command.args(["-listen", "127.0.0.1:0"]);
        command
    }

    /// Run the Go client against `addr` and load its result.
    pub(crate) fn run_client(&self, addr: SocketAddr, cell: Cell, plan: Plan) -> anyhow::Result<Sample> {
        let mut command = Command::new(&self.client);
        command.args([
            format!("-addr={addr}"),
            format!("-payload={}", cell.payload),
            format!("-callers={}", cell.callers),
            format!("-warmup={}", go_duration(plan.warmup)),
            format!("-duration={}", go_duration(plan.duration)),
            format!("-grace={}", go_duration(plan.grace)),
        ]);
        // The client bounds itself at warm-up + duration + grace; this is the backstop.
        let limit = plan.warmup + plan.duration + plan.grace + Duration::from_secs(10);
        let output = process::run_client("go-echo-client", command, limit)?;
        let report: GoReport = serde_json::from_str(output.stdout.trim())
            .with_context(|| format!("go-echo-client ({}) printed no result; {}", output.status, output.stderr))?;
        if report.errors > 0 || !output.status.success() {
            bail!(
                "go-echo-client: {} failed call(s), first: {}",
                report.errors,
                report.first_error.as_deref().unwrap_or("(none reported)")
            );
        }
        let mut latencies = Latencies::new();
        for [nanos, count] in report.histogram_ns {
            latencies.record_n(nanos, count);
        }
        if latencies.count() != report.calls {
            bail!("go-echo-client reported {} calls but a histogram of {}", report.calls, latencies.count());
        }
        Ok(Sample { latencies })
    }
}

/// What `go-echo-client` prints.
#[derive(Deserialize)]
struct GoReport {
    calls: u64,
    errors: u64,
    first_error: Option<String>,
    histogram_ns: Vec<[u64; 2]>,
}

/// A duration in Go's `time.ParseDuration` syntax.
fn go_duration(d: Duration) -> String {
    format!("{}us", d.as_micros())
}

fn go_installed() -> bool {
    Command::new("go").arg("version").output().is_ok_and(|out| out.status.success())
}

/// `go version`'s answer, for the report.
pub(crate) fn go_version() -> Option<String> {
    let out = Command::new("go").arg("version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
