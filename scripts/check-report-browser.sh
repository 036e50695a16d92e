#!/usr/bin/env bash
# Writes `inferlab report` pages for every experiment with runs under a results directory
# (default results/) into target/reports/, then opens each in a real headless Chromium
# (scripts/check-report-browser.mjs): fails on a console error, a request beyond the page's
# own file, or a chart with nothing drawn, and saves a full-page PNG beside each page.
# Installs Debian's chromium when it is missing (idempotent).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
RESULTS=${1:-results}
OUT=target/reports
log() { printf 'check-report-browser: %s\n' "$*" >&2; }

"$here/apt-install.sh" chromium
CHROMIUM=$(command -v chromium)

cargo build --locked --quiet
rm -rf "$OUT"
mkdir -p "$OUT"
pages=()
for dir in "$RESULTS"/*/; do
  exp=$(basename "$dir")
  target/debug/inferlab report --results "$RESULTS" "$exp" -o "$OUT/$exp.html" >/dev/null
  pages+=("$OUT/$exp.html")
done
[ ${#pages[@]} -gt 0 ] || { log "no runs under $RESULTS"; exit 1; }
node --no-warnings --experimental-websocket "$here/check-report-browser.mjs" "$CHROMIUM" "${pages[@]}"
