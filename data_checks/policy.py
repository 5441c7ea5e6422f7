"""What an integration declares about its data: the gate policy and the source schema contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

Policy = Literal["fail", "quarantine", "approve"]  # see `Gate`; a sync flow's `policy` parameter overrides the declared one


@dataclass(frozen=True)
class Gate:
    """How a batch that fails its checks is treated, and the guards beyond row expectations.

    - `fail`: any failed expectation fails the run; the failing batch is not delivered and
      the watermark stays where the last delivered batch left it.
    - `quarantine`: failing rows are dead-lettered, the rest delivered; the run ends in a
      `Completed` state named `Quarantined` when any row was.
    - `approve`: when more than `approve_above` of a batch's rows fail, a person decides in
      the Prefect UI; no answer within `approval_timeout_s` rejects the batch.
    `volume_drop`: a run reading fewer rows than this share of the median of its last
    `volume_history` successful runs fails (history needs `volume_min_runs` runs).
    `max_age`: a batch whose newest `age_field` is older raises a warning. `sensitive` columns
    (of the target rows) are masked wherever values are shown (artifacts, approval form, reports,
    dead letters), and so is every source field whose name matches one once case and punctuation
    are ignored (`Email`, `e-mail` for `email`); `sensitive_source` names the source fields that feed
    them under other names (`contact_mail` mapped to `email`). A run that dead-letters more than
    `alert_above` of what it read sends an alert.
    """

    policy: Policy = "quarantine"
    approve_above: float = 0.05
    approval_timeout_s: int = 3600
    approval_poll_s: float = 5.0
    volume_drop: float | None = None
    volume_history: int = 7
    volume_min_runs: int = 3
    max_age: timedelta | None = None
    age_field: str = "updated_at"
    sensitive: tuple[str, ...] = ()
    sensitive_source: tuple[str, ...] = ()
    alert_above: float = 0.1  # alert when a run dead-letters more than this share of the rows it read

    @property
    def masked(self) -> tuple[str, ...]:
        """Every field masked wherever shown: the sensitive columns and the source fields that feed them."""
        return tuple(dict.fromkeys(self.sensitive + self.sensitive_source))


@dataclass(frozen=True)
class SchemaContract:
    """The source fields an integration expects, with JSON types, and what to do when they change.

    `evolve` accepts a changed schema and records it; `freeze` fails the run with the diff.
    """

    version: str
    fields: dict[str, str] = field(default_factory=dict)  # name → "string" | "integer" | "number" | "boolean" | "list" | "object"
    on_change: Literal["evolve", "freeze"] = "evolve"
