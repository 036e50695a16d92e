# Shared by with-llama-server.sh and with-engine.sh (sourced, not run): waiting for a server
# started in the background, warming it up, and running a command beside it. Each takes the
# server's name, pid and log, so every failure names the log. Needs `log` and `die` defined.

# wait_healthy NAME PID LOG URL SECONDS: until GET URL/health answers 200, the server dies, or
# SECONDS pass.
wait_healthy() {
  local name=$1 pid=$2 logfile=$3 url=$4 seconds=$5 i
  local healthy="import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('$url/health', timeout=2).status==200 else 1)"
  for i in $(seq 1 $((seconds * 4))); do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$logfile" >&2 || true; die "$name exited during startup; log: $logfile"; }
    python3 -c "$healthy" 2>/dev/null && return 0
    sleep 0.25
  done
  die "$name did not become healthy within $seconds s; log: $logfile"
}

# warm_up NAME LOG URL BODY [CONCURRENCY]: sends BODY once, then (with CONCURRENCY) that many at
# once, so that the engine's first batched steps (kernels built on first use for each batch
# shape, into caches that are empty on a new machine) happen before any trial measures.
warm_up() {
  python3 - "$3" "$4" "${5:-1}" <<'PY' >/dev/null || die "$1: warm-up request failed; log: $2"
import sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
def send(_):
    req = urllib.request.Request(sys.argv[1] + "/v1/completions", data=sys.argv[2].encode(), headers={"content-type": "application/json"})
    return urllib.request.urlopen(req, timeout=120).read()
send(0)
n = int(sys.argv[3])
if n > 1:
    for width in (2, n):
        with ThreadPoolExecutor(width) as pool:
            list(pool.map(send, range(width)))
PY
}

# run_beside NAME PID LOG COMMAND...: runs COMMAND, then fails (naming the log) if the server
# died meanwhile; returns the command's status otherwise.
run_beside() {
  local name=$1 pid=$2 logfile=$3 status
  shift 3
  set +e
  "$@"
  status=$?
  set -e
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 20 "$logfile" >&2 || true
    log "$name died during the run; log: $logfile"
    [ "$status" -ne 0 ] || status=1
  fi
  return "$status"
}
