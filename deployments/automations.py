"""The Prefect Automations declared with the deployments: crashed runs, alerts, and SLA breaches.

- **Crashed runs.** A deployed run sends a `prefect.flow-run.heartbeat` event every `HEARTBEAT_S`
  (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, which `interlink serve` sets for its runs). When a run's
  heartbeats stop for the declared `crash_after_s` before it reaches a final state (its process and
  the runner were killed, or the machine stopped), the server sets it CRASHED, which releases its
  deployment's concurrency slot (Prefect's "detect zombie flows"). A run waiting for its flow retry sends
  none: it is Crashed only if it is not running again `crash_after_s` after its retry was due.
- **Alerts.** With `INTERLINK_ALERT_URL` set, that URL is the Prefect Webhook block `interlink-alerts`,
  and the server calls it with a JSON message when a deployed run fails, crashes, pauses for approval,
  or dead-letters more than its gate's `alert_above` share (the run's `interlink.run.quarantined` event).
  Runs outside deployments (`interlink run`) alert from the flow itself (`interlink.alerts`). Every alert
  names the integration's owner and links to the runbook's section for its state.
- **SLA breaches.** For each integration whose `sla` (deployments.yaml) promises `fresh_within`: the server
  alerts SLA_BREACH when no run of its sync deployment ended Completed (or Quarantined) within that time of
  the last one that did. The watch starts at the last Completed run, or, when there is none (a new
  deployment) or the breach was alerted, at the next run that starts (Pending) or is Late, so a breach is
  alerted once, and again only after a new attempt also left it unmet. With `done_by`: each scheduled
  (`auto-scheduled`) run of the sync not Completed within done_by − its cron time (e.g. 06:00 − 02:00 = 4 h,
  wall clock in the declaration's timezone, so on the nights clocks change the deadline moves by that hour),
  counted from its Pending or Late, is alerted once. Without `INTERLINK_ALERT_URL` a breach is only recorded
  in the server's event feed (`prefect.automation.triggered`).

`apply()` makes the server's automations match the declaration: each is created, updated when it changed
(an update restarts the server's open windows, so an unchanged one is left alone), or, when no longer
declared (an alert after the URL was unset), deleted.
`python -m interlink.deployments.automations` does it alone, e.g. after `prefect deploy`.
"""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta

from cronsim import CronSim
from interlink.connectors.errors import ConfigError
from interlink.deployments.declaration import Declarations, Integration, duration_text, sla_promises
from interlink.deployments.runner import declarations, deployed
from prefect.automations import AutomationCore, CallWebhook, ChangeFlowRunState, DoNothing, EventTrigger, Posture
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from interlink.alerts import AUTOMATIONS, QUARANTINED_EVENT, runbook, ui_url
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


def _payload(state: str, message: str, counts: str = "null", *, owners: dict[str, str], timezone: str) -> str:
    """The alert's JSON, as `interlink.alerts` sends it; rendered by the server for the triggering run, whose flow's
    name finds its owner in `owners`. The link's base is the UI as this process knows it (a server started without
    PREFECT_UI_URL renders `ui_url` as None)."""
    return (
        "{% set owner = " + json.dumps(owners) + ".get(flow.name) %}"
        '{"integration": {{ flow.name|tojson }}, "state": "' + state + '", "message": ' + message + ", "
        '"counts": ' + counts + ', "flow_run_id": "{{ flow_run.id }}", "deployment": {{ deployment.name|tojson }}, '
        '"link": "' + ui_url() + '/runs/flow-run/{{ flow_run.id }}", "owner": {{ owner|tojson }}, '
        '"timezone": ' + json.dumps(timezone) + ', "runbook": ' + json.dumps(runbook(state)) + "}"
    )


STATE_MESSAGE = "{{ (event.payload.validated_state.message or '')|tojson }}"


def alerts(block_id, declared: Declarations) -> list[AutomationCore]:
    """Failed, crashed, paused and quarantined-above-share runs of deployments → the webhook block, once per run and state."""
    owners = {deployed(d.integration, d.flow, declared).name: str(declared.integrations[d.integration].owner) for d in declared.deployments}

    def alert(state: str, event: str, message: str, counts: str = "null") -> AutomationCore:
        return AutomationCore(
            name=AUTOMATIONS[state],
            trigger=EventTrigger(expect={event}, match={"prefect.resource.id": "prefect.flow-run.*"}, match_related=DEPLOYED_RUNS,
                                 for_each={"prefect.resource.id"}, posture=Posture.Reactive, threshold=1, within=ALERT_ONCE_S),
            actions=[CallWebhook(block_document_id=block_id,
                                 payload=_payload(state, message, counts, owners=owners, timezone=declared.timezone))],
        )

    return [
        alert("FAILED", "prefect.flow-run.Failed", STATE_MESSAGE),
        alert("CRASHED", "prefect.flow-run.Crashed", STATE_MESSAGE),
        alert("PAUSED", "prefect.flow-run.Paused", '"waiting for approval: open the run to approve or reject it"'),
        alert("QUARANTINED", QUARANTINED_EVENT, "{{ event.payload.message|tojson }}", "{{ event.payload.counts|tojson }}"),
    ]


COMPLETED = {"prefect.flow-run.Completed", "prefect.flow-run.Quarantined"}  # a Quarantined run ended Completed too
STARTED = {"prefect.flow-run.Pending", "prefect.flow-run.Late"}  # a run picked up, or one nothing picked up in time


def sla_breaches(declared: Declarations, block_id=None) -> list[AutomationCore]:
    """For each integration's SLA, the server's watch on its sync deployment: SLA_BREACH to the webhook block
    (nothing but the server's event feed without one), once per breach."""
    wanted = []
    for name, integration in declared.integrations.items():
        sync = declared.sync_of(name)
        if integration.sla is None or sync is None:
            continue
        runs_of_sync = [{"prefect.resource.role": "deployment", "prefect.resource.name": sync.name},
                        {"prefect.resource.role": "flow", "prefect.resource.name": deployed(name, "sync", declared).name}]
        sla, promises = integration.sla, sla_promises(integration.sla, declared.timezone)
        if sla.fresh_within is not None:
            wanted.append(_sla_automation(
                f"{PREFIX}SLA of {name}: fresh within {duration_text(sla.fresh_within)}", name, integration, declared, promises["fresh_within"],
                EventTrigger(after=COMPLETED | STARTED, expect=COMPLETED, match_related=runs_of_sync,
                             for_each={"related:deployment:prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                             within=sla.fresh_within),
                f"no Completed sync within {duration_text(sla.fresh_within)}", block_id))
        if sla.done_by is not None:
            within = done_within(sync.cron, sla.done_by, name)
            wanted.append(_sla_automation(
                f"{PREFIX}SLA of {name}: done by {sla.done_by:%H:%M}", name, integration, declared, promises["done_by"],
                EventTrigger(after=STARTED, expect=COMPLETED, match={"prefect.resource.id": "prefect.flow-run.*"},
                             match_related=[*runs_of_sync, {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.auto-scheduled"}],
                             for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1, within=within),
                f"its scheduled sync (cron `{sync.cron}`) was not Completed by {sla.done_by:%H:%M} {declared.timezone} "
                f"({duration_text(within)} after it began)", block_id))
    return wanted


def done_within(cron: str, done_by: time, integration: str) -> timedelta:
    """How long after its start a run of a daily `cron` has until the wall-clock time `done_by`, that day or the next."""
    first, second = (fire for fire, _ in zip(CronSim(cron, datetime(2026, 1, 5)), range(2)))
    if second - first < timedelta(days=1):
        raise ConfigError(f"integrations.{integration}.sla.done_by: its sync runs more than once a day (cron {cron!r}): "
                          "done_by needs a daily schedule; promise fresh_within instead")
    within = datetime.combine(first.date(), done_by) - first
    return within if within > timedelta(0) else within + timedelta(days=1)


def _sla_automation(name: str, integration_name: str, integration: Integration, declared: Declarations, promise: str,
                    trigger: EventTrigger, breach: str, block_id) -> AutomationCore:
    payload = json.dumps({
        "integration": integration_name, "state": "SLA_BREACH", "message": f"{integration_name}: {breach}; its last event: @LAST@",
        "counts": None, "flow_run_id": "@RUN@", "deployment": declared.sync_of(integration_name).name,
        "link": f"{ui_url()}/deployments/deployment/@DEPLOYMENT@", "owner": str(integration.owner), "sla": promise,
        "timezone": declared.timezone, "runbook": runbook("SLA_BREACH"),
    })  # the server fills in the last event it saw of the deployment's runs (Completed, Pending or Late), and its run
    for placeholder, template in (("@RUN@", "{{ event.resource.id|replace('prefect.flow-run.', '') }}"), ("@DEPLOYMENT@", "{{ deployment.id }}"),
                                  ("@LAST@", "{{ event.event|replace('prefect.flow-run.', '') }} at {{ event.occurred.isoformat() }}")):
        payload = payload.replace(placeholder, template)
    return AutomationCore(
        name=name,
        description=f"{integration_name}, owned by {integration.owner}, promises {promise}",
        trigger=trigger,
        actions=[CallWebhook(block_document_id=block_id, payload=payload) if block_id else DoNothing()],
    )


def declared() -> list[AutomationCore]:
    """Every automation the declaration asks for; saves the alert URL as the webhook block."""
    declared = declarations()
    wanted = crash_zombies(declared.crash_after_s, declared.retry_delay_seconds)
    block_id = None
    if url := Settings.load().alert_url:
        block_id = Webhook(url=url).save(ALERT_BLOCK, overwrite=True)
        wanted += alerts(block_id, declared)
    return wanted + sla_breaches(declared, block_id)


def apply() -> list[str]:
    """Create or update the declared automations on the Prefect server, and delete Interlink's others; their names.
    An unchanged automation is left as it is: an update gives its trigger a new id, which drops the windows the
    server has open for it (an SLA's since the last Completed run)."""
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
            elif AutomationCore.model_validate(current.model_dump(include=set(AutomationCore.model_fields))) != automation:
                client.update_automation(current.id, automation)
    return list(wanted)


if __name__ == "__main__":
    print("\n".join(apply()))
