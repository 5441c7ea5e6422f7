"""The state database's schema, versioned with Alembic: one revision per change, applied on first use.

`state_engine` calls `upgrade` once per process and database, so a database made by any earlier
release is brought up to date when Interlink starts (`interlink state upgrade` does it on demand).
The revisions live in `versions/`, shipped inside the package; Alembic is configured here, in
code, so no `alembic.ini` is needed.

Databases made before migrations existed (by `create_all` of an older `state.py`) have no version
table. `legacy_revision` reads which tables and columns they have and stamps them at the
revision whose schema they hold, then the later revisions run. Because `create_all` of a newer
release added that release's new tables to an old database but never its new columns, such a
database can hold a later table without an earlier column; the revisions up to
`0005_webhook_events` therefore only add what is missing.

The version is kept in `interlink_alembic_version`, not Alembic's default `alembic_version`, so
a state database that shares a database with another Alembic-managed application (a target, or
the Prefect server's own database) never mixes their histories.

A new schema change is a new file in `versions/` (`python -m interlink.migrations revision
"what changes"` writes one), with `state.py` changed to match; `tests/test_state_migrations.py`
checks that the two agree on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

VERSION_TABLE = "interlink_alembic_version"
LOCK_NAME = "interlink_state_migrations"
ATTEMPTS = 5
_HERE = Path(__file__).resolve().parent
_LOCK = threading.Lock()  # Alembic's `context` and `op` are module globals: one migration at a time per process

# The columns of `runs` in the first schema ever shipped (78e47b7): a `runs` table without them is not ours.
FIRST_RUN_COLUMNS = frozenset({
    "id", "integration", "kind", "flow_run_id", "state", "started_at", "finished_at", "rows_read", "rows_inserted",
    "rows_updated", "rows_unchanged", "rows_quarantined", "watermark_before", "watermark", "target", "report", "error",
})


class ForeignSchema(RuntimeError):
    """The state database holds a table of Interlink's name that is not Interlink's."""


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the state database, made in code; `connection` is the one to migrate."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("version_table", VERSION_TABLE)
    cfg.set_main_option("file_template", "%%(rev)s")  # revision ids are already `NNNN_what_changes`
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision."""
    return ScriptDirectory.from_config(config()).get_current_head()


def current(connection: Connection) -> str | None:
    """The revision the database at `connection` is stamped with (None: none yet)."""
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def legacy_revision(connection: Connection) -> str | None:
    """For a database made before migrations (Interlink's tables, no version table): the newest revision
    whose whole schema, and every earlier revision's, it already has. None for an empty or versioned database."""
    inspector = sa.inspect(connection)
    tables = set(inspector.get_table_names())
    if VERSION_TABLE in tables or not tables & {"runs", "dead_letters"}:
        return None
    runs = {c["name"] for c in inspector.get_columns("runs")} if "runs" in tables else set()
    if runs and not FIRST_RUN_COLUMNS <= runs:
        missing = ", ".join(sorted(FIRST_RUN_COLUMNS - runs))
        raise ForeignSchema(
            f"the state database has a table `runs` that is not Interlink's run ledger (it lacks {missing}): "
            "point INTERLINK_STATE_URL at a database (or PostgreSQL schema) of Interlink's own"
        )
    present = [
        ("0001_first_schema", bool(runs) and "dead_letters" in tables),
        ("0002_delivered", "delivered" in tables),
        ("0003_circuits", "circuits" in runs),
        ("0004_decision_notes", {"decision", "notes"} <= runs),
        ("0005_webhook_events", "webhook_events" in tables),
    ]
    stamp = None
    for revision, found in present:
        if not found:
            break
        stamp = revision
    return stamp


def has_table(name: str) -> bool:
    """In a revision: whether the database being migrated has table `name` (revisions 0001-0005 add only what is missing)."""
    return sa.inspect(op.get_bind()).has_table(name)


def has_column(table: str, column: str) -> bool:
    """In a revision: whether `table` of the database being migrated has `column`."""
    return column in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the state database at `engine` to `revision` (the newest by default); returns the revisions
    before and after. Another process migrating the same database at the same moment is waited for."""
    with _LOCK:
        for attempt in range(ATTEMPTS):
            try:
                return _upgrade(engine, revision)
            except sa.exc.DBAPIError:
                # e.g. SQLite's lock not had within its busy timeout: look again, and find the work done or still to do.
                if attempt == ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def downgrade(engine: Engine, revision: str) -> None:
    """Take the state database at `engine` back to `revision` ("base": nothing). For development and tests."""
    with _LOCK, engine.connect() as conn, _exclusive(conn):
        command.downgrade(config(conn), revision)
        conn.commit()


def _upgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    with engine.connect() as conn:
        if revision == "head" and (newest := head()) == current(conn):  # the usual case: no lock to take
            return newest, newest
        conn.rollback()
        with _exclusive(conn):
            return _migrate(conn, revision)


def _migrate(conn: Connection, revision: str) -> tuple[str | None, str | None]:
    before = current(conn)
    if before is None and (legacy := legacy_revision(conn)):
        command.stamp(config(conn), legacy)
        before = legacy
    if revision == "head" and before == head():
        conn.commit()
        return before, before
    command.upgrade(config(conn), revision)
    after = current(conn)
    conn.commit()
    return before, after


@contextmanager
def _exclusive(conn: Connection) -> Iterator[None]:
    """Hold the database's migration lock: PostgreSQL's advisory lock (until commit), MariaDB's named lock, and on
    SQLite its write lock, taken at once (which also makes SQLite's DDL one transaction: no half-made revision)."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield
    elif dialect == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": LOCK_NAME})
        yield
    elif dialect in ("mysql", "mariadb"):
        got = conn.execute(sa.text("SELECT GET_LOCK(:name, 120)"), {"name": LOCK_NAME}).scalar()
        if got != 1:
            raise TimeoutError(f"another process held the state database's migration lock ({LOCK_NAME}) for 120s")
        try:
            yield
        finally:
            try:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
            except sa.exc.DBAPIError:
                conn.invalidate()  # a named lock lives as long as its session: never hand a pooled one back holding it
    else:
        yield
