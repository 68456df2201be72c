//! Builds and runs the Go programs under `tests/go/` for the interop tests.
//! Include it with `#[path = "support/go.rs"] mod go;`.
//!
//! - [`go_program`] builds `tests/go/DIR` once per test process (nextest runs
//!   every test in its own process; Go's build cache, under the cargo target
//!   dir, makes the later builds cheap) and returns the executable.
//! - [`GoServer`] runs `netrpcpeer server` (tests/go/netrpc): a Go net/rpc
//!   server on a fresh loopback port, stopped when the value drops.
//! - [`go_client`] / [`check_case`] run one `netrpcpeer client` case against
//!   any server; [`NETRPC_CASES`] is what a real Go server answers to each.
//!
//! Needs `go` on PATH (Debian's `golang-go`, which scripts/test.sh installs):
//! without it the tests fail, they never skip. Go runs offline: standard
//! library only, `GOPROXY=off`, `GOTOOLCHAIN=local`. Every wait is bounded,
//! and no Go process outlives its test: a server also exits when its standard
//! input closes, which happens even if the test process is killed.

#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long `go build` may take (a cold build compiles net/http on 2 cores).
pub(crate) const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a Go server may take to print its address.
pub(crate) const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one Go client case may run before it is killed. The client's own
/// watchdog (`-timeout`, [`CLIENT_SELF_TIMEOUT`]) fires first, with a message.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The `-timeout` passed to `netrpcpeer client`.
pub(crate) const CLIENT_SELF_TIMEOUT: &str = "45s";

const GO_NOT_FOUND: &str = "go not found: scripts/test.sh installs Debian's golang-go";

/// The Go net/rpc peer (`tests/go/netrpc`), built.
pub(crate) fn netrpc_peer() -> PathBuf {
    go_program("netrpc")
}

/// The program in `tests/go/<dir_name>`, built once per test process into
/// `<CARGO_TARGET_TMPDIR>/go/bin/<module name>`. Panics (failing the test)
/// when `go` is missing or the build fails.
pub(crate) fn go_program(dir_name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let result = built.entry(dir_name.to_owned()).or_insert_with(|| build(dir_name, OsStr::new("go")));
    match result {
        Ok(exe) => exe.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Where the Go programs' sources live: `crates/switchboard/tests/go`,
/// found from whichever crate of the workspace includes this module.
pub(crate) fn go_source_dir(dir_name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../switchboard/tests/go").join(dir_name)
}

/// Builds `tests/go/<dir_name>` with the `go` command `go`.
pub(crate) fn build(dir_name: &str, go: &OsStr) -> Result<PathBuf, String> {
    let src = go_source_dir(dir_name);
    let go_mod = src.join("go.mod");
    let module = std::fs::read_to_string(&go_mod).map_err(|e| format!("{}: {e}", go_mod.display()))?;
    let name = module
        .lines()
        .find_map(|line| line.trim().strip_prefix("module "))
        .map(|m| m.trim().rsplit('/').next().unwrap_or(dir_name).to_owned())
        .ok_or_else(|| format!("{}: no module line", go_mod.display()))?;

    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
    let bin = tmp.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    // Build to a private name, then rename into place (atomic): test
    // processes build concurrently, and none may run a half-written binary.
    let exe = bin.join(&name);
    let private = bin.join(format!("{name}.{}", std::process::id()));
    let child = Command::new(go)
        .args(["build", "-o"])
        .arg(&private)
        .arg(".")
        .current_dir(&src)
        .env("GOCACHE", tmp.join("cache"))
        .env("GOPATH", tmp.join("path"))
        .env("GOMODCACHE", tmp.join("path/pkg/mod"))
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => GO_NOT_FOUND.to_owned(),
            _ => format!("cannot run `{}` ({e}); {GO_NOT_FOUND}", go.to_string_lossy()),
        })?;
    let out = wait_output(child, BUILD_TIMEOUT)
        .map_err(|out| format!("go build of {} took over {BUILD_TIMEOUT:?}:\n{}", src.display(), lossy(&out.stderr)))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&private);
        return Err(format!("go build of {} failed ({}):\n{}", src.display(), out.status, lossy(&out.stderr)));
    }
    std::fs::rename(&private, &exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    Ok(exe)
}

/// A Go net/rpc server (`netrpcpeer server`) on a fresh loopback port. It
/// is killed when this drops; closing its stdin also ends it.
pub(crate) struct GoServer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Where it listens, `127.0.0.1:PORT`.
    pub(crate) addr: String,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl GoServer {
    /// Starts `netrpcpeer server -proto <proto>` (`gob`, `jsonrpc` or `http`)
    /// and waits for its address.
    pub(crate) fn start(proto: &str) -> GoServer {
        let mut child = Command::new(netrpc_peer())
            .args(["server", "-proto", proto, "-listen", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the Go {proto} server: {e}"));
        let stdin = child.stdin.take();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut stderr_reader = None;
        if let Some(pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            stderr_reader = Some(thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&buf[..n]);
                }
            }));
        }
        let (lines_tx, lines) = mpsc::channel();
        if let Some(pipe) = child.stdout.take() {
            // Keeps draining stdout after the first line, so the server never
            // blocks on a full pipe.
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let _ = lines_tx.send(line);
                }
            });
        }
        let mut server = GoServer { child, stdin, addr: String::new(), stderr };
        match lines.recv_timeout(SERVER_START_TIMEOUT) {
            Ok(line) => match line.strip_prefix("listening on ") {
                Some(addr) => server.addr = addr.trim().to_owned(),
                None => panic!(
                    "the Go {proto} server printed {line:?}, not `listening on ADDR`; stderr:\n{}",
                    server.stderr()
                ),
            },
            Err(e) => {
                // Collect why it died: once the process has exited (killed if
                // it still runs), its stderr closes and the reader has read
                // all of it; join the reader rather than race it.
                if wait_timeout(&mut server.child, Duration::from_millis(500)).is_none() {
                    let _ = server.child.kill();
                }
                let _ = server.child.wait();
                if let Some(reader) = stderr_reader.take() {
                    let _ = reader.join();
                }
                panic!(
                    "the Go {proto} server did not print its address ({}); stderr:\n{}",
                    match e {
                        mpsc::RecvTimeoutError::Timeout => format!("nothing within {SERVER_START_TIMEOUT:?}"),
                        mpsc::RecvTimeoutError::Disconnected => "it exited".to_owned(),
                    },
                    server.stderr()
                )
            }
        }
        server
    }

    /// The address to dial.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// What the server wrote on stderr so far (net/rpc logs there).
    pub(crate) fn stderr(&self) -> String {
        lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Closes the server's stdin and waits (up to 10 s) for it to exit by
    /// itself; panics if it does not.
    pub(crate) fn shutdown(mut self) -> ExitStatus {
        drop(self.stdin.take());
        match wait_timeout(&mut self.child, Duration::from_secs(10)) {
            Some(status) => status,
            None => panic!("the Go server kept running 10 s after its stdin closed"),
        }
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `netrpcpeer client -proto <proto> -addr <addr> -case <case>` and
/// returns what it printed and how it exited. Panics if it runs over
/// [`CLIENT_TIMEOUT`] (it is killed first).
pub(crate) fn go_client(proto: &str, addr: &str, case: &str) -> Output {
    run_peer(
        &["client", "-proto", proto, "-addr", addr, "-case", case, "-timeout", CLIENT_SELF_TIMEOUT],
        CLIENT_TIMEOUT,
    )
}

/// Runs `netrpcpeer ARGS...` to its end; panics if it runs over `timeout`
/// (it is killed first).
pub(crate) fn run_peer(args: &[&str], timeout: Duration) -> Output {
    let child = Command::new(netrpc_peer())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn netrpcpeer {args:?}: {e}"));
    match wait_output(child, timeout) {
        Ok(out) => out,
        Err(out) => panic!(
            "netrpcpeer {args:?} ran over {timeout:?} and was killed; stdout:\n{}\nstderr:\n{}",
            lossy(&out.stdout),
            lossy(&out.stderr)
        ),
    }
}

/// [`go_client`], which must exit 0: its stdout, trimmed.
pub(crate) fn go_client_ok(proto: &str, addr: &str, case: &str) -> String {
    let out = go_client(proto, addr, case);
    assert!(
        out.status.success(),
        "the Go {proto} client, case {case} against {addr}, failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        lossy(&out.stdout),
        lossy(&out.stderr)
    );
    lossy(&out.stdout).trim_end_matches('\n').to_owned()
}

/// What a `netrpcpeer client` case prints when the server behaves as Go's
/// net/rpc server does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Expect {
    /// Exactly this line.
    Line(&'static str),
    /// A line starting with this (the rest varies from run to run).
    Prefix(&'static str),
}

/// Every `netrpcpeer client` case and what a real Go net/rpc server makes it
/// print, the same over gob, JSON-RPC and HTTP CONNECT. `garbage` is last:
/// the error after the close varies (`unexpected EOF`, `connection is shut
/// down`, a reset), so only its prefix is fixed.
pub(crate) const NETRPC_CASES: &[(&str, Expect)] = &[
    ("multiply", Expect::Line("56")),
    ("divide", Expect::Line("3 2")),
    ("apperror", Expect::Line("divide by zero")),
    ("unknown", Expect::Line("rpc: can't find method Arith.Nope")),
    ("unknownservice", Expect::Line("rpc: can't find service Nope.Nope")),
    ("illformed", Expect::Line("rpc: service/method request ill-formed: NoDot")),
    ("nested", Expect::Line("ok")),
    ("bytes", Expect::Line("ok 1048576")),
    ("text", Expect::Line(r#"ok "héllo wörld ✓ 日本 🚀 <tag> & \"quoted\" \\ tab\t newline\n nul\x00 end""#)),
    ("concurrent", Expect::Line("ok 1000")),
    ("garbage", Expect::Prefix("closed: ")),
];

/// Runs client case `case` against `addr` and asserts it printed what
/// [`NETRPC_CASES`] says a Go server makes it print. Returns the output.
pub(crate) fn check_case(proto: &str, addr: &str, case: &str) -> String {
    let expect = NETRPC_CASES
        .iter()
        .find(|(name, _)| *name == case)
        .map(|(_, expect)| *expect)
        .unwrap_or_else(|| panic!("no netrpcpeer client case {case:?}"));
    let printed = go_client_ok(proto, addr, case);
    let good = match expect {
        Expect::Line(line) => printed == line,
        Expect::Prefix(prefix) => printed.starts_with(prefix) && !printed.contains('\n'),
    };
    assert!(good, "the Go {proto} client, case {case} against {addr}, printed {printed:?}; expected {expect:?}");
    printed
}

/// Waits for `child` to exit, collecting its stdout and stderr, for at most
/// `timeout`; past it the child is killed and what it printed is the error.
fn wait_output(mut child: Child, timeout: Duration) -> Result<Output, Output> {
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let (status, timed_out) = match wait_timeout(&mut child, timeout) {
        Some(status) => (status, false),
        None => {
            let _ = child.kill();
            (child.wait().unwrap_or_else(|e| panic!("wait for a killed child: {e}")), true)
        }
    };
    // A grandchild may still hold a pipe open; don't wait on it forever.
    let collect = |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    let out = Output { status, stdout: collect(stdout), stderr: collect(stderr) };
    if timed_out {
        Err(out)
    } else {
        Ok(out)
    }
}

/// Reads `pipe` to its end on a thread; the bytes arrive on the channel.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(bytes);
    });
    rx
}

/// The child's exit status, if it exits within `timeout`.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("wait for a child process: {e}"),
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
