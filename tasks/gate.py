"""The gate: guards on a batch, and the decision a policy makes when rows fail their checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import zip_longest
from typing import Literal, Protocol

import pandas as pd
from interlink.connectors.masking import mask_emails, mask_frame
from interlink.connectors.sql import utcnow
from interlink.data_checks.gate import GateFailed, GateRejected, Validation
from interlink.data_checks.guards import schema_diff, volume_problem
from interlink.data_checks.policy import Gate, SchemaContract
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Running
from pydantic import Field, ValidationError, field_validator

from interlink.ledger import Ledger

SAMPLE_PER_CHECK = 3  # failing rows shown per failing expectation in the approval form
SAMPLE_ROWS = 20  # and at most this many in all


class Approval(RunInput):
    """The form a person fills in the Prefect UI to let a failing batch through, or not.

    Every field is required and has no default, so the Prefect server refuses a submission without
    one (it validates the input against this model's JSON schema before resuming the run). A blank
    name or reason passes that schema (its refusal would read `' ' does not match '\\S'`): the
    validators refuse it with a sentence, and `decide` pauses again with that sentence atop the form.
    """

    decision: Literal["approve", "reject"] = Field(
        title="Decision", description="approve: deliver the passing rows, dead-letter the failing ones; reject: deliver nothing"
    )
    approver: str = Field(title="Your name", description="who decides (kept in the run's logs, artifact and ledger)", max_length=100)
    comment: str = Field(title="Why", description="the reason for the decision, e.g. a known clean-up at the source", max_length=1000)

    @field_validator("approver")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("Your name is blank: write who decides, it is kept with the decision")
        return value.strip()

    @field_validator("comment")
    @classmethod
    def _reasoned(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("The reason is blank: write why you decide so, it is kept with the decision")
        return value.strip()


@task(name="schema-guard", cache_policy=NO_CACHE)
def schema_guard(raw: pd.DataFrame, contract: SchemaContract) -> list[str]:
    """The batch's differences from the source contract; under `freeze`, any difference fails the run."""
    diff = schema_diff(raw, contract)
    if diff and contract.on_change == "freeze":
        raise GateFailed(f"source schema differs from contract {contract.version}: " + "; ".join(diff))
    if diff:
        get_run_logger().warning("source schema evolved from contract %s: %s", contract.version, "; ".join(diff))
    return diff


class Refusing(Protocol):
    def refusals(self, rows: pd.DataFrame) -> pd.DataFrame: ...


@task(name="target-limits", cache_policy=NO_CACHE)
def target_limits(target: Refusing, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows `target` would refuse (`reason`, `values`): values beyond its columns' limits, found before any write."""
    return target.refusals(rows)


@task(name="volume-guard", cache_policy=NO_CACHE)
def volume_guard(state_url: str, integration: str, rows_read: int, gate: Gate) -> str | None:
    """Fail a run that read far fewer rows than usual; a note when there is too little history to judge."""
    history = Ledger(state_url).volumes(integration, gate.volume_history)
    problem = volume_problem(rows_read, history, gate)
    if problem:
        raise GateFailed(problem)
    if len(history) < gate.volume_min_runs:
        return f"volume not judged: {len(history)} earlier successful runs, {gate.volume_min_runs} needed"
    return None


def decide(
    integration: str, rows: pd.DataFrame, validation: Validation, gate: Gate, on_pause: Callable[[str, dict], None]
) -> str | None:
    """Apply the gate policy to a checked batch: raise to stop it, or return a decision to ledger.

    Called from the flow: under `approve` it pauses the flow run until a person answers, first
    calling `on_pause(summary, counts)` (the flow alerts someone).
    """
    failing, total = len(validation.row_failures), len(rows)
    if not failing and not validation.batch_failures:
        return None
    summary = f"{failing} of {total} rows fail" + (f"; batch: {', '.join(validation.batch_failures)}" if validation.batch_failures else "")
    if gate.policy == "fail":
        raise GateFailed(f"{integration}: {summary}")
    if gate.policy == "quarantine":
        if validation.batch_failures:
            raise GateFailed(f"{integration}: {summary}")
        return None
    if not validation.batch_failures and failing <= gate.approve_above * total:
        return None
    deadline = utcnow() + timedelta(seconds=gate.approval_timeout_s)
    text = _form(integration, rows, validation, gate, summary, deadline)
    on_pause(summary, {"rows": total, "rows_failing": failing})
    get_run_logger().warning("%s: %s; waiting for a decision in the Prefect UI until %s UTC", integration, summary, f"{deadline:%Y-%m-%d %H:%M:%S}")
    answer, refused, left = None, "", gate.approval_timeout_s
    while answer is None:
        try:
            if left < 1:
                raise FlowPauseTimeout
            form = Approval.with_initial_data(description=refused + text)
            answer = pause_flow_run(wait_for_input=form, timeout=left, poll_interval=gate.approval_poll_s)
        except FlowPauseTimeout:
            decision = f"rejected: no decision within {gate.approval_timeout_s}s ({summary})"
            _record(integration, decision)
            _end_with_decision(timed_out=True)
            raise GateRejected(f"{integration}: {decision}", decision) from None
        except ValidationError as exc:  # a blank name or reason: asked again, the deadline unchanged
            why = " ".join(f"{e['msg'].removeprefix('Value error, ')}." for e in exc.errors())
            get_run_logger().warning("%s: an answer was refused: %s Waiting for another.", integration, why)
            refused = f"**Your answer was refused: {_cell(why)}** Please answer again.\n\n"
            left = int((deadline - utcnow()).total_seconds())
    verdict = "approved" if answer.decision == "approve" else "rejected"
    decision = f"{verdict} by {answer.approver} at {utcnow():%Y-%m-%d %H:%M:%S} UTC ({summary}): {answer.comment}"
    _record(integration, decision)
    if verdict == "rejected":
        _end_with_decision(timed_out=False)
        raise GateRejected(f"{integration}: {decision}", decision)
    return decision


def _end_with_decision(timed_out: bool) -> None:
    """Let the Failed state the flow run takes next (its rejection, as message) stand: a rejection is a decision,
    not a failure for the declared flow retries to repeat.

    Prefect 3.8.8 has no retry condition for flows: its server turns a Failed into AwaitingRetry while the run's
    policy has retries left (`RetryFailedFlows`), so the policy is set to none left, as the engine sets it. A pause
    that timed out is left first (Running): from an expired pause, the server would fail the run with its own
    message ("never resumed") instead of the decision."""
    run_id = FlowRunContext.get().flow_run.id
    try:
        with get_client(sync_client=True) as client:
            policy = client.read_flow_run(run_id).empirical_policy
            client.update_flow_run(run_id, empirical_policy=policy.model_copy(update={"retries": 0}))
            if timed_out:
                client.set_flow_run_state(run_id, Running(message="no decision in time: the batch is rejected"), force=True)
    except Exception as exc:  # the API out of reach: the run fails all the same, but its flow retries may repeat it
        get_run_logger().warning("could not end run %s with its rejection: %s: %s", run_id, type(exc).__name__, exc)


def _record(integration: str, decision: str) -> None:
    """The decision in the run's logs and in an artifact of its own (`<integration>-approval`), whatever the outcome."""
    get_run_logger().info("approval: %s", decision)
    create_markdown_artifact(key=f"{integration.replace('_', '-')}-approval", markdown=f"# {integration}: approval\n\n{_cell(decision)}",
                             description=f"{integration}: a person's decision on a failing batch")


def _form(integration: str, rows: pd.DataFrame, validation: Validation, gate: Gate, summary: str, deadline: datetime) -> str:
    """The form's text: what fails, the deadline, and failing rows whole (a few of each failing expectation), each
    with its reasons; sensitive columns masked."""
    checks = validation.row_failures["reason"].str.split("; ").explode().map(_check)  # indexed like the rows
    reasons = checks.value_counts()
    picked = [checks.index[checks == name][:SAMPLE_PER_CHECK] for name in reasons.index]  # taken in turns, below
    shown = pd.Index([i for turn in zip_longest(*picked) for i in turn if i is not None]).unique()[:SAMPLE_ROWS]
    failures = validation.row_failures.loc[shown]
    sample = mask_frame(rows.loc[failures.index], gate.sensitive)
    batch = [f"Batch-level expectations failed: {', '.join(validation.batch_failures)}.", ""] if validation.batch_failures else []
    return "\n".join([
        f"## {integration}: approve this batch?",
        f"**{summary}** (more than {gate.approve_above:.0%} allowed without approval).",
        "",
        f"**Decide by {deadline:%Y-%m-%d %H:%M} UTC** (within {_duration(gate.approval_timeout_s)}): "
        "with no decision by then the batch is rejected.",
        "Approve: the passing rows are delivered and the failing ones dead-lettered. Reject: nothing is delivered.",
        "",
        *batch,
        "| failing expectation | rows |",
        "|---|---|",
        *[f"| {_cell(name)} | {count} |" for name, count in reasons.items()],
        "",
        f"{len(sample)} of {len(validation.row_failures)} failing rows, up to {SAMPLE_PER_CHECK} of each failing expectation, "
        "each whole" + (f" ({', '.join(gate.sensitive)} masked)" if gate.sensitive else "") + ":",
        "",
        *(  # paragraphs, not a table (the dialog is narrow: a wide table's cells are cut off) nor a numbered list
            # (the UI's list gutter cuts numbers from 10 on)
            f"**Row {n}** fails {_cell(', '.join(map(_check, reason.split('; '))))}:  \n"
            + _cell(" · ".join(f"{column}: {_value(value)}" for column, value in row.items())) + "\n"
            for n, (reason, (_, row)) in enumerate(zip(failures["reason"], sample.iterrows(), strict=True), 1)
        ),
    ])


def _check(reason: str) -> str:
    """`expect_…(column)` of a reason `expect_…(column): description`."""
    return reason.split(":", 1)[0]


def _value(value) -> str:
    return "∅" if value is None or (not isinstance(value, list | dict) and pd.isna(value)) else str(value)


def _cell(text: str) -> str:
    """Text for one line of markdown (a table cell or a list item), shown as it is: email local parts masked,
    line breaks flattened, pipes and asterisks escaped (a masked `a***@…` would otherwise start emphasis)."""
    return mask_emails(text).replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("\n", " ")


def _duration(seconds: int) -> str:
    """`1 h 0 min`, `2 min 0 s` or `30 s`."""
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
