#!/usr/bin/env bash
# A real Prometheus server (Debian's `prometheus` package, installed when missing) scrapes
# inferlab's endpoint every second during a replayed run (trace_replay on llama.cpp, ~8 s);
# its HTTP API is then asked, while the run goes on, for the requests inferlab has counted:
# fails unless Prometheus holds a non-zero count with the run's labels, and unless its TTFT
# histogram answers a quantile query; and, once the run is over, unless its last scrape (the
# endpoint waits for it) holds every planned request. Loopback only; everything under
# target/prometheus.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
log() { printf 'check-prometheus: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

"$here/apt-install.sh" prometheus
"$here/apt-install.sh" curl
PROMETHEUS=$(command -v prometheus)
log "$("$PROMETHEUS" --version 2>&1 | head -1)"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PROM_PORT=$(free_port)
EXPORTER_PORT=$(free_port)
WORK=target/prometheus
rm -rf "$WORK"
mkdir -p "$WORK/data"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: inferlab
    static_configs:
      - targets: ["127.0.0.1:$EXPORTER_PORT"]
EOF

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$PROM_PORT/api/v1"
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null || { cat "$WORK/prometheus.log" >&2; die "prometheus did not become ready"; }

targets() {
  curl -fsS "$api/targets" | python3 -c '
import json, sys
for t in json.load(sys.stdin)["data"]["activeTargets"]:
    print(t["health"], "last scrape", t["lastScrape"], "error", repr(t["lastError"]), end="; ")'
}
# Prometheus takes up its scrape targets on a reload tick (about 5 s after it starts): the run
# starts once its loop has tried the exporter's port (and found it closed), so that every
# second of the run is scraped.
for _ in $(seq 1 60); do
  curl -fsS "$api/targets" | python3 -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
sys.exit(0 if t and not t[0]["lastScrape"].startswith("0001") else 1)' && break
  sleep 0.5
done
log "scrape target before the run: $(targets)"

cargo build --locked --quiet
# The replay server and the exporter bind loopback; no live target is configured.
env $(env | grep -o '^INFERLAB_[A-Z0-9_]*' | sed 's/^/-u /') \
  target/debug/inferlab run trace_replay --target llamacpp --results "$WORK/results" \
  --prometheus "127.0.0.1:$EXPORTER_PORT" --no-progress >"$WORK/run.log" 2>&1 &
run=$!
pids+=($run)

# Every query is evaluated at one moment `at`, chosen while the run is on and once Prometheus
# holds at least three scrapes of the run's request counter: a rate over the TTFT histogram
# needs two, and a run that has ended leaves its series stale for instant queries after it.
at=""
query() {
  curl -fsS --get "$api/query" --data-urlencode "query=$1" ${at:+--data-urlencode "time=$at"} \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
positive() { [ -n "$1" ] && python3 -c "import sys; sys.exit(0 if float('$1') > 0 else 1)"; }
sel='experiment="trace_replay",target="llamacpp",phase="replay",outcome="ok"'
q="sum(inferlab_requests_total{$sel})"
count=""
scrapes=""
for _ in $(seq 1 60); do
  at=$(date +%s.%N)
  count=$(query "$q" || true)
  scrapes=$(query "max(count_over_time(inferlab_requests_total{$sel}[1m]))" || true)
  if positive "$count" && [ "${scrapes:-0}" -ge 3 ] 2>/dev/null; then
    break
  fi
  kill -0 "$run" 2>/dev/null || break
  sleep 1
done
positive "$count" \
  || { cat "$WORK/run.log" >&2; log "scrape target: $(targets || true)"; die "Prometheus holds no request count from inferlab (got '$count')"; }
log "Prometheus counted $count requests so far, over ${scrapes:-?} scrapes (query: $q)"
[ "${scrapes:-0}" -ge 2 ] 2>/dev/null \
  || die "the run ended before Prometheus scraped it twice (${scrapes:-0} scrapes): nothing to take a rate of"
p50=$(query 'histogram_quantile(0.5, sum by (le) (rate(inferlab_time_to_first_token_seconds_bucket[30s])))' || true)
log "TTFT p50 from the scraped histogram: ${p50:-none} s"
[ -n "$p50" ] && [ "$p50" != "NaN" ] || die "the TTFT histogram answers no quantile"
# The shipped Grafana dashboard's queries, run by this Prometheus with its variables set to
# everything: each must parse and run; the count of those with data is shown.
python3 - "$api" dashboards/grafana-inferlab.json "$at" <<'PY' || die "a dashboard query failed"
import json, sys, urllib.parse, urllib.request
api, path, at = sys.argv[1], sys.argv[2], sys.argv[3]
exprs = [t["expr"] for p in json.load(open(path))["panels"] for t in p.get("targets", [])]
with_data = 0
for e in exprs:
    q = e.replace("$__rate_interval", "30s")
    for v in ("$experiment", "$target", "$phase"):
        q = q.replace(v, ".*")
    url = api + "/query?" + urllib.parse.urlencode({"query": q, "time": at})
    try:
        body = json.load(urllib.request.urlopen(url, timeout=10))
    except Exception as err:  # an HTTP 400 carries PromQL's own words
        sys.exit(f"check-prometheus: dashboard query {e!r}: {err}")
    if body.get("status") != "success":
        sys.exit(f"check-prometheus: dashboard query {e!r}: {body}")
    with_data += bool(body["data"]["result"])
print(f"check-prometheus: dashboard: {len(exprs)} queries run, {with_data} with data", file=sys.stderr)
if with_data < len(exprs) // 2:
    sys.exit("check-prometheus: most dashboard queries found no data")
PY
wait "$run" || { cat "$WORK/run.log" >&2; die "the run failed"; }
log "scrape target after the run: $(targets)"
# Having been scraped, the endpoint waited for one more scrape after the run: Prometheus holds
# the run's final count, every planned request.
at=""
all='experiment="trace_replay",target="llamacpp",phase="replay"'
final=$(query "sum(max_over_time(inferlab_requests_total{$all}[5m]))" || true)
planned=$(query "max(max_over_time(inferlab_requests_planned{$all}[5m]))" || true)
log "Prometheus's last scrape holds $final of $planned planned requests"
grep -q '^the run is over' "$WORK/run.log" || { cat "$WORK/run.log" >&2; die "the endpoint did not wait for a last scrape"; }
[ -n "$final" ] && [ "$final" = "$planned" ] || die "Prometheus holds $final requests of the $planned the run sent"
log "ok"
