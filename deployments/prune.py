"""`interlink state prune --apply` as a flow, for the deployment that runs it on the declared `prune:` schedule.

Its entrypoint is `interlink.deployments.prune:DECLARED`: the flow with the declared `retries` and `retry_delay_seconds`, read
from the declaration when a run loads it, as `interlink.deployments.runner:DEPLOYED` does for the integrations.
"""

from __future__ import annotations

from interlink.deployments.declaration import Declarations, duration_text, read
from prefect import Flow, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from interlink.retention import STORES, prune
from interlink.settings import Settings

NAME = "interlink-prune"
ENTRYPOINT = "interlink.deployments.prune:DECLARED"


@flow(name=NAME)
def prune_flow() -> list[dict]:
    """Remove what is older than its declared retention; log a line per store and integration, publish the table as a
    markdown artifact, and return what was removed."""
    pruned = prune(Settings.load(), read(), apply=True)
    logger = get_run_logger()
    for found in pruned:
        logger.info(found.line())
    rows = [
        f"| {STORES[p.store]} | {p.integration or 'runs without a ledger row'} | {duration_text(p.keep) if p.keep else 'for ever'} "
        f"| {p.removed} | {f'{p.oldest_kept:%Y-%m-%d %H:%M} UTC' if p.oldest_kept else ''} |"
        for p in pruned
    ]
    create_markdown_artifact(
        key=NAME,
        markdown="\n".join(["# Pruned", "| store | integration | kept | removed | oldest kept |", "|---|---|---|---|---|", *rows]),
        description="what the retention prune removed",
    )
    return [p.as_dict() for p in pruned]


def declared_flow(declared: Declarations) -> Flow:
    """The prune flow with the declared flow retries."""
    return prune_flow.with_options(retries=declared.retries, retry_delay_seconds=declared.retry_delay_seconds)


def description(declared: Declarations) -> str:
    """The deployment's description in the Prefect UI: what it removes, how long each store keeps, and when it runs."""
    kept = ", ".join(f"{STORES[store]} {duration_text(keep) if keep else 'for ever'}" for store, keep in declared.retention)
    return "\n\n".join([
        "Removes what is older than its retention (`retention:` in deployments.yaml; integrations may keep longer or "
        "shorter): resolved and replayed dead letters, ended runs' ledger rows, Great Expectations results and per-run "
        "reports. Open dead letters are never removed.",
        f"File-wide retention: {kept}",
        f"Schedule: `{declared.prune}` in {declared.timezone}",
    ])


def __getattr__(name: str) -> Flow:
    if name != "DECLARED":
        raise AttributeError(name)
    return declared_flow(read())
