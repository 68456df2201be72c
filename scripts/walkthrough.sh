#!/usr/bin/env bash
# The longer walkthrough, with every part a separate program as users run
# them: `switchboard registry`, three `arith_server` processes that register
# with it, and callers that find them by name. Shows the list, 300 calls
# spread over the three, a call from the command line, and `arith_client
# --rate` riding through a SIGKILL. The main job in one command is
# `scripts/demo.sh` (README, "Two commands").
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prereqs.sh
need_build_tools

cargo build --release --quiet -p switchboard-examples --example arith_server --example arith_client
cargo build --release --quiet -p switchboard-cli
bin=${CARGO_TARGET_DIR:-target}/release
tmp=$(mktemp -d)
pids=()
cleanup() {
  # Servers first (they deregister on the way out), the registry last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    while kill -0 "${pids[i]}" 2>/dev/null; do sleep 0.05; done
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# wait_for FILE SED-EXPR: print what the expression extracts once it appears (5 s at most).
wait_for() {
  for _ in $(seq 50); do
    value=$(sed -n "$2" "$1")
    [ -n "$value" ] && { echo "$value"; return 0; }
    sleep 0.1
  done
  echo "demo: nothing matching $2 in $1" >&2
  return 1
}

RUST_LOG=${RUST_LOG:-warn} "$bin/switchboard" registry --listen 127.0.0.1:0 >"$tmp/registry.out" &
pids+=($!)
registry=$(wait_for "$tmp/registry.out" 's/^registry listening on //p')
echo "registry at $registry"

for i in 1 2 3; do
  RUST_LOG=${RUST_LOG:-warn} "$bin/examples/arith_server" --listen 127.0.0.1:0 --registry "$registry" >"$tmp/s$i.out" &
  pids+=($!)
  disown # no "Killed" notice from the shell when one is killed below
  echo "arith_server $i listening on $(wait_for "$tmp/s$i.out" 's/^listening on //p')"
done
for _ in $(seq 50); do # registration is asynchronous: wait for all three
  [ "$("$bin/switchboard" list --registry "$registry" | grep -c passing)" = 3 ] && break
  sleep 0.1
done

echo; echo "\$ switchboard list --registry $registry"
"$bin/switchboard" list --registry "$registry"
echo; echo "\$ arith_client --registry $registry"
"$bin/examples/arith_client" --registry "$registry"
echo; echo "\$ arith_client --registry $registry --calls 300"
"$bin/examples/arith_client" --registry "$registry" --calls 300
echo; echo "\$ switchboard call --registry $registry Arith.Divide '{\"A\":7,\"B\":2}'"
"$bin/switchboard" call --registry "$registry" Arith.Divide '{"A":7,"B":2}'

echo; echo "\$ arith_client --registry $registry --rate 2000 --duration 5s   # server 2 gets SIGKILL after 2 s"
victim=${pids[2]}
(sleep 2 && kill -KILL "$victim") &
"$bin/examples/arith_client" --registry "$registry" --rate 2000 --duration 5s
echo; echo "the registry evicts it once its TTL (6 s) passes without a heartbeat:"
sleep 7
"$bin/switchboard" list --registry "$registry"
