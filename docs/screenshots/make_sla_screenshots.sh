#!/usr/bin/env bash
# The SLA screenshots in docs/screenshots/, from a real Prefect server and `interlink demo serve`, with headless Chromium:
#   sla-deployment.png   crm_to_billing's deployment page: owner, schedule timezone and SLA (its description)
#   sla-automations.png  the Automations page: the server's SLA watches next to the crash and alert automations
#   sla-event-feed.png   the server's event feed: the SLA automation triggered, and its webhook action executed
#   sla-breach-alert.png the SLA_BREACH alert as an HTTP receiver got it (its JSON)
# The declaration is deployments.yaml with one change, so that a breach comes in seconds: inventory_to_storefront
# promises a Completed sync every 30s (declared: 2h). Its one run completes; 30 s later nothing has completed again.
# Run from anywhere: bash docs/screenshots/make_sla_screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
free_port() { .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port) sink_port=$(free_port)
ui="http://127.0.0.1:$port"
scratch=$(mktemp -d -t interlink-sla.XXXXXX)
pids=()
cleanup() {  # each background job is a process group of its own (setsid): end `interlink demo serve` first, then the server
  local i pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    kill -TERM -- "-$pid" 2>/dev/null || continue
    for _ in $(seq 25); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() { echo "make_sla_screenshots: $*" >&2; for log in "$scratch"/*.log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done; exit 1; }
wait_for() {  # wait_for SECONDS WHAT COMMAND…: run COMMAND every half second until it succeeds
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 2))); do "$@" >/dev/null 2>&1 && return; sleep 0.5; done
  fail "$what did not happen within ${seconds}s"
}
shot() {  # shot PNG URL [window-size [virtual-time-ms]]
  TZ=Europe/Berlin chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$scratch/chromium" \
    --run-all-compositor-stages-before-draw --virtual-time-budget="${4:-15000}" --window-size="${3:-1400,1000}" \
    --screenshot="$PWD/docs/screenshots/$1" "$2" >/dev/null 2>&1 || fail "chromium could not capture $2"
}
py() { .venv/bin/python -c "$@"; }

export INTERLINK_HOME="$scratch/home" PREFECT_HOME="$scratch/prefect" PREFECT_API_URL="$ui/api" PREFECT_UI_URL="$ui"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_LOGGING_LEVEL=WARNING
export INTERLINK_ALERT_URL="http://127.0.0.1:$sink_port/alerts" INTERLINK_DEPLOYMENTS_FILE="$scratch/deployments.yaml"
mkdir -p "$INTERLINK_HOME" "$PREFECT_HOME"
sed 's/sla: {fresh_within: 2h}/sla: {fresh_within: 30s}/' deployments/deployments.yaml >"$INTERLINK_DEPLOYMENTS_FILE"
grep -q 'fresh_within: 30s' "$INTERLINK_DEPLOYMENTS_FILE" || fail "inventory_to_storefront's SLA not found in deployments.yaml"

# An alert receiver: each POSTed JSON body appended to alerts.jsonl
setsid .venv/bin/python -c '
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[2], "ab") as out:
            out.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200); self.end_headers()
HTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
' "$sink_port" "$scratch/alerts.jsonl" >"$scratch/sink.log" 2>&1 &
pids+=($!)
setsid .venv/bin/prefect server start --host 127.0.0.1 --port "$port" >"$scratch/server.log" 2>&1 &
pids+=($!)
wait_for 90 "the Prefect server starting" curl -fsS "$ui/api/health"
setsid .venv/bin/interlink demo serve --fault-rate 0 >"$scratch/serve.log" 2>&1 &
pids+=($!)
wait_for 120 "inventory_to_storefront registered" .venv/bin/prefect deployment inspect inventory_to_storefront/inventory_to_storefront
.venv/bin/prefect deployment run inventory_to_storefront/inventory_to_storefront >/dev/null

deployment_id=$(py 'from prefect.client.orchestration import get_client
with get_client(sync_client=True) as c: print(c.read_deployment_by_name("crm_to_billing/crm_to_billing").id)')
shot sla-deployment.png "$ui/deployments/deployment/$deployment_id?tab=Description"
shot sla-automations.png "$ui/automations" 1400,1300

wait_for 150 "the SLA breach alert" grep -q SLA_BREACH "$scratch/alerts.jsonl"
executed() {  # the server writes events in batches: its record of the webhook call comes after the alert itself
  py 'import sys
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter
with get_client(sync_client=True) as c:
    events = c.read_events(EventFilter(event=EventNameFilter(name=["prefect.automation.action.executed"])), limit=50).events
sys.exit(not [e for e in events if "SLA" in (e.resource.get("prefect.resource.name") or "")])'
}
wait_for 60 "the SLA automation's action recorded" executed
shot sla-event-feed.png "$ui/events" 1400,1000 30000
grep SLA_BREACH "$scratch/alerts.jsonl" | py '
import html, json, sys
alerts = [json.loads(line) for line in sys.stdin]
body = "".join(f"<pre>{html.escape(json.dumps(a, indent=2))}</pre>" for a in alerts)
print(f"<html><body style=\"font: 16px sans-serif; margin: 24px\"><h2>POST /alerts: {len(alerts)} SLA_BREACH alert(s) received</h2>{body}</body></html>")
' >"$scratch/alert.html"
shot sla-breach-alert.png "file://$scratch/alert.html" 1400,700
echo "done: docs/screenshots/sla-*.png; the alerts received:"; cat "$scratch/alerts.jsonl"
