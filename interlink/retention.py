"""Retention: what Interlink records, kept as long as the declaration says (`retention:` in deployments.yaml), no longer.

Four stores, each pruned per integration by that integration's retention (`Declarations.retention_of`; an integration
the declaration does not name has the file-wide one, unset keeps for ever):

- `dead_letters`: resolved and replayed dead letters, by when they were closed (`updated_at`). Open ones never.
- `runs`: ledger rows of ended runs, by their end (their start if the end was never recorded). RUNNING rows never.
- `quality_results`: Great Expectations validation results, `<home>/gx/gx/uncommitted/validations/<suite>/<run>/<time>/`.
- `reports`: the per-run Data Docs pages, `<home>/reports/validations/<suite>/<run>/<time>/`. The site's index, its
  suite pages and the quality report (`interlink report` rebuilds it) are not per run and stay.

A result or page belongs to the integration whose ledger row has its run (the folder's name is the flow run id), as
the ledger was when the prune started. One whose run the ledger has no row of (a run outside Prefect, or one whose row
was pruned first) is kept as long as the longest retention declared for its store, so that no integration's own
retention is cut short by its ledger's. Its time is the validation's, as GX names its folder.

Each SQL store is pruned in one transaction: on any error nothing of it is removed. Files have no transactions: a
file store's list is made first (the GX results under the GX project's lock, which validations hold too), then its
files are deleted, each integration's oldest run first; an error stops there, so all that was removed was past its
retention, and the next prune removes the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from interlink.connectors.sql import utcnow
from interlink.deadletter import REPLAYED, RESOLVED
from interlink.state import DEAD_LETTERS, RUNS, state_engine

if TYPE_CHECKING:
    from interlink.deployments.declaration import Declarations, Retention
    from interlink.settings import Settings

STORES = {"dead_letters": "dead letters", "runs": "ledger rows", "quality_results": "GX results", "reports": "run reports"}
KEPT = {"dead_letters": "resolved or replayed", "runs": "ended runs", "quality_results": "results", "reports": "pages"}
RUNNING = "RUNNING"  # interlink.ledger.RUNNING: that module imports Prefect, which the command does not need
RUN_TIME = "%Y%m%dT%H%M%S.%fZ"  # how GX names a validation's folder (RunIdentifier.to_tuple)


@dataclass(frozen=True)
class Pruned:
    """What one store holds of one integration past its retention: removed, or (a dry run) what would be."""

    store: str  # a `Retention` field: dead_letters, runs, quality_results, reports
    integration: str | None  # None: results and reports of runs the ledger has no row of (kept the longest)
    keep: timedelta | None  # the retention; None keeps for ever
    removed: int
    oldest_kept: datetime | None  # UTC, of what the retention applies to (e.g. the oldest resolved dead letter left)
    applied: bool

    def line(self) -> str:
        """`dead letters crm_to_billing: would remove 3 (resolved or replayed, older than 180d); oldest kept …`."""
        from interlink.deployments.declaration import duration_text

        who = self.integration or "runs without a ledger row"
        if self.keep is None:
            done = "kept for ever (no retention declared)"
        else:
            done = f"{'removed' if self.applied else 'would remove'} {self.removed} ({KEPT[self.store]}, older than {duration_text(self.keep)})"
        oldest = f"; oldest kept {self.oldest_kept:%Y-%m-%d %H:%M} UTC" if self.oldest_kept else ""
        return f"{STORES[self.store]:<12} {who}: {done}{oldest}"

    def as_dict(self) -> dict:
        from interlink.deployments.declaration import duration_text

        return asdict(self) | {"keep": self.keep and duration_text(self.keep)}


def prune(settings: Settings, declared: Declarations, *, apply: bool = False) -> list[Pruned]:
    """Find, per store and integration, what is older than its retention, and remove it if `apply`; returns it."""
    engine = state_engine(settings.state_db)
    with engine.connect() as conn:  # read before the ledger is pruned: results and reports are owned through it
        owners = dict(conn.execute(sa.select(RUNS.c.flow_run_id, RUNS.c.integration).where(RUNS.c.flow_run_id.is_not(None))).all())
    named = set(declared.integrations)

    every = [declared.retention, *map(declared.retention_of, named)]
    longest = declared.retention.model_copy(update={
        store: None if any(getattr(r, store) is None for r in every) else max(getattr(r, store) for r in every) for store in STORES
    })

    def retention_of(integration: str | None) -> Retention:
        return longest if integration is None else declared.retention_of(integration)

    from interlink.data_checks.gate import RESULTS, exclusive

    now = utcnow()
    found = [
        *_prune_table(engine, "dead_letters", DEAD_LETTERS, DEAD_LETTERS.c.status.in_((RESOLVED, REPLAYED)),
                      DEAD_LETTERS.c.updated_at, named, retention_of, now, apply),
        *_prune_table(engine, "runs", RUNS, RUNS.c.state != RUNNING, sa.func.coalesce(RUNS.c.finished_at, RUNS.c.started_at),
                      named, retention_of, now, apply),
    ]
    with exclusive(settings.home):
        found += _prune_folders(settings.home / "gx" / "gx" / RESULTS, "quality_results", owners, named, retention_of, now, apply)
    found += _prune_folders(settings.reports_dir / "validations", "reports", owners, named, retention_of, now, apply)
    return found


def _prune_table(
    engine: sa.Engine, store: str, table: sa.Table, kept: sa.ColumnElement, when: sa.ColumnElement, named: set[str],
    retention_of: Callable[[str | None], Retention], now: datetime, apply: bool,
) -> list[Pruned]:
    """Rows `kept` (the ones a retention applies to) older than their integration's retention, by `when`; one transaction."""
    found = []
    with engine.begin() as conn:
        present = set(conn.scalars(sa.select(table.c.integration).where(kept).distinct()))
        for integration in sorted(present | named):
            keep = getattr(retention_of(integration), store)
            mine = sa.and_(table.c.integration == integration, kept)
            old = sa.and_(mine, when < now - keep) if keep is not None else sa.false()
            if keep is None:
                removed = 0
            elif apply:
                removed = conn.execute(table.delete().where(old)).rowcount
            else:
                removed = conn.scalar(sa.select(sa.func.count()).select_from(table).where(old))
            oldest = conn.scalar(sa.select(sa.func.min(when)).where(mine, sa.not_(old)))
            found.append(Pruned(store, integration, keep, removed, oldest, apply))
    return found


def _prune_folders(
    root: Path, store: str, owners: dict[str, str], named: set[str], retention_of: Callable[[str | None], Retention],
    now: datetime, apply: bool,
) -> list[Pruned]:
    """The run folders under `root` (`<suite>/<run>/<time>/`) older than their integration's retention: listed, then
    (`apply`) their files deleted oldest first and the folders left empty removed."""
    runs: dict[str | None, list[tuple[datetime, Path]]] = {}
    for folder in root.glob("*/*/*"):
        try:
            when = datetime.strptime(folder.name, RUN_TIME)
        except ValueError:
            continue  # not a folder GX made
        runs.setdefault(owners.get(folder.parent.name), []).append((when, folder))
    found = []
    for integration in sorted(runs.keys() | named, key=lambda name: (name is None, name or "")):
        keep = getattr(retention_of(integration), store)
        mine = sorted(runs.get(integration, []))
        old = [folder for when, folder in mine if keep is not None and when < now - keep]  # the oldest runs: a prefix
        files = [path for folder in old for path in sorted(folder.rglob("*")) if path.is_file()]
        if apply:
            _delete(files, old, root)
        oldest = mine[len(old)][0] if len(mine) > len(old) else None
        found.append(Pruned(store, integration, keep, len(files), oldest, apply))
    return found


def _delete(files: Iterable[Path], folders: Iterable[Path], root: Path) -> None:
    """Delete `files`, then each of `folders` and its parents up to `root` that are left empty."""
    for path in files:
        path.unlink()
    for folder in folders:
        for empty in [*(p for p in sorted(folder.rglob("*"), reverse=True) if p.is_dir()), folder, folder.parent, folder.parent.parent]:
            if empty != root and empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()
