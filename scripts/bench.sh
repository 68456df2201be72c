#!/usr/bin/env bash
# The benchmark, from a fresh machine: builds the harness, the echo_server
# example and the Go peer in release mode, then runs the harness. Extra
# arguments go to `switchboard-bench run`, e.g.
#
#   scripts/bench.sh --quick                           # one cell, ~10 s: the CI check
#   scripts/bench.sh --markdown docs/BENCHMARKS.md     # the full run (~8 min) and the docs
#   scripts/bench.sh --systems switchboard,tonic --cells 16KiB/64
#
# Go is optional: without it the Go net/rpc peer is skipped with a note.
# Set BENCH_NO_INSTALL=1 to not install it (golang-go) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- prerequisites -----------------------------------------------------------
if ! command -v go >/dev/null 2>&1 && [ "${BENCH_NO_INSTALL:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bench.sh: installing golang-go (for the Go net/rpc peer)" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq golang-go >/dev/null; } ||
    echo "bench.sh: could not install golang-go; the Go peer will be skipped" >&2
fi

# --- build -------------------------------------------------------------------
echo "bench.sh: building (release)" >&2
cargo build --release --quiet -p switchboard-bench
cargo build --release --quiet -p switchboard-examples --example echo_server
bin=target/release
if command -v go >/dev/null 2>&1; then
  # Standard library only: no module downloads, whatever the environment says.
  (
    cd bench/go
    export GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local
    export GOCACHE="${GOCACHE:-$PWD/../../target/go-build-cache}"
    go build -o "../../$bin/go-echo-server" ./server
    go build -o "../../$bin/go-echo-client" ./client
  )
else
  echo "bench.sh: go not found; the Go net/rpc peer will be skipped" >&2
fi

# --- run ---------------------------------------------------------------------
export SWITCHBOARD_BENCH_COMMAND="scripts/bench.sh${*:+ $*}"
exec "$bin/switchboard-bench" run "$@"
