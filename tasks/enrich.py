"""Enrich: look data up in another system, once per distinct value, never per record."""

from dataclasses import dataclass

import pandas as pd
from interlink.tasks.isolate import isolated
from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from interlink.settings import Settings


@dataclass(frozen=True)
class Lookup:
    """Enrich rows from another system, looking up each distinct value of `column` once per run.

    `fetch(connection, values)` returns what it found for each value (None if unknown);
    `apply(rows, found)` adds it to the rows. `cache` carries the finds across batches. `dataset` names what is
    looked up in the connection's system (a path, a table), for lineage.
    """

    connection: str
    column: str
    fetch: Task
    apply: Task
    dataset: str | None = None

    def enrich(self, settings: Settings, rows: pd.DataFrame, cache: dict) -> pd.DataFrame:
        missing = set(rows[self.column].dropna().unique()) - cache.keys()
        if missing:
            cache.update(self.fetch(settings.connection(self.connection), missing))
        return getattr(self.apply, "fn", self.apply)(rows, cache)  # inside the `enrich` task, which isolates failing rows


@task(name="enrich", cache_policy=NO_CACHE)
def enrich_batch(enricher: Lookup, settings: Settings, rows: pd.DataFrame, cache: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`enricher` on a batch; the rows it fails on for their values come back as failures instead of failing the batch."""
    return isolated(lambda part: enricher.enrich(settings, part, cache), rows)
