"""What each integration's latest run said about itself: the connections it uses and the fields it masks.

A run writes them as it starts (`interlink.flows.pipeline.ledgered`); the read-only commands read them, as importing the
integrations (Prefect and GX, about 2 s) is most of what they would cost: `interlink connectors` checks the
connections of the declared integrations, `interlink dlq list` masks each integration's sensitive fields.
An integration with no row yet (not run since this table exists) is loaded instead (`flows`), slower; so is
every one when the state database does not answer (`interlink connectors` must work then too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from interlink.connectors.sql import upsert, utcnow
from interlink.state import INTEGRATION_FACTS, state_engine


@dataclass(frozen=True)
class Facts:
    connections: tuple[str, ...]
    masked: tuple[str, ...]


def record(url: str, integration: str, connections: Sequence[str], masked: Sequence[str]) -> None:
    """Note what `integration` uses and masks now (its run is starting)."""
    row = {"integration": integration, "connections": list(dict.fromkeys(connections)), "masked": list(masked), "recorded_at": utcnow()}
    with state_engine(url).begin() as conn:
        upsert(conn, INTEGRATION_FACTS, [row], keys=["integration"])


def recorded(url: str) -> dict[str, Facts]:
    """Every integration's facts as its latest run recorded them."""
    with state_engine(url).connect() as conn:
        rows = conn.execute(sa.select(INTEGRATION_FACTS)).all()
    return {row.integration: Facts(tuple(row.connections), tuple(row.masked)) for row in rows}


def facts(url: str | None, integrations: Iterable[str]) -> dict[str, Facts]:
    """The facts of `integrations`: as recorded, else from the integration's module (loaded only for those missing).
    An integration that neither has is left out."""
    wanted = list(dict.fromkeys(integrations))
    try:
        known = recorded(url) if url else {}
    except sa.exc.SQLAlchemyError:
        known = {}
    found = {name: known[name] for name in wanted if name in known}
    missing = [name for name in wanted if name not in found]
    if missing:
        from interlink.flows import integrations as loaded

        pipelines = loaded()
        for name in missing:
            if name in pipelines:
                pipeline = pipelines[name][1]
                found[name] = Facts(tuple(dict.fromkeys(pipeline.connections)), tuple(pipeline.gate.masked))
    return found
