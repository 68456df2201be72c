//! Generates the tonic (gRPC) peer's code from `proto/echo.proto`, and records
//! the peers' versions for the report.
//!
//! The .proto is parsed by protox, a protobuf compiler written in Rust, and
//! its descriptors are handed to tonic-prost-build: no `protoc` binary is
//! needed, so `cargo build` (and CI) works on a machine with only a Rust
//! toolchain.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/echo.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // `bytes::Bytes` payloads: cloning a request per call is a pointer
        // copy, as a tonic user who cares about throughput would set it up.
        .bytes(".")
        .compile_fds(descriptors)?;

    // The peers' exact versions, from the workspace lock file.
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let lock = std::fs::read_to_string(&lock).unwrap_or_default();
    let versions: Vec<String> = ["tonic", "prost", "tarpc", "tokio"]
        .iter()
        .map(|name| format!("{name} {}", locked_version(&lock, name)))
        .collect();
    println!("cargo:rustc-env=BENCH_PEER_VERSIONS={}", versions.join(", "));

    // The compiler this was built with.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map_or_else(|| "rustc (unknown version)".to_owned(), |v| v.trim().to_owned());
    println!("cargo:rustc-env=BENCH_RUSTC_VERSION={version}");
    Ok(())
}

/// The version of package `name` in a Cargo.lock: the newest if it is there
/// more than once (the lock file lists them oldest first), "?" if absent.
fn locked_version(lock: &str, name: &str) -> String {
    let header = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    let mut found = None;
    while let Some(line) = lines.next() {
        if line.trim() == header {
            if let Some(version) = lines.next().and_then(|l| l.trim().strip_prefix("version = ")) {
                found = Some(version.trim_matches('"').to_owned());
            }
        }
    }
    found.unwrap_or_else(|| "?".to_owned())
}
