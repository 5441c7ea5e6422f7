"""The declared deployments as Prefect's runner serves them, each flow with the declared flow retries.

Backfill or full refresh are parameters of the same deployment, e.g.
`prefect deployment run crm_to_billing/crm_to_billing --param full_refresh=true`.

A Prefect deployment cannot carry flow retries: they belong to the flow, and every run (served or
run by a worker) loads the flow again from the deployment's entrypoint. So each deployment's
entrypoint is `interlink.deployments.runner:DEPLOYED.<integration>.<flow>`, the pipeline's flow with the declared
`retries` and `retry_delay_seconds`, read from the declaration when the flow is loaded.
`INTERLINK_DEPLOYMENTS_FILE` names another declaration (for the process that serves and the
processes that run the flows alike).
"""

from __future__ import annotations

from pathlib import Path

from interlink.connectors.errors import ConfigError
from interlink.deployments import prune
from interlink.deployments.declaration import Declarations, read
from interlink.flows import integration
from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron


def declarations(path: Path | None = None) -> Declarations:
    """The declaration (`interlink.deployments.declaration.read`), each deployment's integration and flow checked to exist."""
    declared = read(path)
    for index, d in enumerate(declared.deployments):
        try:
            pipeline = integration(d.integration)
        except ConfigError as exc:
            raise ConfigError(f"{path or 'the deployments declaration'}: deployments[{index}] ({d.integration} {d.flow}): {exc}") from None
        if d.flow not in dir(type(pipeline)):
            raise ConfigError(f"{path or 'the deployments declaration'}: deployments[{index}] ({d.integration} {d.flow}).flow: "
                              f"{d.flow!r} is not a flow of {d.integration}")
    return declared


def deployed(integration_name: str, flow: str, declared: Declarations | None = None) -> Flow:
    """Flow `flow` (`sync`, `reconcile`, …) of an integration, with the declared flow retries."""
    declared = declared or read()
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
    """The declared deployments, ready for `prefect.serve`, each with its declared concurrency limit, and its owner,
    SLA and timezone in its description; and the retention prune (`interlink.deployments.prune`) if `prune:` is declared."""
    declared = declarations()
    deployments = []
    for d in declared.deployments:
        deployment = deployed(d.integration, d.flow, declared).to_deployment(
            name=d.name,
            schedule=Cron(d.cron, timezone=declared.timezone),
            parameters=d.parameters,
            tags=d.tags,
            concurrency_limit=declared.limit(d),
            description=declared.description(d),
        )
        # Each run loads its flow again from the entrypoint, so it must be the flow with the options,
        # not the factory inside `interlink.flows.pipeline` that `to_deployment` points at.
        deployment.entrypoint = d.entrypoint
        deployments.append(deployment)
    if declared.prune:  # `interlink state prune --apply` on the declared schedule
        deployment = prune.declared_flow(declared).to_deployment(
            name=prune.NAME, schedule=Cron(declared.prune, timezone=declared.timezone), concurrency_limit=1,
            description=prune.description(declared),
        )
        deployment.entrypoint = prune.ENTRYPOINT
        deployments.append(deployment)
    return deployments
