"""The gate: guards on a batch, and the decision a policy makes when rows fail their checks."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from connectors.sql import utcnow
from data_checks.gate import GateFailed, GateRejected, Validation
from data_checks.guards import schema_diff, volume_problem
from data_checks.policy import Gate, SchemaContract
from interlink.ledger import Ledger
from interlink.masking import mask_frame

SAMPLE_ROWS = 10


class Approval(RunInput):
    """The form a person fills in the Prefect UI to let a failing batch through, or not."""

    approve: bool = False
    approver: str = ""
    comment: str = ""


@task(name="schema-guard", cache_policy=NO_CACHE)
def schema_guard(raw: pd.DataFrame, contract: SchemaContract) -> list[str]:
    """The batch's differences from the source contract; under `freeze`, any difference fails the run."""
    diff = schema_diff(raw, contract)
    if diff and contract.on_change == "freeze":
        raise GateFailed(f"source schema differs from contract {contract.version}: " + "; ".join(diff))
    if diff:
        get_run_logger().warning("source schema evolved from contract %s: %s", contract.version, "; ".join(diff))
    return diff


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
    form = Approval.with_initial_data(description=_form(integration, rows, validation, gate, summary))
    on_pause(summary, {"rows": total, "rows_failing": failing})
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=gate.approval_timeout_s, poll_interval=gate.approval_poll_s)
    except FlowPauseTimeout:
        decision = f"rejected: no decision within {gate.approval_timeout_s}s ({summary})"
        raise GateRejected(f"{integration}: {decision}", decision) from None
    verdict = "approved" if answer.approve else "rejected"
    decision = f"{verdict} by {answer.approver or 'an unnamed person'} at {utcnow():%Y-%m-%d %H:%M:%S} UTC ({summary})"
    decision += f": {answer.comment}" if answer.comment else ""
    if not answer.approve:
        raise GateRejected(f"{integration}: {decision}", decision)
    return decision


def _form(integration: str, rows: pd.DataFrame, validation: Validation, gate: Gate, summary: str) -> str:
    sample = mask_frame(rows.loc[validation.row_failures.index[:SAMPLE_ROWS]], gate.sensitive)
    reasons = validation.row_failures["reason"].str.split("; ").explode().str.split(":").str[0].value_counts()
    return "\n".join([
        f"## {integration}: approve this batch?",
        f"**{summary}** (more than {gate.approve_above:.0%} allowed without approval).",
        "Approve: the passing rows are delivered and the failing ones dead-lettered. Reject: nothing is delivered.",
        "",
        "| failing expectation | rows |",
        "|---|---|",
        *[f"| {name} | {count} |" for name, count in reasons.items()],
        "",
        f"First {len(sample)} failing rows:",
        "",
        *_markdown_table(sample),
    ])


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    cells = frame.astype(object).where(frame.notna(), "").map(str)
    return [
        "| " + " | ".join(frame.columns) + " |",
        "|" + "---|" * len(frame.columns),
        *("| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)),
    ]
