"""Reconcile with integer keys, dead letters set aside by key, a repair read back, a target without update times."""

from __future__ import annotations

from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.sql import Timestamp, create_engine, ensure_tables, utcnow
from interlink.flows.pipeline import Pipeline
from interlink.tasks.deliver import SqlTarget, deliver, row_hashes, tracked_table
from interlink.tasks.ingest import FolderSource
from interlink.tasks.reconcile import compare
from prefect import task
from prefect.cache_policies import NO_CACHE

from interlink.deadletter import DeadLetters, Reject
from interlink.settings import Settings
from tests.conftest import target_database

NAME = "items_to_db"
IDS = list(range(1, 31))


@task(name="transform", cache_policy=NO_CACHE)
def to_items(raw: pd.DataFrame) -> pd.DataFrame:
    """CSV text → rows with an integer (`Int64`) key."""
    rows = pd.DataFrame({"id": pd.to_numeric(raw["id"]).astype("Int64"), "name": raw["name"]}, index=raw.index)
    if "updated_at" in raw:
        rows["updated_at"] = pd.to_datetime(raw["updated_at"], utc=True, format="ISO8601")
    return rows


def items_suite() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name="items", expectations=[gxe.ExpectColumnValuesToNotBeNull(column="id")])


def pipeline(target: SqlTarget) -> Pipeline:
    return Pipeline(
        name=NAME, source=FolderSource(connection="items_drop"), source_key="id", transform=to_items,
        suite=items_suite, key="id", target=target,
    )


ITEMS = pipeline(
    SqlTarget(
        connection="items",
        table=tracked_table(
            "reconcile_items",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("name", sa.String(40)),
            sa.Column("updated_at", Timestamp),
        ),
        key="id",
        updated="updated_at",
    )
)
# A target table without an update-time column: a change is told by the row hash alone.
PLAIN = pipeline(
    SqlTarget(
        connection="items",
        table=tracked_table(
            "plain_items", sa.Column("id", sa.Integer, primary_key=True, autoincrement=False), sa.Column("name", sa.String(40))
        ),
        key="id",
        updated=None,
    )
)


def differences(result: dict) -> dict:
    return {k: result[k] for k in ("dead_lettered", "missing", "extra", "changed", "repaired", "not_written", "unrepaired")}


# compare, on small frames: the source's keys in the pipeline's type (`Int64`), the target's as read back (int64)


def hashes(keys: list, changed: set) -> list[str]:
    return [f"{'other' if k in changed else 'hash'}-{k}" for k in keys]


@pytest.mark.parametrize(
    "as_source, as_target, kind",
    [
        (lambda ks: pd.array(ks, dtype="Int64"), lambda ks: np.array(ks, dtype="int64"), int),
        (lambda ks: np.array(ks, dtype="int64"), lambda ks: np.array(ks, dtype="int64"), int),
        (lambda ks: [f"c-{k:02d}" for k in ks], lambda ks: [f"c-{k:02d}" for k in ks], str),
    ],
    ids=["Int64-int64", "int64", "text"],
)
def test_compare_reports_exactly_the_keys_that_differ_whatever_the_order(as_source, as_target, kind):
    rng = np.random.default_rng(7)
    source_keys, target_keys = rng.permutation(range(1, 41)).tolist(), rng.permutation(range(5, 46)).tolist()
    stored, edited = {6, 13, 40}, {8, 21}  # a stored hash that differs; a row edited behind delivery's back
    source = pd.DataFrame({"id": as_source(source_keys), "row_hash": hashes(source_keys, set())})
    target = pd.DataFrame(
        {"id": as_target(target_keys), "row_hash": hashes(target_keys, stored), "held_hash": hashes(target_keys, edited)}
    )

    found = compare(source, target, "id")

    def keys(ks) -> list:
        return [kind(k) for k in as_source(sorted(ks))]

    assert found == {
        "source_rows": 40,
        "target_rows": 41,
        "missing": keys(range(1, 5)),
        "extra": keys(range(41, 46)),
        "changed": keys(stored | edited),
    }
    assert {type(k) for k in found["missing"] + found["extra"] + found["changed"]} == {kind}


# The whole reconcile, on every dialect: a CSV drop folder as the source, an integer key


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def items_url(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = target_database(request, home, monkeypatch, "items", "reconcile_items", "plain_items")
    monkeypatch.setenv("INTERLINK_ITEMS__KIND", "sql")
    return url


@pytest.fixture
def drop(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The source's drop folder, holding one pending CSV file of items, in no particular order of id."""
    folder = home / "drop"
    folder.mkdir(parents=True)
    monkeypatch.setenv("INTERLINK_ITEMS_DROP__KIND", "folder")
    monkeypatch.setenv("INTERLINK_ITEMS_DROP__PATH", str(folder))
    ids = np.random.default_rng(3).permutation(IDS)
    pd.DataFrame(
        {"id": ids, "name": [f"item {i}" for i in ids], "updated_at": [f"2026-03-{i:02d}T10:00:00Z" for i in ids]}
    ).to_csv(folder / "items.csv", index=False)
    return folder


def execute(url: str, *statements: str, **params) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params)
    engine.dispose()


def test_integer_keys_are_reconciled_set_aside_and_a_repair_is_read_back(drop, items_url):
    raw = pd.read_csv(drop / "items.csv", dtype=str)
    deliver(items_url, ITEMS.target, to_items.fn(raw), NAME, None, None)
    assert ITEMS.reconcile() == {
        "integration": NAME, "source_rows": 30, "dead_lettered": [], "target_rows": 30, "missing": [], "extra": [], "changed": [],
        "repaired": 0, "not_written": [], "unrepaired": [],
    }

    DeadLetters(Settings.load().state_db).put(NAME, [Reject("12", "check", "held back", {}, [])], None)
    execute(
        items_url,
        "UPDATE reconcile_items SET name = 'edited' WHERE id IN (5, 12, 17, 23)",
        "UPDATE reconcile_items SET name = 'newer', updated_at = :later WHERE id = 30",  # newer than the source: kept
        "DELETE FROM reconcile_items WHERE id = 9",
        "INSERT INTO reconcile_items (id, name, updated_at, row_hash, synced_at) VALUES (999, 'ghost', :later, 'made-up', :later)",
        later=utcnow().replace(year=2027),
    )
    found = ITEMS.reconcile()
    repair = ITEMS.reconcile(repair=True)
    after = ITEMS.reconcile()

    assert differences(found) == {
        "dead_lettered": ["12"], "missing": [9], "extra": [999], "changed": [5, 17, 23, 30], "repaired": 0, "not_written": [],
        "unrepaired": [5, 9, 17, 23, 30],
    }
    assert found["source_rows"] == found["target_rows"] == 30  # 12, dead-lettered, counted on both sides, compared on neither
    assert differences(repair) == {**differences(found), "repaired": 4, "unrepaired": [30]}
    assert differences(after) == {
        "dead_lettered": ["12"], "missing": [], "extra": [999], "changed": [30], "repaired": 0, "not_written": [], "unrepaired": [30],
    }


def test_a_target_without_update_times_is_read_whole_and_compared_by_hash(drop, items_url):
    raw = pd.read_csv(drop / "items.csv", dtype=str)
    again = raw[raw["id"].isin(["4", "11"])].assign(name=lambda f: f["name"] + " renamed")
    pd.concat([raw, again]).drop(columns="updated_at").to_csv(drop / "items.csv", index=False)  # the last row per id counts
    rows = to_items.fn(pd.concat([raw[~raw["id"].isin(["4", "11"])], again]).drop(columns="updated_at"))
    rows = rows[rows["id"] != 9].assign(synced_at=utcnow())
    rows = pd.concat([rows, pd.DataFrame({"id": [999], "name": ["ghost"], "synced_at": [utcnow()]})], ignore_index=True)
    engine = create_engine(items_url)
    ensure_tables(engine, PLAIN.target.table)
    with engine.begin() as conn:
        conn.execute(PLAIN.target.table.insert(), rows.assign(row_hash=row_hashes(rows, PLAIN.target)).to_dict("records"))
    engine.dispose()
    execute(items_url, "UPDATE plain_items SET name = 'edited' WHERE id IN (11, 26)")

    whole = PLAIN.reconcile()
    windowed = PLAIN.reconcile(since="2026-03-20T00:00:00Z")  # no time to window the target by: only the source's keys

    assert differences(whole) == {
        "dead_lettered": [], "missing": [9], "extra": [999], "changed": [11, 26], "repaired": 0, "not_written": [], "unrepaired": [9, 11, 26],
    }
    assert (whole["source_rows"], whole["target_rows"]) == (30, 30)
    assert differences(windowed) == {**differences(whole), "extra": []}
    assert (windowed["source_rows"], windowed["target_rows"]) == (30, 29)
