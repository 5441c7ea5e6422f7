"""The Prefect Automations declared with the deployments: crashed runs, and alerts.

- **Crashed runs.** A deployed run sends a `prefect.flow-run.heartbeat` event every `HEARTBEAT_S`
  (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, which `interlink serve` sets for its runs). When a run's
  heartbeats stop for the declared `crash_after_s` before it reaches a final state (its process and
  the runner were killed, or the machine stopped), the server sets it CRASHED, which releases its
  deployment's concurrency slot (Prefect's "detect zombie flows"). A run waiting for its flow retry sends
  none: it is Crashed only if it is not running again `crash_after_s` after its retry was due.
- **Alerts.** With `INTERLINK_ALERT_URL` set, that URL is the Prefect Webhook block `interlink-alerts`,
  and the server calls it with a JSON message when a deployed run fails, crashes, pauses for approval,
  or dead-letters more than its gate's `alert_above` share (the run's `interlink.run.quarantined` event).
  Runs outside deployments (`interlink run`) alert from the flow itself (`interlink.alerts`).

`apply()` makes the server's automations match the declaration: each is created or updated by name,
and an Interlink automation no longer declared (an alert after the URL was unset) is deleted.
`python -m deployments.automations` does it alone, e.g. after `prefect deploy`.
"""

from __future__ import annotations

from prefect.automations import AutomationCore, CallWebhook, ChangeFlowRunState, EventTrigger, Posture
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from deployments import declarations
from interlink.alerts import AUTOMATIONS, QUARANTINED_EVENT, ui_url
from interlink.settings import Settings

HEARTBEAT_S = 30  # Prefect's shortest heartbeat interval (prefect.flow_engine.MINIMUM_HEARTBEAT_INTERVAL)
PREFIX = "interlink: "  # the automations this module owns, by name
ALERT_BLOCK = "interlink-alerts"
# A state event is named after the state's name: a run that dead-lettered rows ends Completed named Quarantined
FINAL = ("Completed", "Quarantined", "Failed", "Cancelled", "Crashed")
ALERT_ONCE_S = 3600  # a run entering a state twice (an expired pause is failed by the server, then by the flow) alerts once
DEPLOYED_RUNS = {"prefect.resource.role": "deployment", "prefect.resource.id": "prefect.deployment.*"}


def crash_zombies(crash_after_s: int, retry_delay_s: int) -> list[AutomationCore]:
    """Set CRASHED a run whose heartbeats stopped `crash_after_s` ago while it was neither final nor waiting for a
    flow retry (no heartbeats come while it waits), and a run not running again `crash_after_s` after its retry was due."""
    died = "the process running this flow run died"
    final = {f"prefect.flow-run.{state}" for state in FINAL}
    return [
        _crash_when_silent(
            f"{PREFIX}crash runs whose heartbeat stopped",
            "A run that sent heartbeats, then none, and did not finish or wait for a retry: its process died.",
            after="prefect.flow-run.heartbeat",
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.AwaitingRetry", *final},
            within=crash_after_s,
            message=f"no heartbeat for {crash_after_s}s: {died} (killed, out of memory, or its machine stopped)",
        ),
        _crash_when_silent(
            f"{PREFIX}crash runs whose retry never started",
            "A run waiting for its flow retry that did not run again in time: its process died while it waited.",
            after="prefect.flow-run.AwaitingRetry",
            expect={"prefect.flow-run.Retrying", "prefect.flow-run.Running", *final},
            within=retry_delay_s + crash_after_s,
            message=f"its retry was due {retry_delay_s}s after it failed and had not started {crash_after_s}s later: "
                    f"{died} while it waited (killed, out of memory, or its machine stopped)",
        ),
    ]


def _crash_when_silent(name: str, description: str, *, after: str, expect: set[str], within: int, message: str) -> AutomationCore:
    """Set CRASHED, with `message`, each flow run that had an `after` event and then none of `expect` for `within` seconds."""
    return AutomationCore(
        name=name,
        description=description,
        trigger=EventTrigger(
            after={after}, expect=expect, match={"prefect.resource.id": "prefect.flow-run.*"}, for_each={"prefect.resource.id"},
            posture=Posture.Proactive, threshold=1, within=within,
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=message)],
    )


def _payload(state: str, message: str, counts: str = "null") -> str:
    """The alert's JSON, as `interlink.alerts` sends it; rendered by the server for the triggering run. The link's
    base is the UI as this process knows it (a server started without PREFECT_UI_URL renders `ui_url` as None)."""
    return (
        '{"integration": {{ flow.name|tojson }}, "state": "' + state + '", "message": ' + message + ", "
        '"counts": ' + counts + ', "flow_run_id": "{{ flow_run.id }}", "deployment": {{ deployment.name|tojson }}, '
        '"link": "' + ui_url() + '/runs/flow-run/{{ flow_run.id }}"}'
    )


STATE_MESSAGE = "{{ (event.payload.validated_state.message or '')|tojson }}"


def alerts(block_id) -> list[AutomationCore]:
    """Failed, crashed, paused and quarantined-above-share runs of deployments → the webhook block, once per run and state."""

    def alert(state: str, event: str, payload: str) -> AutomationCore:
        return AutomationCore(
            name=AUTOMATIONS[state],
            trigger=EventTrigger(expect={event}, match={"prefect.resource.id": "prefect.flow-run.*"}, match_related=DEPLOYED_RUNS,
                                 for_each={"prefect.resource.id"}, posture=Posture.Reactive, threshold=1, within=ALERT_ONCE_S),
            actions=[CallWebhook(block_document_id=block_id, payload=payload)],
        )

    return [
        alert("FAILED", "prefect.flow-run.Failed", _payload("FAILED", STATE_MESSAGE)),
        alert("CRASHED", "prefect.flow-run.Crashed", _payload("CRASHED", STATE_MESSAGE)),
        alert("PAUSED", "prefect.flow-run.Paused", _payload("PAUSED", '"waiting for approval: open the run to approve or reject it"')),
        alert("QUARANTINED", QUARANTINED_EVENT,
              _payload("QUARANTINED", "{{ event.payload.message|tojson }}", "{{ event.payload.counts|tojson }}")),
    ]


def declared() -> list[AutomationCore]:
    """Every automation the declaration asks for; saves the alert URL as the webhook block."""
    declared = declarations()
    wanted = crash_zombies(declared.crash_after_s, declared.retry_delay_seconds)
    if url := Settings.load().alert_url:
        block_id = Webhook(url=url).save(ALERT_BLOCK, overwrite=True)
        wanted += alerts(block_id)
    return wanted


def apply() -> list[str]:
    """Create or update the declared automations on the Prefect server, and delete Interlink's others; their names."""
    wanted = {a.name: a for a in declared()}
    with get_client(sync_client=True) as client:
        for existing in client.read_automations():
            if existing.name.startswith(PREFIX) and existing.name not in wanted:
                client.delete_automation(existing.id)
        for name, automation in wanted.items():
            [*stale, current] = client.read_automations_by_name(name) or [None]
            for duplicate in stale:
                client.delete_automation(duplicate.id)
            if current is None:
                client.create_automation(automation)
            else:
                client.update_automation(current.id, automation)
    return list(wanted)


if __name__ == "__main__":
    print("\n".join(apply()))
