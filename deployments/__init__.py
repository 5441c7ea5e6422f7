"""Deployments: schedules, parameters, tags and flow retries of every integration, read from `deployments.yaml`.

Backfill or full refresh are parameters of the same deployment, e.g.
`prefect deployment run crm_to_billing/crm_to_billing --param full_refresh=true`.

A Prefect deployment cannot carry flow retries: they belong to the flow, and every run (served or
run by a worker) loads the flow again from the deployment's entrypoint. So each deployment's
entrypoint is `deployments:DEPLOYED.<integration>.<flow>`, the pipeline's flow with the declared
`retries` and `retry_delay_seconds`, read from the declaration when the flow is loaded.
`INTERLINK_DEPLOYMENTS_FILE` names another declaration (for the process that serves and the
processes that run the flows alike).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.errors import ConfigError
from flows import integration
from interlink.settings import Settings, yaml_error

DECLARATIONS = Path(__file__).with_name("deployments.yaml")


class Declared(BaseModel):
    model_config = ConfigDict(extra="forbid")

    integration: str
    flow: str = "sync"
    cron: str
    parameters: dict = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    concurrency_limit: int | None = Field(None, ge=1)  # runs at once; the declaration's default if unset

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str) -> str:
        try:
            CronSchedule(cron=cron)  # Prefect's own check: five fields, each in range
        except ValidationError:
            raise ValueError(f"{cron!r} is not a cron string: write five fields (minute hour day month weekday), e.g. '0 2 * * *'") from None
        return cron

    @model_validator(mode="after")
    def _exists(self) -> Declared:
        pipeline = integration(self.integration)  # ConfigError: unknown integration, with the choices
        flows = [f for f in ("sync", "replay", "reconcile", "sync_partitioned") if f in dir(type(pipeline))]
        if self.flow not in flows:
            raise ValueError(f"flow {self.flow!r} is not a flow of {self.integration}: use one of {', '.join(flows)}")
        return self

    @property
    def name(self) -> str:
        """`crm_to_billing` for a sync, `crm_to_billing-reconcile` for another flow."""
        return self.integration if self.flow == "sync" else f"{self.integration}-{self.flow}"

    @property
    def entrypoint(self) -> str:
        """Where Prefect finds this deployment's flow, with the declared retries."""
        return f"{__name__}:DEPLOYED.{self.integration}.{self.flow}"


class Declarations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str
    retries: int = Field(0, ge=0)
    retry_delay_seconds: int = Field(60, ge=0)
    concurrency_limit: int = Field(1, ge=1)  # runs of one deployment at once, unless the deployment says otherwise
    work_pool: str = "interlink"  # the process work pool of `prefect.yaml`
    crash_after_s: int = Field(90, ge=1)  # a run with no heartbeat for this long is Crashed (deployments/automations.py)
    deployments: list[Declared]

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, timezone: str) -> str:
        try:
            CronSchedule(cron="0 0 * * *", timezone=timezone)  # Prefect's own check: an IANA name
        except ValidationError:
            raise ValueError(f"{timezone!r} is not a timezone: write an IANA name, e.g. Europe/Berlin or UTC") from None
        return timezone

    def limit(self, deployment: Declared) -> int:
        """How many runs of `deployment` Prefect lets run at once."""
        return deployment.concurrency_limit or self.concurrency_limit


def declarations_file() -> Path:
    """The declaration in use: `INTERLINK_DEPLOYMENTS_FILE`, or `deployments.yaml` next to this module."""
    named = Settings.load().deployments_file
    if named and not named.is_file():
        raise ConfigError(f"INTERLINK_DEPLOYMENTS_FILE names {named}, which is not a file: fix the path, or unset it to use {DECLARATIONS}")
    return named or DECLARATIONS


def declarations(path: Path | None = None) -> Declarations:
    """The declaration at `path`, by default the one in use (`declarations_file()`); a mistake in it is a
    `ConfigError` naming the file, the deployment and the key."""
    path = path or declarations_file()
    try:
        text = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error(path, exc)) from None
    try:
        return Declarations.model_validate(text)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_explain(exc.errors()[0], text)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _explain(error: dict, text: object) -> str:
    """`deployments[0] (crm_to_billing).cron: …` for a pydantic error in the declaration `text`."""
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


def deployed(integration_name: str, flow: str, declared: Declarations | None = None) -> Flow:
    """Flow `flow` (`sync`, `reconcile`, …) of an integration, with the declared flow retries."""
    declared = declared or declarations()
    return getattr(integration(integration_name), flow).with_options(
        retries=declared.retries, retry_delay_seconds=declared.retry_delay_seconds
    )


class Deployed:
    """`DEPLOYED.<integration>.<flow>`: the flow `deployed()` makes, as an attribute path for an entrypoint."""

    def __init__(self, integration_name: str | None = None):
        self._integration = integration_name

    def __getattr__(self, name: str) -> Deployed | Flow:
        if name.startswith("_"):
            raise AttributeError(name)
        return Deployed(name) if self._integration is None else deployed(self._integration, name)


DEPLOYED = Deployed()


def runner_deployments() -> list[RunnerDeployment]:
    """The declared deployments, ready for `prefect.serve`, each with its declared concurrency limit."""
    declared = declarations()
    deployments = []
    for d in declared.deployments:
        deployment = deployed(d.integration, d.flow, declared).to_deployment(
            name=d.name,
            schedule=Cron(d.cron, timezone=declared.timezone),
            parameters=d.parameters,
            tags=d.tags,
            concurrency_limit=declared.limit(d),
        )
        # Each run loads its flow again from the entrypoint, so it must be the flow with the options,
        # not the factory inside `flows.pipeline` that `to_deployment` points at.
        deployment.entrypoint = d.entrypoint
        deployments.append(deployment)
    return deployments
