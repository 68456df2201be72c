#!/usr/bin/env bash
# The main job: `switchboard demo` (the built-in registry, three Arith
# instances as child processes, a client calling them through discovery
# through a SIGKILL and a restart; exits 0 only if no call failed). Installs
# what the build needs if it is missing, then runs it. Arguments go to the
# demo (`--duration 30s`, `--rate 5000`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prereqs.sh
need_build_tools
exec cargo run --release --quiet -p switchboard-cli -- demo "$@"
