#!/usr/bin/env bash
# Loads every results file under a results directory (default results/) with pandas, as the
# README shows, and checks the documented columns and dtypes (scripts/check-results-pandas.py).
# pandas comes from a venv of its own, installed once from scripts/pandas/requirements.txt and
# cached under $INFERLAB_CACHE (default ~/.cache/inferlab) by the hash of the pins.
#
#   scripts/check-results-pandas.sh results/
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log() { printf 'check-results-pandas: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

CACHE=${INFERLAB_CACHE:-$HOME/.cache/inferlab}
KEY=$(cat "$0" "$here/pandas/requirements.txt" | sha256sum | cut -c1-12)
VENV=$CACHE/pandas-venv-$KEY
if [ ! -f "$VENV/.complete" ]; then
  rm -rf "$VENV"
  mkdir -p "$CACHE/logs" "$CACHE/tmp"
  LOG=$CACHE/logs/pandas-venv-$KEY.log
  log "installing pandas into $VENV (log: $LOG)"
  export PIP_CACHE_DIR=$CACHE/pip TMPDIR=$CACHE/tmp PIP_DISABLE_PIP_VERSION_CHECK=1
  { python3 -m venv "$VENV" \
      && "$VENV/bin/python" -m pip install --no-input --quiet --no-deps -r "$here/pandas/requirements.txt"; } \
    >"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; rm -rf "$VENV"; die "install failed; log: $LOG"; }
  touch "$VENV/.complete"
fi
exec "$VENV/bin/python" "$here/check-results-pandas.py" "${1:-results}"
