#!/usr/bin/env bash
# Tests a regression gate the way it is meant to be used: the gated experiment's replay (its
# committed fixture and baseline) is run N times at the recorded pace, N times slowed down by
# 10 % and N times by 5 % (INFERLAB_REPLAY_SLOWDOWN), with two busy loops occupying the cores
# beside it. It counts each gate's verdicts: at the recorded pace every failure is spurious; at
# 1.10 a failure is a detection; 1.05 sits on the gate's own 5 % threshold.
#
#   scripts/gate-test.sh                      # regression_gate::llamacpp, 50 runs each
#   scripts/gate-test.sh 10 regression_gate vllm
#
# Env: GATE_LOOPS (busy loops, default 2), GATE_SLOWDOWNS (default "1 1.10 1.05").
# Writes target/gate-test/<experiment>__<target>.json (counts per slowdown and gate) and prints
# a table.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-50}
experiment=${2:-regression_gate}
target=${3:-llamacpp}
loops=${GATE_LOOPS:-2}
slowdowns=${GATE_SLOWDOWNS:-1 1.10 1.05}
out=target/gate-test
results=$out/results
mkdir -p "$out"
rm -rf "$results"

cargo build --release --locked --quiet
bin=target/release/inferlab

pids=()
stop_loops() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_loops EXIT
trap 'stop_loops; exit 130' INT TERM
for _ in $(seq 1 "$loops"); do
  sh -c 'while :; do :; done' &
  pids+=($!)
done

start=$(date +%s)
for s in $slowdowns; do
  for i in $(seq 1 "$runs"); do
    INFERLAB_REPLAY_SLOWDOWN=$s INFERLAB_RESULTS_DIR="$results/$s" \
      "$bin" run "$experiment" --target "$target" >"$out/last.log" 2>&1 || true
  done
  echo "slowdown $s: $runs runs done ($(( $(date +%s) - start )) s so far)" >&2
done
stop_loops

python3 - "$results" "$experiment" "$target" "$runs" "$loops" "$out/${experiment}__${target}.json" <<'PY'
import json, pathlib, sys
results, experiment, target, runs, loops, dest = sys.argv[1:]
table = {}
for sdir in sorted(pathlib.Path(results).iterdir()):
    counts = {}
    for summary in sdir.glob(f"{experiment}/*/summary.json"):
        for a in json.loads(summary.read_text())["assertions"]:
            if "baseline." not in a["expr"] or a["outcome"] == "skipped":
                continue
            c = counts.setdefault(a["expr"], {"passed": 0, "failed": 0, "inconclusive": 0})
            c[a["outcome"]] += 1
    table[sdir.name] = counts
json.dump({"experiment": experiment, "target": target, "runs_per_slowdown": int(runs),
           "busy_loops": int(loops), "counts": table}, open(dest, "w"), indent=2)
print(f"{experiment}::{target}, {runs} replays per slow-down, {loops} busy loops beside them")
print(f"{'slowdown':>8}  {'gate':<52} {'failed':>6} {'inconcl.':>8} {'passed':>6}")
for s, counts in table.items():
    for expr, c in counts.items():
        print(f"{s:>8}  {expr:<52} {c['failed']:>6} {c['inconclusive']:>8} {c['passed']:>6}")
print(f"written: {dest}")
PY
