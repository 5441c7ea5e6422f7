#!/usr/bin/env bash
# Remake the Prefect UI screenshots in docs/ from a real Prefect server and `interlink demo serve`, in a
# scratch Interlink and Prefect home, with headless Chromium:
#   prefect-deployments.png  the declared deployments and their schedules
#   prefect-upcoming.png     the runs the server's scheduler created for them (the Runs page, Scheduled)
#   prefect-run.png          a triggered crm_to_billing run and its artifact
#   prefect-approval.png     a run under the approve policy, paused for approval (its form; then approved)
#   prefect-retries.png      an orders_to_erp run whose first attempt fails (the storefront is down) and
#                            whose declared flow retry completes it (the storefront is back)
#   prefect-crashed.png      an orders_to_erp run killed with SIGKILL together with `interlink serve`,
#                            set Crashed by the heartbeat automation (deployments/automations.py)
#   quality-report-live.png  the quality report of these runs
# Needs .venv (`make install`) and chromium (`make tools`). Run from anywhere: bash docs/make_ui_screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

free_port() { .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
ui="http://127.0.0.1:$port"
scratch=$(mktemp -d -t interlink-ui.XXXXXX)
pids=()
cleanup() {
  # Each background job runs in its own process group (setsid), so this also ends the uvicorn
  # workers, demo systems and flow-run subprocesses they start.
  # `interlink serve` first (it does not always exit on SIGTERM, hence the SIGKILL after 5s), then the server.
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
trap 'exit 130' INT TERM

export INTERLINK_HOME="$scratch/home" PREFECT_HOME="$scratch/prefect"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_LOGGING_LEVEL=WARNING
export PREFECT_API_URL="$ui/api"
mkdir -p "$INTERLINK_HOME" "$PREFECT_HOME"
# The declared deployments, with flow retries 30 s apart instead of 300 s, so the retried run does not keep
# the script waiting five minutes (crash_after_s stays as declared).
export INTERLINK_DEPLOYMENTS_FILE="$scratch/deployments.yaml"
sed 's/^retry_delay_seconds: .*/retry_delay_seconds: 30/' deployments/deployments.yaml >"$INTERLINK_DEPLOYMENTS_FILE"
grep -q '^retry_delay_seconds: 30$' "$INTERLINK_DEPLOYMENTS_FILE" || { echo "no retry_delay_seconds in deployments.yaml" >&2; exit 1; }
# The storefront is a demo storefront on a port of its own, which this script starts only in step 7, once a
# run has failed for want of it; the demo stands in for every other system.
storefront_port=$(free_port)
export INTERLINK_STOREFRONT__BASE_URL="http://127.0.0.1:$storefront_port"
export INTERLINK_STOREFRONT__AUTH__KIND=oauth2_client_credentials INTERLINK_STOREFRONT__AUTH__CLIENT_ID=interlink-demo
export INTERLINK_STOREFRONT__AUTH__TOKEN_URL="$INTERLINK_STOREFRONT__BASE_URL/oauth/token"
INTERLINK_STOREFRONT__AUTH__CLIENT_SECRET=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')
export INTERLINK_STOREFRONT__AUTH__CLIENT_SECRET

fail() {
  echo "make_ui_screenshots: $*" >&2
  for log in "$scratch"/*.log; do echo "--- $log (tail)" >&2; tail -n 30 "$log" >&2; done
  exit 1
}

wait_url() {  # wait_url URL SECONDS WHAT: poll URL every half second until it answers; fail naming WHAT after SECONDS
  for i in $(seq $(($2 * 2))); do
    curl -fsS "$1" >/dev/null 2>&1 && return
    sleep 0.5
  done
  fail "$3 did not answer at $1 within $2s"
}

# 1. A real Prefect server (SQLite under the scratch PREFECT_HOME).
setsid .venv/bin/prefect server start --host 127.0.0.1 --port "$port" >"$scratch/server.log" 2>&1 &
pids+=($!)
wait_url "$ui/api/health" 60 "the Prefect server"

# 2. Every declared deployment registered and served, with the demo systems up.
setsid .venv/bin/interlink demo serve --fault-rate 0 >"$scratch/serve.log" 2>&1 &
serve_pid=$!
pids+=("$serve_pid")

py() { .venv/bin/python -c "$@"; }
trigger() {  # trigger DEPLOYMENT [prefect deployment run options]: start a run of it, print its id
  local out id
  out=$(.venv/bin/prefect deployment run "$@" 2>&1) || fail "deployment run $1 failed: $out"
  id=$(grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' <<<"$out" | head -n 1)
  [ -n "$id" ] || fail "no flow run id in: $out"
  echo "$id"
}
wait_run() {  # wait_run RUN_ID STATE TIMEOUT_S: poll the run until its state has that name or type; fail if it ends otherwise
  py '
import sys, time
from prefect.client.orchestration import get_client
run_id, wanted, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + timeout
with get_client(sync_client=True) as client:
    while (state := client.read_flow_run(run_id).state) is None or wanted not in (state.name, state.type.value):
        if (state is not None and state.is_final()) or time.monotonic() > deadline:
            sys.exit(f"flow run {run_id} is {state and state.name}, not {wanted} (waited up to {timeout:g}s)")
        time.sleep(1)
' "$@" || fail "flow run $1 did not reach $2"
}
shot() {  # shot PNG URL [window-size]; times shown in the declaration's timezone, as its cron strings read
  TZ=Europe/Berlin chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$scratch/chromium" \
    --run-all-compositor-stages-before-draw --virtual-time-budget=15000 --window-size="${3:-1440,1000}" \
    --screenshot="$PWD/$1" "$2" >/dev/null 2>&1 || fail "chromium could not capture $2"
}

# 3. Every declared deployment registered, each with the runs the server's scheduler created for it.
py '
import sys, time
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from interlink.deployments.runner import runner_deployments
declared = len(runner_deployments())  # with the retention prune, if declared
scheduled = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["SCHEDULED"])))
deadline = time.monotonic() + 120
with get_client(sync_client=True) as client:
    while True:
        deployments = client.read_deployments()
        unscheduled = [d.name for d in deployments if not client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[d.id])), flow_run_filter=scheduled, limit=1)]
        if len(deployments) == declared and not unscheduled:
            break
        if time.monotonic() > deadline:
            sys.exit(f"{len(deployments)} of {declared} deployments registered, without scheduled runs: {unscheduled}")
        time.sleep(1)
' || fail "the deployments were not registered and scheduled"
# The Runs page, Scheduled, for the coming week (the newest first: the UI keeps its sort order out of the URL).
week="type=range&startDate=$(date -u +%Y-%m-%dT%H:%M:00.000Z)&endDate=$(date -u -d '+7 days' +%Y-%m-%dT%H:%M:00.000Z)"
shot docs/prefect-upcoming.png "$ui/runs?state=Scheduled&$week" 1440,2000

# 4. A triggered run, completed.
run_id=$(trigger crm_to_billing/crm_to_billing)
artifact_id=$(py '
import sys, time
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
run_id = sys.argv[1]
deadline = time.monotonic() + 300
with get_client(sync_client=True) as client:
    while True:
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_completed():
            break
        if state is not None and state.is_final():
            sys.exit(f"flow run {run_id} ended {state.name}")
        if time.monotonic() > deadline:
            sys.exit(f"flow run {run_id} not completed within 300s (now {state and state.name})")
        time.sleep(1)
    artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    print(next((str(a.id) for a in artifacts if a.type == "markdown"), ""))
' "$run_id") || fail "flow run $run_id did not complete"
echo "flow run $run_id completed (artifact ${artifact_id:-none})"

# 5. Screenshots of the deployments and the run.
# Wide enough that the Schedules column shows every schedule in full ("At 05:00 AM, only on Sunday").
shot docs/prefect-deployments.png "$ui/deployments" 1800,600
# The run's own page cannot show the artifact: the UI drops `?tab=Artifacts` (the tab is hidden until
# the run has loaded, so it falls back to Logs), and the v2 UI's Artifacts tab only lists a card. The
# artifact's page renders the markdown (counts and data checks) next to the run's details.
[ -n "$artifact_id" ] || fail "flow run $run_id published no markdown artifact"
shot docs/prefect-run.png "$ui/artifacts/artifact/$artifact_id" 1440,1220

# 6. A full refresh under the approve policy (a deployment parameter): 505 of 5000 rows fail, so it pauses.
paused_id=$(trigger crm_to_billing/crm_to_billing --param full_refresh=true --param policy=approve --param approve_above=0.01)
py '
import sys, time
from prefect.client.orchestration import get_client
deadline = time.monotonic() + 300
with get_client(sync_client=True) as client:
    while not (state := client.read_flow_run(sys.argv[1]).state) or not state.is_paused():
        if (state and state.is_final()) or time.monotonic() > deadline:
            sys.exit(f"flow run {sys.argv[1]} did not pause for approval (now {state and state.name})")
        time.sleep(1)
' "$paused_id" || fail "no paused run"
TZ=Europe/Berlin .venv/bin/python docs/click_screenshot.py "$ui/runs/flow-run/$paused_id" Resume docs/prefect-approval.png 1440,3300 \
  || fail "no screenshot of the approval form"
py '
import sys, time
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
resume_flow_run(sys.argv[1], run_input={"decision": "approve", "approver": "Dana (ops)", "comment": "known CRM clean-up, OPS-1234"})
deadline = time.monotonic() + 300
with get_client(sync_client=True) as client:
    while not (state := client.read_flow_run(sys.argv[1]).state).is_final():
        if time.monotonic() > deadline:
            sys.exit(f"flow run {sys.argv[1]} did not finish after approval")
        time.sleep(1)
' "$paused_id" || fail "the approved run did not finish"

# 7. A run with retries: the storefront is not up yet, so the first attempt fails (connection refused, after the
# connector's and the ingest task's own retries); once the run waits for its flow retry, the storefront starts.
retried_id=$(trigger orders_to_erp/orders_to_erp)
wait_run "$retried_id" AwaitingRetry 300
setsid .venv/bin/python -c '
import os, sys, uvicorn
from pathlib import Path
from interlink.demo_systems.storefront import create_app
db = Path(os.environ["INTERLINK_HOME"], "demo", "storefront.db")  # seeded by `interlink demo serve`
auth = os.environ["INTERLINK_STOREFRONT__AUTH__CLIENT_ID"], os.environ["INTERLINK_STOREFRONT__AUTH__CLIENT_SECRET"]
uvicorn.run(create_app(db, *auth), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
' "$storefront_port" >"$scratch/storefront.log" 2>&1 &
pids+=($!)
wait_url "$INTERLINK_STOREFRONT__BASE_URL/health" 20 "the demo storefront"
wait_run "$retried_id" COMPLETED 300
# Its details: the run count, the declared retries, and in the timeline the failed ingest, the wait, the second attempt.
shot docs/prefect-retries.png "$ui/runs/flow-run/$retried_id?tab=Details" 1440,1300

# 8. A crashed run: a full refresh in small chunks, killed mid-sync with SIGKILL together with `interlink serve`
# (the machine died) once the server has its first heartbeat and the ledger its row. No process is left to report
# it, so the heartbeat automation sets it Crashed, crash_after_s later.
crashed_id=$(trigger orders_to_erp/orders_to_erp --param full_refresh=true --param chunk_size=20)
wait_run "$crashed_id" RUNNING 300
py '
import sys, time
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from interlink.ledger import Ledger
from interlink.settings import Settings
run_id = sys.argv[1]
heartbeat = EventFilter(event=EventNameFilter(name=["prefect.flow-run.heartbeat"]), resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]))
ledger = Ledger(Settings.load().state_db)
deadline = time.monotonic() + 120
with get_client(sync_client=True) as client:
    while not (client.read_events(heartbeat, limit=1).events and any(r["flow_run_id"] == run_id for r in ledger.runs("orders_to_erp"))):
        if time.monotonic() > deadline:
            sys.exit(f"flow run {run_id}: no heartbeat at the server or no ledger row within 120s")
        time.sleep(0.5)
' "$crashed_id" || fail "the run to crash did not get going"
kill -KILL -- "-$serve_pid"
wait "$serve_pid" 2>/dev/null || true  # reaped quietly: no "Killed" line from bash
crash_after_s=$(py 'from interlink.deployments.runner import declarations; print(declarations().crash_after_s)')
wait_run "$crashed_id" CRASHED $((crash_after_s + 120))
shot docs/prefect-crashed.png "$ui/runs/flow-run/$crashed_id?tab=Details" 1440,1300

# 9. The quality report of these runs, its runs linked to this server's UI.
.venv/bin/interlink report --html "$scratch/quality.html" >/dev/null || fail "interlink report failed"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$scratch/chromium-report" \
  --proxy-server=127.0.0.1:9 --virtual-time-budget=5000 --window-size=1280,3000 \
  --screenshot="$PWD/docs/quality-report-live.png" "file://$scratch/quality.html" >/dev/null 2>&1 || fail "no report screenshot"
ls -l docs/prefect-deployments.png docs/prefect-upcoming.png docs/prefect-run.png docs/prefect-approval.png \
  docs/prefect-retries.png docs/prefect-crashed.png docs/quality-report-live.png
echo "done in $((SECONDS - started))s"
