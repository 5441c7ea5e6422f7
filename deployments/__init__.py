"""Deployments: schedules, parameters and tags of every integration, read from `deployments.yaml`.

Backfill or full refresh are parameters of the same deployment, e.g.
`prefect deployment run crm_to_billing/crm_to_billing --param full_refresh=true`.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from pydantic import BaseModel, Field

from flows import entrypoint, integration

DECLARATIONS = Path(__file__).with_name("deployments.yaml")


class Declared(BaseModel):
    integration: str
    flow: str = "sync"
    cron: str
    parameters: dict = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)

    @property
    def name(self) -> str:
        """`crm_to_billing` for a sync, `crm_to_billing-reconcile` for another flow."""
        return self.integration if self.flow == "sync" else f"{self.integration}-{self.flow}"


class Declarations(BaseModel):
    timezone: str
    retries: int = 0
    retry_delay_seconds: int = 60
    deployments: list[Declared]


def declarations(path: Path = DECLARATIONS) -> Declarations:
    return Declarations.model_validate(yaml.safe_load(path.read_text()))


def runner_deployments(path: Path = DECLARATIONS) -> list[RunnerDeployment]:
    """The declared deployments, ready for `prefect.serve`; one run at a time per deployment."""
    declared = declarations(path)
    deployments = []
    for d in declared.deployments:
        deployment = (
            getattr(integration(d.integration), d.flow)
            .with_options(retries=declared.retries, retry_delay_seconds=declared.retry_delay_seconds)
            .to_deployment(
                name=d.name,
                schedule=Cron(d.cron, timezone=declared.timezone),
                parameters=d.parameters,
                tags=d.tags,
                concurrency_limit=1,
            )
        )
        deployment.entrypoint = entrypoint(d.integration, d.flow)  # the pipeline's flow, not the factory inside
        deployments.append(deployment)
    return deployments
