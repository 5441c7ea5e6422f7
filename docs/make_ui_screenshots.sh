#!/usr/bin/env bash
# Remake docs/prefect-deployments.png, docs/prefect-run.png, docs/prefect-approval.png and
# docs/quality-report-live.png: a real Prefect server and `interlink serve` in a scratch Interlink and
# Prefect home, one triggered crm_to_billing run, a second one under the approve policy that pauses for
# approval (its form, then approved through the API), the quality report of both, and headless-Chromium
# screenshots. Needs .venv (`make install`) and chromium
# (`make tools`). Run from anywhere: bash docs/make_ui_screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

port=4311
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

fail() {
  echo "make_ui_screenshots: $*" >&2
  for log in "$scratch"/*.log; do echo "--- $log (tail)" >&2; tail -n 30 "$log" >&2; done
  exit 1
}

# 1. A real Prefect server (SQLite under the scratch PREFECT_HOME).
setsid .venv/bin/prefect server start --host 127.0.0.1 --port "$port" >"$scratch/server.log" 2>&1 &
pids+=($!)
for i in $(seq 120); do
  curl -fsS "$ui/api/health" >/dev/null 2>&1 && break
  [ "$i" = 120 ] && fail "the Prefect server did not answer at $ui/api/health within 60s"
  sleep 0.5
done

# 2. Every declared deployment registered and served, with the demo systems up.
setsid .venv/bin/interlink demo serve --fault-rate 0 >"$scratch/serve.log" 2>&1 &
pids+=($!)

# 3. Wait for the deployment, trigger it, wait for the run to complete.
py() { .venv/bin/python -c "$@"; }
py '
import sys, time
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
deadline = time.monotonic() + 120
with get_client(sync_client=True) as client:
    while True:
        try:
            client.read_deployment_by_name("crm_to_billing/crm_to_billing")
            break
        except ObjectNotFound:
            if time.monotonic() > deadline:
                sys.exit("deployment crm_to_billing/crm_to_billing was not registered within 120s")
            time.sleep(1)
' || fail "no deployment"
run_out=$(.venv/bin/prefect deployment run crm_to_billing/crm_to_billing 2>&1) || fail "deployment run failed: $run_out"
run_id=$(grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' <<<"$run_out" | head -n 1)
[ -n "$run_id" ] || fail "no flow run id in: $run_out"
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

# 4. Screenshots of the UI.
shot() {  # shot PNG URL [window-size]
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$scratch/chromium" \
    --run-all-compositor-stages-before-draw --virtual-time-budget=15000 --window-size="${3:-1440,1000}" \
    --screenshot="$PWD/$1" "$2" >/dev/null 2>&1 || fail "chromium could not capture $2"
}
# Wide enough that the Schedules column shows every schedule in full ("At 05:00 AM, only on Sunday").
shot docs/prefect-deployments.png "$ui/deployments" 1800,600
# The run's own page cannot show the artifact: the UI drops `?tab=Artifacts` (the tab is hidden until
# the run has loaded, so it falls back to Logs), and the v2 UI's Artifacts tab only lists a card. The
# artifact's page renders the markdown (counts and data checks) next to the run's details.
[ -n "$artifact_id" ] || fail "flow run $run_id published no markdown artifact"
shot docs/prefect-run.png "$ui/artifacts/artifact/$artifact_id" 1440,1220

# 5. A full refresh under the approve policy (a deployment parameter): 505 of 5000 rows fail, so it pauses.
run_out=$(.venv/bin/prefect deployment run crm_to_billing/crm_to_billing --param full_refresh=true \
  --param policy=approve --param approve_above=0.01 2>&1) || fail "deployment run failed: $run_out"
paused_id=$(grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' <<<"$run_out" | head -n 1)
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
.venv/bin/python docs/click_screenshot.py "$ui/runs/flow-run/$paused_id" Resume docs/prefect-approval.png 1440,1400 \
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

# 6. The quality report of these runs, its runs linked to this server's UI.
.venv/bin/interlink report --html "$scratch/quality.html" >/dev/null || fail "interlink report failed"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$scratch/chromium-report" \
  --proxy-server=127.0.0.1:9 --virtual-time-budget=5000 --window-size=1280,2300 \
  --screenshot="$PWD/docs/quality-report-live.png" "file://$scratch/quality.html" >/dev/null 2>&1 || fail "no report screenshot"
ls -l docs/prefect-deployments.png docs/prefect-run.png docs/prefect-approval.png docs/quality-report-live.png
echo "done in $((SECONDS - started))s"
