#!/usr/bin/env bash
# Runs a command with a real llama.cpp llama-server on 127.0.0.1, serving the generated tiny
# model, and INFERLAB_LLAMACPP_URL pointing at it. Builds (or reuses) the server and the model
# first; stops the server when the command ends, however it ends.
#
#   scripts/with-llama-server.sh cargo run --release -- run              # live experiments
#   INFERLAB_RECORD=1 scripts/with-llama-server.sh cargo run --release -- run   # re-record fixtures
#   scripts/with-llama-server.sh cargo test --test experiments          # live trials
#
# Env: INFERLAB_CACHE (default ~/.cache/inferlab), LLAMA_THREADS (default 1), LLAMA_SLOTS (4).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log() { printf 'with-llama-server: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/serve-lib.sh
. "$here/serve-lib.sh"

[ $# -gt 0 ] || die "usage: $0 COMMAND [ARGS...]"
CACHE=${INFERLAB_CACHE:-$HOME/.cache/inferlab}
THREADS=${LLAMA_THREADS:-1}
SLOTS=${LLAMA_SLOTS:-4}
MODEL_SEED=20261128

BIN=$("$here/llama-server-build.sh" | tail -n 1)
[ -x "$BIN" ] || die "llama-server build did not produce a binary"
VOCAB=$(dirname "$BIN")/ggml-vocab-llama-spm.gguf

python3 -c "import gguf, numpy" 2>/dev/null || {
  log "installing the Python packages gguf and numpy"
  python3 -m pip install --quiet gguf numpy || die "pip install gguf numpy failed"
}
# The model is keyed by the generator's content and seed: a changed generator makes a new one.
GEN_KEY=$( (cat "$here/make-tiny-model.py"; echo "$MODEL_SEED") | sha256sum | cut -c1-12)
MODEL=$CACHE/models/tiny-llama-$GEN_KEY.gguf
if [ ! -f "$MODEL" ]; then
  mkdir -p "$CACHE/models"
  python3 "$here/make-tiny-model.py" "$VOCAB" "$MODEL.tmp" --seed "$MODEL_SEED" \
    || die "model generation failed"
  mv "$MODEL.tmp" "$MODEL"
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$CACHE/logs"
LOG=$CACHE/logs/llama-server-$PORT.log
"$BIN" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -np "$SLOTS" -c 16384 -t "$THREADS" \
  --alias tiny-llama --metrics --no-webui >"$LOG" 2>&1 &
PID=$!
cleanup() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

URL=http://127.0.0.1:$PORT
wait_healthy llama-server "$PID" "$LOG" "$URL" 60
warm_up llama-server "$LOG" "$URL" '{"prompt": "the of and", "max_tokens": 4, "ignore_eos": true}'
log "llama-server $(basename "$(dirname "$BIN")") on $URL (pid $PID, log $LOG)"

export INFERLAB_LLAMACPP_URL=$URL
export INFERLAB_LLAMACPP_MODEL_DETAILS="{\"architecture\":\"llama\",\"layers\":4,\"hidden\":512,\"heads\":8,\"ffn\":1536,\"parameters_m\":46.4,\"dtype\":\"F16\",\"weights\":\"random, seed $MODEL_SEED, non-text tokens suppressed so every request runs to max_tokens\",\"tokenizer\":\"Llama-2 SentencePiece (32000) from llama.cpp models/ggml-vocab-llama-spm.gguf\",\"generator\":\"scripts/make-tiny-model.py\",\"server_flags\":\"-np $SLOTS -c 16384 -t $THREADS --alias tiny-llama --metrics\",\"hardware\":\"CPU\"}"
status=0
run_beside llama-server "$PID" "$LOG" "$@" || status=$?
exit "$status"
