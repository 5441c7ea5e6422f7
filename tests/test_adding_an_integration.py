"""The README's "Adding an integration", followed to the letter: its module, its connections, its commands.

The module is the README's code block, written into the `flows` package as a new file; the source is
a SQLite database made here (times stored as text, NULLs in many columns); the target is PostgreSQL,
whose table has no update-time column.
"""

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

import flows
from interlink.cli import main
from tests.conftest import reset_tables, service_url

README = Path(__file__).parents[1] / "README.md"
SUPPLIERS = [  # id, name, email, country, changed_at (text, as many legacy databases keep it)
    (1, "Acme Tools", " Sales@Acme.example ", "de", "2026-03-01 08:00:00"),
    (2, "Blue Nut", None, None, "2026-03-01 08:00:00"),
    (3, "Corvid Ltd", "orders@corvid.example", "gb", "2026-03-02 09:30:00"),
    (4, None, None, "fr", "2026-03-02 10:00:00"),  # no name: the suite dead-letters it
    (5, "Dane & Sons", None, "dk", "2026-03-03 12:00:00"),
]


def readme_module() -> tuple[str, int]:
    """The module in the README's "Adding an integration", and the line count the README promises."""
    section = README.read_text().split("## Adding an integration", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    return code, int(re.search(r"in (\d+) lines", section).group(1))


@pytest.fixture
def legacy(home: Path, tmp_path: Path, monkeypatch) -> Path:
    """The legacy database, and the README's module dropped into `flows/`; connections as the README says."""
    db = tmp_path / "legacy.db"
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE suppliers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, country TEXT, changed_at TEXT)")
        conn.executemany("INSERT INTO suppliers VALUES (?, ?, ?, ?, ?)", SUPPLIERS)
    code, _ = readme_module()
    package = tmp_path / "flows"
    package.mkdir()
    (package / "suppliers_to_warehouse.py").write_text(code)
    monkeypatch.setattr(flows, "__path__", [*flows.__path__, str(package)])
    flows.integrations.cache_clear()
    warehouse = service_url("postgresql")
    reset_tables(warehouse, "suppliers", "interlink_watermarks")
    monkeypatch.setenv("INTERLINK_LEGACY__URL", f"sqlite:///{db}")
    monkeypatch.setenv("INTERLINK_WAREHOUSE__URL", warehouse)
    yield db
    flows.integrations.cache_clear()
    reset_tables(warehouse, "suppliers", "interlink_watermarks")


def warehouse() -> dict[int, tuple]:
    engine = sa.create_engine(service_url("postgresql"))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT supplier_id, name, email, country FROM suppliers")).all()
    engine.dispose()
    return {row[0]: tuple(row[1:]) for row in rows}


def run(capsys) -> str:
    capsys.readouterr()
    assert main(["run", "suppliers_to_warehouse"]) == 0
    return capsys.readouterr().out


def test_the_readme_module_is_as_short_as_promised():
    code, promised = readme_module()
    assert len(code.splitlines()) <= promised


def test_the_readme_integration_runs_incrementally_into_postgresql(legacy: Path, capsys):
    assert "read 5, inserted 4, updated 0, unchanged 0, quarantined 1" in run(capsys)
    assert warehouse() == {
        1: ("Acme Tools", "sales@acme.example", "DE"),
        2: ("Blue Nut", None, None),  # NULLs stay NULL
        3: ("Corvid Ltd", "orders@corvid.example", "GB"),
        5: ("Dane & Sons", None, "DK"),
    }
    assert "read 1, inserted 0, updated 0, unchanged 1" in run(capsys)  # only the row at the watermark, unchanged

    with closing(sqlite3.connect(legacy)) as conn, conn:
        conn.execute("UPDATE suppliers SET country = 'se', changed_at = '2026-03-04 07:00:00' WHERE id = 2")
        conn.execute("INSERT INTO suppliers VALUES (6, 'Eider Oy', NULL, 'fi', '2026-03-04 07:00:00')")  # the same second
        conn.execute("UPDATE suppliers SET changed_at = '2026-03-04 07:00:00' WHERE id = 3")  # touched, not changed
    assert "read 4, inserted 1, updated 1, unchanged 2, quarantined 0" in run(capsys)
    assert warehouse()[2] == ("Blue Nut", None, "SE") and warehouse()[6] == ("Eider Oy", None, "FI")

    with closing(sqlite3.connect(legacy)) as conn, conn:  # a row committed late, at the watermark's exact time
        conn.execute("INSERT INTO suppliers VALUES (7, 'Fulmar AB', NULL, 'se', '2026-03-04 07:00:00')")
    assert "inserted 1, updated 0" in run(capsys)
    assert warehouse()[7] == ("Fulmar AB", None, "SE")

    capsys.readouterr()
    assert main(["reconcile", "suppliers_to_warehouse"]) == 0
    assert "missing 0, extra 0, changed 0" in capsys.readouterr().out


def test_the_demo_runs_what_it_can_stand_in_for_and_says_what_it_skips(legacy: Path, monkeypatch, capsys):
    from demo_systems.cli import runnable
    from demo_systems.wiring import demo_systems
    from interlink.settings import Settings

    monkeypatch.delenv("INTERLINK_WAREHOUSE__URL")
    with demo_systems(Settings.load(), fault_rate=0) as demo:
        names = runnable(demo)
    assert names == ["crm_to_billing", "inventory_to_storefront", "invoices_to_billing", "orders_to_erp"]
    err = capsys.readouterr().err
    assert "suppliers_to_warehouse skipped" in err and "connection 'warehouse' is not declared" in err
