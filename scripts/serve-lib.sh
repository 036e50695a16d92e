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

# warm_up NAME LOG URL BODY_JSON: one completion request (the first after start is slow).
warm_up() {
  python3 - "$3" "$4" <<'PY' >/dev/null || die "$1: warm-up request failed; log: $2"
import sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/v1/completions", data=sys.argv[2].encode(), headers={"content-type": "application/json"})
urllib.request.urlopen(req, timeout=120).read()
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
