"""Listings as rich tables: one row per record, long text cut, a run's id linked to the Prefect UI."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

WIDE = 10_000  # columns when the output is not a terminal (a pipe, a file): rows are never wrapped or cut
LONG = 60  # characters of a cell's text; the rest is cut (`--json` has it all)


def table(rows: list[dict[str, Any]], columns: dict[str, str]) -> None:
    """Print `rows` under `columns` (field → heading); a `url` in a row links its `flow_run_id` cell."""
    console = Console(width=None if sys.stdout.isatty() else WIDE, highlight=False)
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for field, heading in columns.items():
        numeric = field.startswith("rows_") or field in ("id", "latency_ms")
        grid.add_column(heading, justify="right" if numeric else "left", overflow="ellipsis", no_wrap=field != "error")
    for row in rows:
        grid.add_row(*(_cell(field, row) for field in columns))
    console.print(grid)


def _cell(field: str, row: dict[str, Any]) -> Text:
    value = row.get(field)
    if value is None:
        return Text("")
    if field == "state":
        return Text(str(value), style={"COMPLETED": "green", "FAILED": "red", "CRASHED": "red"}.get(str(value), "yellow"))
    if field == "flow_run_id" and row.get("url") and sys.stdout.isatty():
        return Text(str(value)[:8], style=f"link {row['url']}")
    if field == "flow_run_id" and row.get("url"):
        return Text(row["url"])
    if field == "healthy":
        return Text("yes" if value else "no", style="green" if value else "red")
    if isinstance(value, datetime):
        return Text(value.strftime("%Y-%m-%d %H:%M:%S"))
    text = " ".join(str(value).split())
    return Text(text if len(text) <= LONG else text[: LONG - 1] + "…")
