#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need if
# it is missing, then runs formatting and lint checks, every test, and the
# doctests. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- prerequisites -----------------------------------------------------------
. scripts/prereqs.sh
need_build_tools            # protoc, for the etcd client
need_deb python3 python3
need_deb go golang-go       # the Go net/rpc peer of the benchmark harness (bench/go)
need_deb etcd etcd-server   # the etcd registry tests run real etcd members
need_deb etcdctl etcd-client

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi

# --- checks and tests --------------------------------------------------------
echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== unit, integration and example tests (nextest)"
# The process-level tests run the example binaries (target/debug/examples/NAME).
cargo build --workspace --examples --locked --quiet
cargo nextest run --workspace --all-targets --locked --no-fail-fast

echo "== doctests"
cargo test --workspace --doc --locked

# Every committed fuzz input (seed corpora and the inputs that once failed,
# fuzz/regressions) through its target once, with AddressSanitizer: a
# parser change that breaks on one fails here (docs/FUZZING.md).
echo "== fuzz corpus replay"
scripts/fuzz.sh --replay

# Benchmarks are not timed tests: this only checks that the harness still
# builds and measures every system (it fails on an error, never on a number).
echo "== benchmark harness smoke run"
scripts/bench.sh --quick
