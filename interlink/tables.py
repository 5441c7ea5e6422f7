"""Listings as rich tables: one row per record, long text cut, a run's id linked to the Prefect UI.

A table fits `WIDTH` columns, its text wrapped: the command shows its important columns (`pick`); `--wide`
shows them all on one line each, and a run's whole UI address where the output is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

WIDTH = 100  # columns a table fits, unless `--wide`
WIDE = 10_000  # columns of a `--wide` table when the output is not a terminal (a pipe, a file): rows are never wrapped or cut
LONG = 60  # characters of a cell's text in a `--wide` table; the rest is cut (`--json` has it all)
WHOLE = {"integration", "name", "kind", "state", "stage", "status", "healthy", "freshness"}  # never wrapped
WRAPPED = 240  # characters of a cell's text in a table that wraps


def pick(columns: dict[str, str], important: Iterable[str], wide: bool) -> dict[str, str]:
    """`columns`, or only the `important` ones (in their order) unless `wide`."""
    return columns if wide else {field: columns[field] for field in important}


def table(rows: list[dict[str, Any]], columns: dict[str, str], wide: bool = False) -> None:
    """Print `rows` under `columns` (field → heading) within `WIDTH` columns, text wrapped, or unwrapped if `wide`;
    a `url` in a row links its `flow_run_id` cell."""
    tty = sys.stdout.isatty()
    console = Console(width=(None if tty else WIDE) if wide else WIDTH, highlight=False)
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))  # two spaces between columns
    for field, heading in columns.items():
        numeric = field.startswith("rows_") or field in ("id", "latency_ms", "dead_letters")
        grid.add_column(heading, justify="right" if numeric else "left", overflow="ellipsis" if wide else "fold",
                        no_wrap=numeric or field in WHOLE or (wide and field != "error"))
    for row in rows:
        grid.add_row(*(_cell(field, row, wide) for field in columns))
    console.print(grid)


def _cell(field: str, row: dict[str, Any], wide: bool = True) -> Text:
    value = row.get(field)
    if value is None:
        return Text("")
    if field == "state":
        return Text(str(value), style={"COMPLETED": "green", "FAILED": "red", "CRASHED": "red"}.get(str(value), "yellow"))
    if field == "flow_run_id" and row.get("url") and sys.stdout.isatty():
        return Text(str(value)[:8], style=f"link {row['url']}")
    if field == "flow_run_id" and row.get("url") and wide:
        return Text(row["url"])
    if field == "flow_run_id":
        return Text(str(value)[:8])
    if field == "freshness":
        return Text(str(value), style="green" if value == "OK" else "red")
    if field == "healthy":
        return Text("yes" if value else "no", style="green" if value else "red")
    if isinstance(value, datetime):
        return Text(value.strftime("%Y-%m-%d %H:%M:%S"))
    text, longest = " ".join(str(value).split()), LONG if wide else WRAPPED
    return Text(text if len(text) <= longest else text[: longest - 1] + "…")
