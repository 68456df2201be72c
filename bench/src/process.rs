//! Child processes: the servers under test and the Go client.
//!
//! Every child is held by a [`ChildGuard`], which kills and reaps it when
//! dropped, so no path out of the harness (an error, a panic unwinding, a
//! finished cell) leaves a server running. If the harness is interrupted
//! (SIGINT, SIGTERM), [`kill_children_on_signal`] kills the children still
//! alive before it exits. Servers the harness builds itself
//! (`switchboard-bench serve`, the Go server) also exit when their standard
//! input closes, which covers even SIGKILL.
//!
//! Every wait here is bounded: a child that does not start, answer or exit
//! in time is an error naming it, with the last lines it wrote to stderr.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

/// How long a server may take to print `listening on ADDR`.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of a child's stderr kept for error messages.
const TAIL_LINES: usize = 20;

/// The ids of the children alive now: spawned and not yet reaped, so an id
/// here cannot have been reused by another process.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A child process, killed and reaped on drop.
struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    fn spawn(name: &str, command: &mut Command) -> anyhow::Result<ChildGuard> {
        let child = command.spawn().with_context(|| format!("cannot start {name} ({command:?})"))?;
        if let Ok(mut children) = CHILDREN.lock() {
            children.push(child.id());
        }
        Ok(ChildGuard { child, name: name.to_owned() })
    }

    fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child.try_wait().with_context(|| format!("cannot check on {}", self.name))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(mut children) = CHILDREN.lock() {
            children.retain(|&id| id != self.child.id());
        }
        // Errors mean it has exited already; `wait` reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// On SIGINT or SIGTERM, kill every child still alive and exit (status 130
/// or 143), instead of leaving servers behind.
pub(crate) fn kill_children_on_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let (mut interrupt, mut terminate) =
        runtime.block_on(async { anyhow::Ok((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)) })?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let status = runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => 130,
                _ = terminate.recv() => 143,
            }
        });
        // Held until the process exits: no child is spawned or reaped meanwhile.
        let children = CHILDREN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for id in children.iter() {
            let _ = Command::new("kill").args(["-KILL", &id.to_string()]).status();
        }
        eprintln!("switchboard-bench: interrupted; killed {} child process(es)", children.len());
        std::process::exit(status);
    })?;
    Ok(())
}

/// The last lines a child wrote to one of its pipes, collected by a thread.
#[derive(Clone, Default)]
struct Tail {
    lines: Arc<Mutex<VecDeque<String>>>,
    /// Set when the pipe reached its end.
    closed: Arc<AtomicBool>,
}

impl Tail {
    /// Collect `pipe` line by line on a thread; `on_line` sees each line too.
    fn collect(pipe: impl Read + Send + 'static, mut on_line: impl FnMut(&str) + Send + 'static) -> Tail {
        let tail = Tail::default();
        let (lines, closed) = (Arc::clone(&tail.lines), Arc::clone(&tail.closed));
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                on_line(&line);
                if let Ok(mut lines) = lines.lock() {
                    if lines.len() == TAIL_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                }
            }
            closed.store(true, Ordering::Release);
        });
        tail
    }

    /// The collected lines, for an error message. Waits briefly
    /// for the pipe to close, so the lines of a child that just exited are
    /// all there.
    fn render(&self) -> String {
        let until = Instant::now() + Duration::from_millis(200);
        while !self.closed.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let lines = self.lines.lock().map(|l| l.iter().cloned().collect::<Vec<_>>()).unwrap_or_default();
        if lines.is_empty() {
            "nothing on stderr".to_owned()
        } else {
            format!("last stderr lines:\n    {}", lines.join("\n    "))
        }
    }
}

/// A server under test, running as a child process.
pub(crate) struct ServerProcess {
    child: ChildGuard,
    addr: SocketAddr,
    stderr: Tail,
    /// Held open while the server runs: servers that watch stdin exit when
    /// it closes.
    _stdin: Option<ChildStdin>,
}

impl ServerProcess {
    /// Start `command` (which must print `listening on ADDR` on stdout) and
    /// wait for the address.
    pub(crate) fn start(name: &str, mut command: Command) -> anyhow::Result<ServerProcess> {
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(name, &mut command)?;
        let stdin = child.child.stdin.take();
        let stdout = child.child.stdout.take().context("no stdout pipe")?;
        let stderr = Tail::collect(child.child.stderr.take().context("no stderr pipe")?, |_| {});
        let (found, listening) = mpsc::channel();
        let mut found = Some(found);
        // Keeps draining stdout after the address so the server never blocks on it.
        Tail::collect(stdout, move |line| {
            if let Some(addr) = line.strip_prefix("listening on ") {
                if let Some(found) = found.take() {
                    let _ = found.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match listening.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("{name} did not print \"listening on ADDR\" within {START_TIMEOUT:?}; {}", stderr.render())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: the server is exiting. Give it a moment to be reaped.
                let status = wait_exit(&mut child, Duration::from_secs(2));
                bail!("{name} exited before it was listening ({status}); {}", stderr.render())
            }
        };
        let addr = addr.parse().map_err(|e| anyhow!("{name} printed a bad address {addr:?}: {e}"))?;
        Ok(ServerProcess { child, addr, stderr, _stdin: stdin })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// After a run: check that the server is still up, and return its peak
    /// resident set size in bytes (VmHWM). The server is stopped when `self`
    /// is dropped.
    pub(crate) fn peak_rss(&mut self) -> anyhow::Result<u64> {
        if let Some(status) = self.child.exited()? {
            bail!("{} exited during the run ({status}); {}", self.child.name, self.stderr.render());
        }
        let path = format!("/proc/{}/status", self.child.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        parse_vm_hwm(&status).with_context(|| format!("no VmHWM line in {path}"))
    }

    /// The end of the server's stderr, for an error message about a run.
    pub(crate) fn stderr_tail(&self) -> String {
        self.stderr.render()
    }
}

/// `VmHWM:   12345 kB` → bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// Wait up to `limit` for `child` to exit; describes how it ended.
fn wait_exit(child: &mut ChildGuard, limit: Duration) -> String {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        match child.exited() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return e.to_string(),
        }
    }
    "still running".to_owned()
}

/// Run a client program to completion within `limit` and return its stdout.
/// It fails if the program cannot start or does not finish in time; a
/// non-zero exit is returned with the output, for the caller to interpret.
pub(crate) fn run_client(name: &str, mut command: Command, limit: Duration) -> anyhow::Result<ClientOutput> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(name, &mut command)?;
    let mut stdout = child.child.stdout.take().context("no stdout pipe")?;
    let stderr = Tail::collect(child.child.stderr.take().context("no stderr pipe")?, |_| {});
    let (done, output) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = done.send(stdout.read_to_string(&mut text).map(|_| text));
    });
    let until = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.exited()? {
            break status;
        }
        if Instant::now() >= until {
            bail!("{name} did not finish within {limit:?}; {}", stderr.render());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = match output.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => bail!("cannot read {name}'s output: {e}"),
        Err(_) => bail!("{name} exited but its output did not close; {}", stderr.render()),
    };
    Ok(ClientOutput { status, stdout, stderr: stderr.render() })
}

/// What a client program left behind.
pub(crate) struct ClientOutput {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    /// Its last stderr lines, rendered for an error message.
    pub(crate) stderr: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm() {
        let status = "Name:\techo\nVmPeak:\t  20000 kB\nVmHWM:\t    9876 kB\nVmRSS:\t 9000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(9876 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB"), None);
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn server_address_and_rss_and_kill_on_drop() {
        let mut server =
            ServerProcess::start("sleeper", sh("echo 'listening on 127.0.0.1:4567'; exec sleep 30")).expect("starts");
        assert_eq!(server.addr().to_string(), "127.0.0.1:4567");
        assert!(server.peak_rss().expect("alive") > 0);
        let pid = server.child.child.id();
        drop(server);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "child {pid} survived its guard");
    }

    #[test]
    fn server_that_dies_early_is_a_clear_error() {
        let err = ServerProcess::start("dier", sh("echo boom >&2; exit 3")).err().expect("fails");
        let text = format!("{err:#}");
        assert!(text.contains("dier exited before it was listening") && text.contains("boom"), "{text}");
    }

    #[test]
    fn client_output_and_time_limit() {
        let out = run_client("hello", sh("echo hi; exit 4"), Duration::from_secs(5)).expect("runs");
        assert_eq!(out.stdout.trim(), "hi");
        assert_eq!(out.status.code(), Some(4));
        let started = Instant::now();
        let err = run_client("slow", sh("exec sleep 30"), Duration::from_millis(200)).err().expect("times out");
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
