"""Enrich: look data up in another system, once per distinct value, never per record."""

from dataclasses import dataclass

import pandas as pd
from prefect import Task

from interlink.settings import Settings


@dataclass(frozen=True)
class Lookup:
    """Enrich rows from another system, looking up each distinct value of `column` once per run.

    `fetch(connection, values)` returns what it found for each value (None if unknown);
    `apply(rows, found)` adds it to the rows. `cache` carries the finds across batches.
    """

    connection: str
    column: str
    fetch: Task
    apply: Task

    def enrich(self, settings: Settings, rows: pd.DataFrame, cache: dict) -> pd.DataFrame:
        missing = set(rows[self.column].dropna().unique()) - cache.keys()
        if missing:
            cache.update(self.fetch(settings.connection(self.connection), missing))
        return self.apply(rows, cache)
