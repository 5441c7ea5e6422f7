"""The state database's migrations: a database made by any earlier release is upgraded on start, on
SQLite, PostgreSQL and MariaDB, and afterwards holds exactly the schema `interlink/state.py` declares.

The historical schemas below are copies of `interlink/state.py` as each release shipped it
(`git log -- interlink/state.py`), as `create_all` made them: no version table.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import mysql

from interlink import migrations
from interlink.cli import main
from interlink.deadletter import OPEN, DeadLetters, Reject
from interlink.delivered import Delivered
from interlink.ledger import Counts, Ledger
from interlink.state import METADATA, WEBHOOK_EVENTS, state_engine
from tests.conftest import reset_tables, service_url

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
STATE_TABLES = ("runs", "dead_letters", "delivered", "webhook_events", "integration_facts", migrations.VERSION_TABLE)


def schema_78e47b7(m: sa.MetaData) -> None:
    """The first schema: the run ledger and the dead-letter store."""
    sa.Table(
        "runs", m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("integration", sa.String(100), nullable=False, index=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("flow_run_id", sa.String(36)),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp),
        sa.Column("rows_read", sa.Integer, nullable=False, default=0),
        sa.Column("rows_inserted", sa.Integer, nullable=False, default=0),
        sa.Column("rows_updated", sa.Integer, nullable=False, default=0),
        sa.Column("rows_unchanged", sa.Integer, nullable=False, default=0),
        sa.Column("rows_quarantined", sa.Integer, nullable=False, default=0),
        sa.Column("watermark_before", sa.String(64)),
        sa.Column("watermark", sa.String(64)),
        sa.Column("target", sa.String(500), nullable=False),
        sa.Column("report", sa.String(1000)),
        sa.Column("error", sa.Text),
    )
    sa.Table(
        "dead_letters", m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("integration", sa.String(100), nullable=False),
        sa.Column("record_key", sa.String(200), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("values", sa.JSON, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("flow_run_id", sa.String(36)),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.UniqueConstraint("integration", "record_key"),
    )


def schema_f539834(m: sa.MetaData) -> None:
    """+ the delivered-hash store."""
    schema_78e47b7(m)
    sa.Table(
        "delivered", m,
        sa.Column("integration", sa.String(100), primary_key=True),
        sa.Column("record_key", sa.String(200), primary_key=True),
        sa.Column("row_hash", sa.String(16), nullable=False),
        sa.Column("delivered_at", Timestamp, nullable=False),
    )


def schema_27594f7(m: sa.MetaData) -> None:
    """+ runs.circuits."""
    schema_f539834(m)
    m.tables["runs"].append_column(sa.Column("circuits", sa.String(500)))


def schema_ffe20d7(m: sa.MetaData) -> None:
    """+ runs.decision, runs.notes."""
    schema_27594f7(m)
    m.tables["runs"].append_column(sa.Column("decision", sa.String(1000)))
    m.tables["runs"].append_column(sa.Column("notes", sa.Text))


def schema_9c189b8(m: sa.MetaData) -> None:
    """+ the webhook event store: the last schema made by create_all."""
    schema_ffe20d7(m)
    sa.Table(
        "webhook_events", m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("integration", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("flow_run_id", sa.String(36)),
        sa.Column("error", sa.Text),
        sa.UniqueConstraint("integration", "event_id"),
    )


def made_by_78e47b7_then_run_by_9c189b8(engine: sa.Engine) -> None:
    """The field case: a first-release database that a later release's create_all extended. create_all added
    the new tables (delivered, webhook_events) but never the new columns, so `runs` has no `circuits`."""
    old, new = sa.MetaData(), sa.MetaData()
    schema_78e47b7(old)
    old.create_all(engine)
    schema_9c189b8(new)
    new.create_all(engine)


RELEASES = {  # release: (how its state database was made, the revision it is stamped at)
    "78e47b7": (schema_78e47b7, "0001_first_schema"),
    "f539834": (schema_f539834, "0002_delivered"),
    "27594f7": (schema_27594f7, "0003_circuits"),
    "ffe20d7": (schema_ffe20d7, "0004_decision_notes"),
    "9c189b8": (schema_9c189b8, "0005_webhook_events"),
    "78e47b7+9c189b8": (made_by_78e47b7_then_run_by_9c189b8, "0002_delivered"),
}


def make(engine: sa.Engine, release: str) -> None:
    build, _ = RELEASES[release]
    if release == "78e47b7+9c189b8":
        build(engine)
        return
    metadata = sa.MetaData()
    build(metadata)
    metadata.create_all(engine)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def state_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty state database of each dialect, not yet opened by Interlink in this process."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = service_url(request.param, "state")  # a schema of its own: schema_diff compares all of it
        reset_tables(url, *STATE_TABLES)
    forget(url)
    yield url
    forget(url)
    if request.param != "sqlite":
        reset_tables(url, *STATE_TABLES)


def forget(url: str) -> None:
    """Forget the process's engines, so the next use of `url` upgrades its database again."""
    state_engine.cache_clear()


def schema_diff(url: str) -> list:
    """What differs between the database at `url` and `state.py` (besides the version table)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": migrations.VERSION_TABLE, "compare_type": True})
        diff = compare_metadata(context, METADATA)
    engine.dispose()
    return diff


def revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = migrations.current(conn)
    engine.dispose()
    return found


def test_an_empty_database_gets_the_newest_schema_from_the_first_revision(state_url):
    Ledger(state_url)
    assert revision(state_url) == migrations.head() == "0009_run_trace"
    assert schema_diff(state_url) == []


@pytest.mark.parametrize("release", list(RELEASES))
def test_an_older_state_database_is_stamped_upgraded_and_ledgers_a_run(state_url, release):
    """The reported bug: an older state database failed after delivering (`no such column: circuits`) and left
    its row RUNNING. Now it is upgraded when first used; its old rows stay, and a run is ledgered in full."""
    engine = sa.create_engine(state_url)
    make(engine, release)
    started = datetime(2026, 11, 1, 2, 0)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO runs (integration, kind, flow_run_id, state, started_at, finished_at, rows_read, rows_inserted,"
                " rows_updated, rows_unchanged, rows_quarantined, watermark_before, watermark, target)"
                " VALUES ('crm_to_billing', 'sync', 'old-run', 'COMPLETED', :t, :t, 7, 5, 1, 0, 1, NULL, 'w-old', 'sqlite:///b.db')"
            ),
            {"t": started},
        )
        conn.execute(
            sa.text(
                "INSERT INTO dead_letters (integration, record_key, stage, reason, {values}, payload, status, flow_run_id,"
                " created_at, updated_at) VALUES ('crm_to_billing', 'C-old', 'check', 'email malformed', '{{}}', '[]', 'open',"
                " 'old-run', :t, :t)".format(values=engine.dialect.identifier_preparer.quote("values"))
            ),
            {"t": started},
        )
        assert migrations.legacy_revision(conn) == RELEASES[release][1]
    engine.dispose()

    ledger = Ledger(state_url)  # upgrades
    with ledger.record("crm_to_billing", kind="sync", flow_run_id="new-run", target="sqlite:///b.db", watermark="w-old") as entry:
        entry.counts = Counts(rows_read=10, rows_inserted=6, rows_quarantined=2, rows_superseded=2)
        entry.watermark, entry.circuits, entry.decision = "w-new", "crm opened 1x, now closed", "approved by ana"
        entry.notes.append("schema evolved")
    new, old = ledger.runs("crm_to_billing")
    assert (new["state"], new["error"], new["watermark"], new["circuits"], new["notes"]) == (
        "QUARANTINED", None, "w-new", "crm opened 1x, now closed", "schema evolved",
    )
    assert (new["rows_read"], new["rows_inserted"], new["rows_quarantined"], new["rows_superseded"]) == (10, 6, 2, 2)
    assert new["pid"] and new["host"] and new["process_started_at"]
    assert (old["flow_run_id"], old["state"], old["rows_read"], old["watermark"], old["rows_superseded"], old["pid"]) == (
        "old-run", "QUARANTINED", 7, "w-old", 0, None,  # completed with 1 row dead-lettered: renamed by 0007
    )
    letters = DeadLetters(state_url)
    letters.put("crm_to_billing", [Reject("C-new", "check", "phone not E.164", {"phone": "12"}, [{"id": "C-new"}])], "new-run")
    assert [e["record_key"] for e in letters.entries("crm_to_billing", OPEN)] == ["C-old", "C-new"]
    Delivered(state_url).record("inventory_to_storefront", {"SKU-1": "abc"})
    assert Delivered(state_url).hashes("inventory_to_storefront", ["SKU-1"]) == {"SKU-1": "abc"}
    with state_engine(state_url).begin() as conn:
        conn.execute(WEBHOOK_EVENTS.insert().values(
            integration="orders_to_erp", event_id="e1", received_at=started, payload={}, status="received",
        ))
    assert revision(state_url) == migrations.head()
    assert schema_diff(state_url) == []


def test_a_database_already_at_the_newest_revision_is_left_as_it_is(state_url):
    engine = sa.create_engine(state_url)
    assert migrations.upgrade(engine) == (None, migrations.head())
    assert migrations.upgrade(engine) == (migrations.head(), migrations.head())
    engine.dispose()


def test_every_revision_goes_down_and_up_again(state_url):
    engine = sa.create_engine(state_url)
    migrations.upgrade(engine)
    migrations.downgrade(engine, "base")
    assert set(sa.inspect(engine).get_table_names()) == {migrations.VERSION_TABLE}
    assert migrations.upgrade(engine) == (None, migrations.head())
    engine.dispose()
    assert schema_diff(state_url) == []


def test_a_runs_table_that_is_not_the_ledger_is_refused_by_name(state_url):
    engine = sa.create_engine(state_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE runs (id INTEGER PRIMARY KEY, name VARCHAR(20))"))
    with pytest.raises(migrations.ForeignSchema, match="table `runs` that is not Interlink's run ledger.*INTERLINK_STATE_URL"):
        migrations.upgrade(engine)
    engine.dispose()


UPGRADE = """
import sys
from interlink.connectors.sql import create_engine
from interlink import migrations
engine = create_engine(sys.argv[1])
print(migrations.upgrade(engine)[1])
"""


def test_processes_that_start_together_on_an_old_database_upgrade_it_once(state_url):
    engine = sa.create_engine(state_url)
    make(engine, "78e47b7")
    engine.dispose()
    processes = [
        subprocess.Popen([sys.executable, "-c", UPGRADE, state_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outcomes = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err[-2000:] for _, err in outcomes]
    assert {out.strip() for out, _ in outcomes} == {migrations.head()}
    assert schema_diff(state_url) == []


def test_interlink_state_upgrade_says_what_it_did(home, monkeypatch, capsys):
    url = f"sqlite:///{home / 'interlink.db'}"
    home.mkdir(parents=True)
    engine = sa.create_engine(url)
    make(engine, "9c189b8")
    engine.dispose()
    assert main(["state", "upgrade"]) == 0
    assert capsys.readouterr().out == f"state database {url}: upgraded from 0005_webhook_events to {migrations.head()}\n"
    assert main(["state", "upgrade"]) == 0
    assert capsys.readouterr().out == f"state database {url}: at {migrations.head()}, the newest\n"
