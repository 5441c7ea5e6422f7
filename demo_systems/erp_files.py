"""The ERP's stock export: CSV files dropped into a folder.

Each file lists stock per sku and warehouse (`W1`, `W2`), so a reader has to sum
the rows of a sku. Files appear atomically: they are written under a hidden
temporary name in the same folder and then renamed, so a reader never sees half a
file. Generated names sort in the order the files were written.
"""

from __future__ import annotations

import csv
import os
import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from interlink.demo_systems.crm_data import format_ts

WAREHOUSES = ("W1", "W2")
COLUMNS = ("sku", "warehouse", "on_hand", "exported_at")
MAX_STOCK = 500  # stock_changes picks new levels from 0..MAX_STOCK


def _split(sku: str, on_hand: int) -> list[tuple[str, int]]:
    """The stock of one sku over one or two warehouses; the same input always splits the same way."""
    rng = random.Random(f"{sku}:{on_hand}")
    if on_hand == 0 or rng.random() < 0.5:
        return [(rng.choice(WAREHOUSES), on_hand)]
    first = rng.randint(0, on_hand)
    return [(WAREHOUSES[0], first), (WAREHOUSES[1], on_hand - first)]


def _file_name(moment: datetime) -> str:
    return f"stock_{moment.astimezone(UTC):%Y%m%dT%H%M%S%fZ}.csv"


def write_stock_export(folder: Path, stock: dict[str, int], name: str | None = None) -> Path:
    """Write `stock` (on hand per sku) as a CSV export in `folder`, atomically; return its path.

    Without `name` the file is called stock_<UTC timestamp with microseconds>.csv, moved on by a
    microsecond while a file of that name exists. A given `name` replaces any file of that name.
    """
    if bad := sorted(sku for sku, on_hand in stock.items() if type(on_hand) is not int or on_hand < 0):
        raise ValueError(f"stock must be integers >= 0; not for {', '.join(bad[:5])}")
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    exported_at = format_ts(now)
    handle = tempfile.NamedTemporaryFile(
        "w", newline="", encoding="utf-8", dir=folder, prefix=".stock_", suffix=".tmp", delete=False
    )
    try:
        with handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for sku in sorted(stock):
                writer.writerows((sku, warehouse, on_hand, exported_at) for warehouse, on_hand in _split(sku, stock[sku]))
            handle.flush()
            os.fsync(handle.fileno())
        if name is None:
            while (folder / _file_name(now)).exists():
                now += timedelta(microseconds=1)
            name = _file_name(now)
        target = folder / name
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return target


def stock_changes(stock: dict[str, int], count: int, seed: int | None = None) -> dict[str, int]:
    """A copy of `stock` with `count` skus set to a new level (0..MAX_STOCK, never the old one)."""
    if count > len(stock):
        raise ValueError(f"only {len(stock)} skus to change, {count} requested")
    rng = random.Random(seed)
    changed = dict(stock)
    for sku in rng.sample(sorted(stock), count):
        level = rng.randrange(MAX_STOCK)
        changed[sku] = level + 1 if level >= stock[sku] else level
    return changed
