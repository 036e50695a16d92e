#!/usr/bin/env bash
# What watching a run costs the client's timing: `inferlab calibrate` (the client against the
# built-in truth server) in three setups, interleaved ROUNDS times so drift hits all alike:
#   plain     nothing watches
#   progress  --progress: the line redrawn in a real terminal (a tmux pane), ten times a second
#   exporter  --prometheus with a scraper reading /metrics ten times a second over one
#             kept-alive connection, as Prometheus does (it scrapes every few seconds: this is
#             harsher). A scraper spawning a process per scrape (curl in a loop) costs the
#             client more than the exporter does: on 2 cores the spawns take CPU from it.
# and prints, per concurrency, the median over rounds of the TTFT error's median and p99 and
# the ITL error's p99 — next to the round-to-round spread of the plain setup (the noise).
#
#   scripts/watch-cost.sh [ROUNDS=3] [CONCURRENCY=1,64,256]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
ROUNDS=${1:-3}
LEVELS=${2:-1,64,256}
OUT=target/watch-cost
rm -rf "$OUT"
mkdir -p "$OUT"
cargo build --release --locked --quiet
BIN=$PWD/target/release/inferlab
command -v tmux >/dev/null || { echo "watch-cost: tmux is needed" >&2; exit 1; }
ARGS=(calibrate --no-ceiling --concurrency "$LEVELS")
SOCK=inferlab-watch-cost-$$
trap 'tmux -L "$SOCK" kill-server 2>/dev/null || true' EXIT

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  "$BIN" "${ARGS[@]}" --results "$OUT/plain-$r" >/dev/null 2>&1

  tmux -L "$SOCK" new-session -d -s cost -x 160 -y 10 \
    "'$BIN' ${ARGS[*]} --progress --results '$OUT/progress-$r' >/dev/null; tmux -L '$SOCK' wait-for -S done-$r"
  tmux -L "$SOCK" wait-for "done-$r"

  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$BIN" "${ARGS[@]}" --prometheus "127.0.0.1:$port" --results "$OUT/exporter-$r" >/dev/null 2>&1 &
  run=$!
  python3 - "$port" "$run" <<'PY' &
import http.client, os, sys, time
port, run = int(sys.argv[1]), int(sys.argv[2])
scrapes, conn = 0, None
while True:
    try:
        os.kill(run, 0)
    except OSError:
        break
    try:
        conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        resp.read()
        scrapes += resp.status == 200
    except (OSError, http.client.HTTPException):
        conn = None
    time.sleep(0.1)
print(f"  exporter: {scrapes} scrapes", file=sys.stderr)
PY
  scraper=$!
  wait "$run"
  wait "$scraper"
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def levels(setup, r):
    return {l["concurrency"]: l for l in json.load(open(f"{out}/{setup}-{r}/calibration.json"))["levels"]}
setups = ["plain", "progress", "exporter"]
data = {s: [levels(s, r) for r in range(1, rounds + 1)] for s in setups}
cs = sorted(data["plain"][0])
def cell(xs):
    return f"{statistics.median(xs):.3f} [{min(xs):.3f}, {max(xs):.3f}]"
keys = [("ttft_error_median_ms", "TTFT err p50"), ("ttft_error_p99_ms", "TTFT err p99"), ("itl_error_p99_ms", "ITL err p99")]
print(f"median [min, max] over {rounds} rounds, ms")
print(f"{'C':>4} {'setup':<9} " + " ".join(f"{label:>26}" for _, label in keys))
for c in cs:
    for s in setups:
        print(f"{c:>4} {s:<9} " + " ".join(f"{cell([d[c][k] for d in data[s]]):>26}" for k, _ in keys))
PY
