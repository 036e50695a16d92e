#!/usr/bin/env bash
# Runs a command next to a real engine on 127.0.0.1 serving a tiny generated model, with
# INFERLAB_<ENGINE>_URL (and _MODEL_DETAILS) set; stops the engine when the command ends,
# however it ends, and fails naming the engine's log if the engine died.
#
#   scripts/with-engine.sh vllm cargo test --test experiments            # live trials on vLLM
#   scripts/with-engine.sh sglang cargo run --release -- run prefix_cache
#   INFERLAB_RECORD=1 scripts/with-engine.sh vllm cargo run --release -- run --target vllm
#   scripts/with-engine.sh llamacpp …                                   # = with-llama-server.sh
#   scripts/with-engine.sh vllm_small_kv cargo test --test experiments -- ::vllm_small_kv
#
# `vllm_small_kv` and `sglang_small_kv` start the same engines with a KV cache of 1024 tokens
# (for kv_pressure) and set INFERLAB_VLLM_SMALL_KV_URL / INFERLAB_SGLANG_SMALL_KV_URL.
#
# vLLM 0.32.0 and SGLang 0.5.21 run on the CPU from the venv of scripts/engines-venv.sh; the
# model (scripts/make-tiny-hf-model.py) and every cache stay under $INFERLAB_CACHE
# (default ~/.cache/inferlab). One engine at a time: each takes ~3.3 GB and most of a 2-core box.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log() { printf 'with-engine: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/serve-lib.sh
. "$here/serve-lib.sh"

[ $# -gt 1 ] || die "usage: $0 vllm|sglang|llamacpp|vllm_small_kv|sglang_small_kv COMMAND [ARGS...]"
TARGET=$1
shift
case "$TARGET" in
  llamacpp) exec "$here/with-llama-server.sh" "$@" ;;
  vllm | sglang) ENGINE=$TARGET KV_TOKENS= ;;
  vllm_small_kv | sglang_small_kv) ENGINE=${TARGET%_small_kv} KV_TOKENS=1024 ;;
  *) die "unknown engine \`$TARGET\` (vllm, sglang, llamacpp, vllm_small_kv or sglang_small_kv)" ;;
esac

CACHE=${INFERLAB_CACHE:-$HOME/.cache/inferlab}
VENV=$("$here/engines-venv.sh")
PY=$VENV/bin/python
WORK=$CACHE/engine-work
mkdir -p "$WORK/tmp" "$WORK/hf" "$CACHE/logs" "$CACHE/models"
# Nothing reaches a model hub, and every cache and temp dir is the work dir's.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export XDG_CACHE_HOME=$WORK TMPDIR=$WORK/tmp HF_HOME=$WORK/hf
export VLLM_CACHE_ROOT=$WORK/vllm TORCHINDUCTOR_CACHE_DIR=$WORK/inductor
unset SGLANG_USE_CPU_ENGINE

MODEL_SEED=20261201
GEN_KEY=$( (cat "$here/make-tiny-hf-model.py" "$here/../src/workload/words.rs"; echo "$MODEL_SEED") | sha256sum | cut -c1-12)
MODEL=$CACHE/models/tiny-llama-hf-$GEN_KEY
if [ ! -f "$MODEL/.complete" ]; then
  rm -rf "$MODEL"
  "$PY" "$here/make-tiny-hf-model.py" "$MODEL" --seed "$MODEL_SEED" || die "model generation failed"
  touch "$MODEL/.complete"
fi
NAME=tiny-llama

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LOG=$CACHE/logs/$TARGET-$PORT.log
case "$ENGINE" in
  vllm)
    # float32 KV of this model: 4 layers × 2 KV heads × 64 × 2 × 4 bytes = 4 KiB a token; vLLM
    # keeps one 128-token block for itself.
    if [ -n "$KV_TOKENS" ]; then
      KV="--max-model-len $KV_TOKENS --kv-cache-memory-bytes $(((KV_TOKENS + 128) * 4096))"
    else
      KV="--max-model-len 4096 --kv-cache-memory-bytes 268435456"
    fi
    FLAGS="--dtype float32 --enforce-eager $KV --enable-prompt-tokens-details"
    # shellcheck disable=SC2086
    setsid "$PY" -m vllm.entrypoints.openai.api_server --model "$MODEL" --served-model-name "$NAME" \
      --host 127.0.0.1 --port "$PORT" $FLAGS >"$LOG" 2>&1 &
    ;;
  sglang)
    if [ -n "$KV_TOKENS" ]; then
      KV="--max-total-tokens $KV_TOKENS --context-length $KV_TOKENS"
    else
      KV="--max-total-tokens 32768"
    fi
    FLAGS="--device cpu --attention-backend torch_native --sampling-backend pytorch --disable-cuda-graph --disable-overlap-schedule --skip-server-warmup --enable-metrics --enable-cache-report $KV --dtype float32"
    # shellcheck disable=SC2086
    setsid "$PY" -m sglang.launch_server --model-path "$MODEL" --served-model-name "$NAME" \
      --host 127.0.0.1 --port "$PORT" $FLAGS >"$LOG" 2>&1 &
    ;;
esac
PID=$!
cleanup() {
  # The engines start worker processes of their own: stop the whole group (setsid made one).
  kill -- "-$PID" 2>/dev/null || kill "$PID" 2>/dev/null || true
  pkill -P "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

URL=http://127.0.0.1:$PORT
# 20–80 s to start here; 300 s is the bound.
wait_healthy "$ENGINE" "$PID" "$LOG" "$URL" 300
warm_up "$ENGINE" "$LOG" "$URL" "{\"model\": \"$NAME\", \"prompt\": \"the of and\", \"max_tokens\": 16, \"ignore_eos\": true}" 8
log "$ENGINE on $URL (pid $PID, log $LOG)"

VAR=$(echo "$TARGET" | tr '[:lower:]' '[:upper:]')
export "INFERLAB_${VAR}_URL=$URL"
export "INFERLAB_${VAR}_MODEL=$NAME"
# For the engines' own benchmark clients (scripts/cross-check.sh), which need the tokenizer.
export INFERLAB_ENGINE_MODEL_DIR=$MODEL INFERLAB_ENGINE_PYTHON=$PY
DETAILS=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["server_flags"]=sys.argv[2]; d["hardware"]="CPU"; print(json.dumps(d))' "$MODEL/inferlab-model.json" "$FLAGS")
export "INFERLAB_${VAR}_MODEL_DETAILS=$DETAILS"
status=0
run_beside "$ENGINE" "$PID" "$LOG" "$@" || status=$?
exit "$status"
