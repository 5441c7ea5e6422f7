#!/usr/bin/env bash
# Remake docs/quality-report.png: a few demo syncs in a scratch Interlink home, the quality report
# on their ledger, and a headless-Chromium screenshot of it. Run from anywhere: bash docs/make_screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make --quiet install tools
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export INTERLINK_HOME="$scratch/home" PREFECT_HOME="$scratch/prefect" PREFECT_LOGGING_LEVEL=WARNING PREFECT_SERVER_ANALYTICS_ENABLED=false
.venv/bin/interlink demo run >/dev/null
for count in 40 15 60; do
  .venv/bin/interlink demo mutate --count "$count" >/dev/null
  .venv/bin/interlink demo run >/dev/null
done
.venv/bin/interlink report --html "$scratch/quality.html" >/dev/null
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$scratch/chromium" \
  --proxy-server=127.0.0.1:9 --virtual-time-budget=5000 --window-size=1280,2000 \
  --screenshot="$PWD/docs/quality-report.png" "file://$scratch/quality.html" 2>/dev/null
ls -l docs/quality-report.png
