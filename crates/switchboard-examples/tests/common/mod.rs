//! What the process-level tests share: finding the built binaries, starting
//! `arith_server`, reading `arith_client`'s summary.

#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `target/<profile>`, where cargo put this test binary's crate outputs.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>").to_path_buf()
}

/// A binary of another crate of the workspace (`switchboard`), as
/// `cargo nextest run --workspace` / `cargo build --workspace` leaves it.
pub(crate) fn workspace_binary(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(path.exists(), "{} missing: build it with `cargo build --workspace`", path.display());
    path
}

/// The example binary `NAME`: `target/<profile>/examples/NAME` as
/// `cargo build --examples` leaves it (scripts/test.sh does), else the
/// newest `NAME-<hash>` that `cargo test --all-targets` built.
pub(crate) fn example(name: &str) -> std::path::PathBuf {
    let dir = profile_dir().join("examples");
    let plain = dir.join(name);
    if plain.exists() {
        return plain;
    }
    let prefix = format!("{name}-");
    let hashed = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let file = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            file.starts_with(&prefix) && p.extension().is_none()
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    hashed.unwrap_or_else(|| {
        panic!("{} missing: build it with `cargo build -p switchboard-examples --examples`", plain.display())
    })
}

/// Starts `arith_server --listen 127.0.0.1:0 --registry URL`; returns the
/// child and the address it printed.
pub(crate) async fn arith_server(registry: &str) -> (Child, String) {
    start_arith_server(&["--listen", "127.0.0.1:0", "--registry", registry]).await
}

/// Starts `arith_server` with `args`; returns the child and the address it
/// printed.
pub(crate) async fn start_arith_server(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(example("arith_server"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("arith_server starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("arith_server prints its address in time")
        .expect("readable stdout")
        .expect("a line");
    let addr = line.strip_prefix("listening on ").expect("'listening on ADDR'").to_owned();
    (child, addr)
}

/// `calls: N ok: N failed: N ...`: the numbers after `key:` in the
/// client's summary line.
pub(crate) fn field(line: &str, key: &str) -> u64 {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            if let Some(n) = words.next().and_then(|n| n.parse().ok()) {
                return n;
            }
        }
    }
    panic!("no {key} in {line:?}")
}
