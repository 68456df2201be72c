#!/usr/bin/env bash
# Coverage-guided fuzzing of Switchboard's parsers (fuzz/, docs/FUZZING.md).
#
#   scripts/fuzz.sh [--minutes N] [TARGET...]   fuzz each target N minutes
#                                               (default 1), one after another
#   scripts/fuzz.sh --replay [TARGET...]        run every committed corpus and
#                                               regression input once (CI)
#   scripts/fuzz.sh --merge [TARGET...]         add to fuzz/corpus/TARGET what
#                                               earlier runs found that adds
#                                               coverage (libFuzzer -merge=1)
#   scripts/fuzz.sh --list                      the targets
#
# Works on stable Rust: cargo fuzz needs nightly-only -Z flags
# (-Zsanitizer=address), which RUSTC_BOOTSTRAP=1 unlocks on a stable
# compiler. Installs cargo-fuzz (crates.io) and a C++ compiler (for
# libFuzzer) when missing. Everything runs under `nice`, one fuzzer process
# at a time. Exits non-zero if any target crashed, leaked, ran out of memory
# (-rss_limit_mb) or hung (-timeout); the input is in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

minutes=1
mode=fuzz
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --minutes=*) minutes="${1#*=}"; shift ;;
    --replay) mode=replay; shift ;;
    --merge) mode=merge; shift ;;
    --list) mode=list; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

all_targets=$(cd fuzz/fuzz_targets && ls ./*.rs | sed 's|^\./||; s|\.rs$||')
if [ "$mode" = list ]; then
  echo "$all_targets"
  exit 0
fi
[ ${#targets[@]} -eq 0 ] && mapfile -t targets <<<"$all_targets"
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$all_targets" || { echo "fuzz.sh: no target $t (try --list)" >&2; exit 2; }
done

# --- prerequisites -----------------------------------------------------------
. scripts/prereqs.sh
need_deb c++ g++ # libfuzzer-sys compiles libFuzzer's C++ sources
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi

# --- build -------------------------------------------------------------------
# cargo fuzz's defaults: release with debug assertions and overflow checks,
# AddressSanitizer, SanitizerCoverage (inline 8-bit counters, PC table,
# compare tracing), --cfg fuzzing. RUSTC_BOOTSTRAP=1 lets stable rustc take
# the -Z flags among them.
export RUSTC_BOOTSTRAP=1
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="$ROOT/fuzz/target/$triple/release"
echo "== building the fuzz targets (cargo fuzz build)"
build_start=$SECONDS
one=()
[ ${#targets[@]} -eq 1 ] && one=("${targets[0]}") # cargo fuzz builds one target or all
(cd fuzz && nice -n 10 cargo fuzz build --target "$triple" "${one[@]}")
for t in "${targets[@]}"; do
  [ -x "$bin_dir/$t" ] || { echo "fuzz.sh: the build did not produce $bin_dir/$t" >&2; exit 1; }
done
echo "   built in $((SECONDS - build_start)) s"

# libFuzzer's options common to every run.
common=(-rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
failed=()

files_of() { # the committed inputs of target $1
  find "fuzz/corpus/$1" "fuzz/regressions/$1" -type f 2>/dev/null | sort
}

case "$mode" in
replay)
  start=$SECONDS
  for t in "${targets[@]}"; do
    mapfile -t inputs < <(files_of "$t")
    if [ ${#inputs[@]} -eq 0 ]; then
      echo "$t: no committed inputs"
      continue
    fi
    t0=$SECONDS
    log="fuzz/artifacts/$t/replay.log"
    mkdir -p "fuzz/artifacts/$t"
    # Files (not folders) as arguments: libFuzzer runs each once and exits.
    if nice -n 10 "$bin_dir/$t" "${common[@]}" -artifact_prefix="fuzz/artifacts/$t/" "${inputs[@]}" >"$log" 2>&1; then
      echo "$t: ${#inputs[@]} inputs ok ($((SECONDS - t0)) s)"
    else
      echo "$t: FAILED on a committed input; see $log"
      grep -m1 -E 'panicked at|ERROR: |SUMMARY' "$log" || true
      failed+=("$t")
    fi
  done
  echo "replay: ${#targets[@]} targets in $((SECONDS - start)) s"
  ;;
merge)
  for t in "${targets[@]}"; do
    [ -d "fuzz/corpus-work/$t" ] || { echo "$t: nothing to merge (no fuzz/corpus-work/$t)"; continue; }
    mkdir -p "fuzz/corpus/$t"
    before=$(find "fuzz/corpus/$t" -type f | wc -l)
    nice -n 10 "$bin_dir/$t" "${common[@]}" -merge=1 "fuzz/corpus/$t" "fuzz/corpus-work/$t" >"fuzz/artifacts/$t-merge.log" 2>&1 \
      || { echo "$t: merge failed; see fuzz/artifacts/$t-merge.log"; failed+=("$t"); continue; }
    after=$(find "fuzz/corpus/$t" -type f | wc -l)
    echo "$t: corpus $before -> $after files, $(du -sk "fuzz/corpus/$t" | cut -f1) KiB"
  done
  ;;
fuzz)
  seconds=$(awk -v m="$minutes" 'BEGIN { s = int(m * 60); print (s < 1 ? 1 : s) }')
  summary="fuzz/artifacts/summary.tsv"
  mkdir -p fuzz/artifacts
  printf 'target\tseconds\texecs\texecs_per_s\tcov\tft\tcorpus\tpeak_rss_mb\tartifacts\tresult\n' >"$summary"
  for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus-work/$t" "fuzz/artifacts/$t" "fuzz/corpus/$t"
    log="fuzz/artifacts/$t/fuzz.log"
    echo "== $t: fuzzing for $seconds s (log: $log)"
    # New inputs go to fuzz/corpus-work/T (not committed); the committed
    # seeds and regressions are read as well.
    dirs=("fuzz/corpus-work/$t" "fuzz/corpus/$t")
    [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
    status=ok
    marker=$(mktemp)
    nice -n 10 "$bin_dir/$t" "${common[@]}" -max_total_time="$seconds" -artifact_prefix="fuzz/artifacts/$t/" \
      "${dirs[@]}" >"$log" 2>&1 || status=FAILED
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    # libFuzzer's in-memory corpus at the end ("corp: UNITS/SIZE").
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
    crashes=$(find "fuzz/artifacts/$t" -type f -newer "$marker" \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    rm -f "$marker"
    result=$status
    [ "$status" = FAILED ] && result="FAILED ($(grep -m1 -oE 'panicked at [^ ]+|ERROR: libFuzzer: [a-z-]+|ERROR: AddressSanitizer: [a-z-]+' "$log" || echo 'see log'))"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$seconds" "$(stat number_of_executed_units)" \
      "$(stat average_exec_per_sec)" "$cov" "$ft" "$corp" "$(stat peak_rss_mb)" "$crashes" "$result" >>"$summary"
    echo "$t: execs $(stat number_of_executed_units) ($(stat average_exec_per_sec)/s), cov $cov, ft $ft, corpus $corp, peak RSS $(stat peak_rss_mb) MB, artifacts $crashes: $result"
    [ "$status" = ok ] || failed+=("$t")
  done
  echo "summary: $summary"
  column -t -s $'\t' "$summary" || cat "$summary"
  ;;
esac

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]}" >&2
  exit 1
fi
