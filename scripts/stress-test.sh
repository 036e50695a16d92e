#!/usr/bin/env bash
# Runs `cargo test` N times while two busy loops keep both cores of a small machine occupied,
# and prints `N passed, M failed`. The logs of failed runs are kept for reading.
#
#   scripts/stress-test.sh 10                   # the whole suite, ten times
#   scripts/stress-test.sh 5 --test it -- truth::   # extra arguments go to `cargo test`
#
# Env: STRESS_LOOPS (busy loops beside the tests, default 2), STRESS_LOGS (where failed runs'
# logs go, default target/stress-logs).
set -uo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 1 ] && [[ $1 =~ ^[0-9]+$ ]] || { echo "usage: $0 N [CARGO_TEST_ARGS...]" >&2; exit 2; }
runs=$1
shift
loops=${STRESS_LOOPS:-2}
logs=${STRESS_LOGS:-target/stress-logs}
mkdir -p "$logs"

# Build first, quietly, so the runs measure the tests and not the compiler.
cargo test --no-run --quiet "$@" >/dev/null 2>&1 || { echo "build failed: cargo test --no-run $*" >&2; exit 2; }

pids=()
stop_loops() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  pids=()
}
trap stop_loops EXIT
trap 'stop_loops; exit 130' INT TERM
for _ in $(seq 1 "$loops"); do
  sh -c 'while :; do :; done' &
  pids+=($!)
done

passed=0
failed=0
for i in $(seq 1 "$runs"); do
  log=$logs/run-$i.log
  start=$(date +%s)
  if cargo test --quiet "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "run $i: passed ($(( $(date +%s) - start )) s)"
    rm -f "$log"
  else
    failed=$((failed + 1))
    echo "run $i: FAILED ($(( $(date +%s) - start )) s), log: $log"
    grep -E "^(test .* FAILED|---- .* ----|thread '.*' panicked)" "$log" | head -n 10 | sed 's/^/    /'
  fi
done
stop_loops
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
