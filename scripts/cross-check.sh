#!/usr/bin/env bash
# Cross-checks inferlab against the engines' own benchmark clients (`vllm bench serve`'s module
# and `sglang.benchmark.serving`) on the same live server and workload, interleaved round by
# round, and measures what scraping /metrics every 500 ms, every 2 s or never does to the
# server's latency. Tables go to $OUT (default target/cross-check/); exits non-zero when a
# median differs by more than 30 % (which would mean a definition bug).
#
#   scripts/cross-check.sh                 # vllm and sglang, 3 rounds each
#   ROUNDS=4 scripts/cross-check.sh vllm
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/cross-check}
[ $# -gt 0 ] || set -- vllm sglang
cargo build --release --locked --quiet
for engine in "$@"; do
  case "$engine" in vllm | sglang) ;; *) echo "cross-check: vllm or sglang, not $engine" >&2; exit 2 ;; esac
  scripts/with-engine.sh "$engine" sh -c \
    '"$INFERLAB_ENGINE_PYTHON" "$0" "$1" "$2" "$3"' "$here/cross-check.py" "$engine" "$ROUNDS" "$OUT/$engine"
done
