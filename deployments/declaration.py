"""The declaration in `deployments.yaml`, read without Prefect: schedules, and each integration's owner, SLA and retention.

The read-only commands (`interlink status`, `connectors`, …) need only this, so it imports neither Prefect nor
any integration: cron strings are checked by `cronsim`, timezones by `zoneinfo`. Whether each declared flow
exists is checked where flows are loaded (`deployments.declarations()`).

    integrations:
      crm_to_billing:
        owner: {team: Billing, contact: "#billing-oncall"}   # shown in the UI, `interlink status` and every alert
        sla: {fresh_within: 26h, done_by: "06:00"}           # a Completed sync at least every 26 h; the nightly one by 06:00
        retention: {dead_letters: 180d}                      # overrides the file's `retention` for this integration

Durations are a number and a unit, `s`, `m`, `h` or `d`, combined as in `1h30m`.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from cronsim import CronSim, CronSimError
from interlink.connectors.errors import ConfigError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

FLOWS = ("sync", "replay", "reconcile", "sync_partitioned")
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def duration(value: object) -> object:
    """`26h`, `90d`, `1h30m` → a timedelta; other values are left to pydantic (a timedelta, seconds)."""
    if not isinstance(value, str):
        return value
    found = _DURATION.fullmatch(value.strip())
    if not value.strip() or not found:
        raise ValueError(f"{value!r} is not a duration: write a number and a unit (s, m, h, d), e.g. 26h or 90d")
    days, hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def duration_text(value: timedelta) -> str:
    """A timedelta as it is declared: `26h`, `90d`, `1h30m`."""
    seconds, parts = int(value.total_seconds()), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and not (unit == "d" and seconds % 86400):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


Duration = Annotated[timedelta, BeforeValidator(duration), PlainSerializer(duration_text, return_type=str)]


def _cron(cron: str) -> str:
    try:
        CronSim(cron, datetime(2026, 1, 1))
    except CronSimError:
        raise ValueError(f"{cron!r} is not a cron string: write five fields (minute hour day month weekday), e.g. '0 2 * * *'") from None
    if len(cron.split()) != 5:
        raise ValueError(f"{cron!r} is not a cron string: write five fields (minute hour day month weekday), e.g. '0 2 * * *'")
    return cron


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Owner(Strict):
    """Who answers for an integration: a team and how to reach it (a channel or a team address, not a person's)."""

    team: str = Field(min_length=1)
    contact: str = Field(min_length=1)

    def __str__(self) -> str:
        return f"{self.team} ({self.contact})"


class Sla(Strict):
    """What the integration promises: a Completed sync at least every `fresh_within`, and each scheduled sync done by
    `done_by` (a wall-clock time in the declaration's timezone)."""

    fresh_within: Duration | None = None
    done_by: time | None = None

    @model_validator(mode="after")
    def _something(self) -> Sla:
        if self.fresh_within is None and self.done_by is None:
            raise ValueError("promises nothing: set fresh_within (e.g. 26h), done_by (e.g. '06:00') or both")
        return self


class Retention(Strict):
    """How long Interlink keeps what it records; None keeps it for ever. Open dead letters are never pruned."""

    dead_letters: Duration | None = None  # resolved and replayed ones
    runs: Duration | None = None  # ledger rows
    quality_results: Duration | None = None  # Great Expectations validation results
    reports: Duration | None = None  # HTML reports


class Integration(Strict):
    """What an integration declares about itself as a product."""

    owner: Owner
    sla: Sla | None = None
    retention: Retention = Retention()


class Declared(Strict):
    """One deployment: a flow of an integration on a schedule."""

    integration: str
    flow: str = "sync"
    cron: Annotated[str, BeforeValidator(_cron)]
    parameters: dict = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    concurrency_limit: int | None = Field(None, ge=1)  # runs at once; the declaration's default if unset

    @field_validator("flow")
    @classmethod
    def _flow(cls, flow: str) -> str:
        if flow not in FLOWS:
            raise ValueError(f"{flow!r} is not a flow: use one of {', '.join(FLOWS)}")
        return flow

    @property
    def name(self) -> str:
        """`crm_to_billing` for a sync, `crm_to_billing-reconcile` for another flow."""
        return self.integration if self.flow == "sync" else f"{self.integration}-{self.flow}"

    @property
    def entrypoint(self) -> str:
        """Where Prefect finds this deployment's flow, with the declared retries."""
        return f"interlink.deployments.runner:DEPLOYED.{self.integration}.{self.flow}"


class Declarations(Strict):
    """The whole file."""

    timezone: str
    retries: int = Field(0, ge=0)
    retry_delay_seconds: int = Field(60, ge=0)
    concurrency_limit: int = Field(1, ge=1)  # runs of one deployment at once, unless the deployment says otherwise
    work_pool: str = "interlink"  # the process work pool of `prefect.yaml`
    crash_after_s: int = Field(90, ge=1)  # a run with no heartbeat for this long is Crashed (deployments/automations.py)
    retention: Retention = Retention()  # every integration's, unless it says otherwise
    prune: Annotated[str, BeforeValidator(_cron)] | None = None  # when `interlink state prune` runs as a deployment
    integrations: dict[str, Integration] = Field(default_factory=dict)
    deployments: list[Declared]

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, timezone: str) -> str:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{timezone!r} is not a timezone: write an IANA name, e.g. Europe/Berlin or UTC") from None
        return timezone

    @model_validator(mode="after")
    def _owned(self) -> Declarations:
        for name in dict.fromkeys(d.integration for d in self.deployments):
            if name not in self.integrations:
                raise ValueError(f"integrations.{name} is not declared: give the deployed integration its owner, "
                                 f"e.g. integrations: {{{name}: {{owner: {{team: …, contact: …}}}}}}")
        return self

    def limit(self, deployment: Declared) -> int:
        """How many runs of `deployment` Prefect lets run at once."""
        return deployment.concurrency_limit or self.concurrency_limit

    def retention_of(self, integration: str) -> Retention:
        """The retention of `integration`: its own settings, the file's for the rest."""
        own = self.integrations[integration].retention if integration in self.integrations else Retention()
        return self.retention.model_copy(update={field: getattr(own, field) for field in own.model_fields_set})

    def sync_of(self, integration: str) -> Declared | None:
        """The deployment of `integration`'s sync, if it has one."""
        return next((d for d in self.deployments if d.integration == integration and d.flow == "sync"), None)

    def description(self, deployment: Declared) -> str:
        """The deployment's description in the Prefect UI: owner, SLA and the schedule's timezone."""
        declared = self.integrations[deployment.integration]
        lines = [f"Owner: {declared.owner}", f"Schedule: `{deployment.cron}` in {self.timezone}"]
        if declared.sla and deployment.flow == "sync":
            lines.append(f"SLA: {sla_text(declared.sla, self.timezone)}")
        return "\n\n".join(lines)


def sla_promises(sla: Sla, timezone: str) -> dict[str, str]:
    """Each promise of `sla` in words, by its key: `a Completed sync at least every 26h`, `each scheduled sync done by
    06:00 Europe/Berlin`."""
    promises = {}
    if sla.fresh_within is not None:
        promises["fresh_within"] = f"a Completed sync at least every {duration_text(sla.fresh_within)}"
    if sla.done_by is not None:
        promises["done_by"] = f"each scheduled sync done by {sla.done_by:%H:%M} {timezone}"
    return promises


def sla_text(sla: Sla, timezone: str) -> str:
    """Every promise of `sla` in words, in one line."""
    return "; ".join(sla_promises(sla, timezone).values())


def declarations_file() -> Path:
    """The declaration in use: `INTERLINK_DEPLOYMENTS_FILE`, or `deployments/deployments.yaml` in the project."""
    from interlink.settings import PREFIX, Settings, not_a_project

    path = Settings.load().deployments_file
    if not path.is_file():
        raise ConfigError(f"{PREFIX}DEPLOYMENTS_FILE names {path}, which is not a file: fix the path, or unset it"
                          if f"{PREFIX}DEPLOYMENTS_FILE" in os.environ else not_a_project(path, "DEPLOYMENTS_FILE"))
    return path


def read(path: Path | None = None) -> Declarations:
    """The declaration at `path`, by default the one in use; a mistake in it is a `ConfigError` naming the file,
    the deployment or integration, and the key."""
    from interlink.settings import yaml_error

    path = path or declarations_file()
    try:
        text = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error(path, exc)) from None
    try:
        return Declarations.model_validate(text)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_explain(exc.errors()[0], text)}") from None


def _explain(error: dict, text: object) -> str:
    """`deployments[0] (crm_to_billing sync).cron: …` for a pydantic error in the declaration `text`."""
    loc = list(error["loc"])
    where = ".".join(str(part) for part in loc if not isinstance(part, int)) or "the file"
    if loc[:1] == ["deployments"] and len(loc) > 1 and isinstance(loc[1], int):
        entry = text["deployments"][loc[1]] if isinstance(text, dict) else {}
        name = entry.get("integration", "?") if isinstance(entry, dict) else "?"
        flow = entry.get("flow", "sync") if isinstance(entry, dict) else ""
        where = f"deployments[{loc[1]}] ({name} {flow})" + "".join(f".{part}" for part in loc[2:])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "is not set"
    return f"{where}: {message[:1].lower()}{message[1:]}"
