"""What the observers (lineage, metrics, traces, JSON logs) are told about a run, as plain data.

`RunFacts` is filled in by the flow while it runs (`interlink.observe`); each observer reads it and
the run's final ledger row, so what they report is what the ledger says happened.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

INTEGRATION: ContextVar[str | None] = ContextVar("interlink_integration", default=None)  # the integration running, for logs
BATCH: ContextVar[int | None] = ContextVar("interlink_batch", default=None)  # the batch being worked on, for logs


@dataclass(frozen=True)
class Dataset:
    """A source or target as lineage names it: `namespace` says which system (scheme, host and port, or database;
    never a user or password), `name` what in it (a table, a path, a folder); `fields` the columns and types when known."""

    namespace: str
    name: str
    fields: tuple[tuple[str, str], ...] = ()


@dataclass
class Check:
    """One expectation over a run: `success` only if it held in every batch it checked."""

    expectation: str
    column: str | None
    success: bool
    unexpected: int = 0


@dataclass
class RunFacts:
    integration: str
    job: str  # the flow's name, e.g. crm_to_billing or crm_to_billing_replay
    kind: str  # sync, replay, reconcile, stream
    flow_run_id: str | None  # Prefect's flow run id (None outside Prefect)
    inputs: tuple[Dataset, ...] = ()
    outputs: tuple[Dataset, ...] = ()
    ui_url: str | None = None  # the flow run in the Prefect UI, when a Prefect UI is known
    trace_id: str | None = None  # the run's OpenTelemetry trace (32 hex digits), when tracing is on
    ledger_row: int | None = None  # the run's row in the ledger, once it has one
    connections: tuple[str, ...] = ()  # the connections the run uses, by name
    checks: dict[tuple[str, str | None], Check] = field(default_factory=dict)
    rows_checked: int = 0
    nulls: dict[str, int] = field(default_factory=dict)  # null values per target column among the checked rows

    def add_checks(self, expectations: list[dict], rows: int, nulls: dict[str, int]) -> None:
        """Fold one batch's expectation outcomes (`interlink.data_checks.gate.Validation.expectations`) into the run's."""
        for outcome in expectations:
            key = (outcome["expectation"], outcome["column"])
            check = self.checks.setdefault(key, Check(outcome["expectation"], outcome["column"], True))
            check.success = check.success and bool(outcome["success"])
            check.unexpected += int(outcome.get("unexpected") or 0)
        self.rows_checked += rows
        for column, count in nulls.items():
            self.nulls[column] = self.nulls.get(column, 0) + count
