#!/usr/bin/env bash
# The main job for now: start an Arith server on a free port, call it with the
# Arith client and the CLI, then stop the server gracefully.
# (Issue 5 replaces this with `switchboard demo`.)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p switchboard --example arith_server --example arith_client
cargo build --release --quiet -p switchboard-cli
bin=target/release
out=$(mktemp)
RUST_LOG=${RUST_LOG:-warn} "$bin/examples/arith_server" --listen 127.0.0.1:0 >"$out" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$out"' EXIT

for _ in $(seq 50); do # wait up to 5 s for "listening on ADDR"
  addr=$(sed -n 's/^listening on //p' "$out")
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "demo: the server did not start" >&2; exit 1; }

echo "arith_server is listening on $addr"
echo "\$ arith_client --addr $addr 7 8"
"$bin/examples/arith_client" --addr "$addr" 7 8
echo "\$ switchboard call --addr $addr Arith.Divide '{\"A\":7,\"B\":2}'"
"$bin/switchboard" call --addr "$addr" Arith.Divide '{"A":7,"B":2}'
echo "\$ switchboard call --addr $addr Arith.Divide '{\"A\":7,\"B\":0}'   # an application error"
"$bin/switchboard" call --addr "$addr" Arith.Divide '{"A":7,"B":0}' || true
kill -TERM "$server"
wait "$server"
trap 'rm -f "$out"' EXIT
echo "server stopped gracefully"
