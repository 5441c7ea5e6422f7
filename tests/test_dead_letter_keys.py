"""Dead-letter keys are text whatever the source's key type: None, NaN, integers, floats, booleans, text, objects
and lists, all together in one batch. A null key beside a number once failed every run with `KeyError: nan`."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.sql import create_engine
from interlink.data_checks.policy import Gate, SchemaContract
from interlink.flows.pipeline import Pipeline
from interlink.tasks.admit import records_frame
from interlink.tasks.deliver import SqlTarget, tracked_table
from interlink.tasks.ingest import Chunk, RestSource
from interlink.tasks.quarantine import key_text
from prefect import task
from prefect.cache_policies import NO_CACHE

from interlink.deadletter import DeadLetters
from interlink.settings import Settings
from tests.json_server import json_server

NAME = "keyed_items"


@task(name="transform", cache_policy=NO_CACHE)
def to_items(raw: pd.DataFrame) -> pd.DataFrame:
    """Records → rows keyed by the record's `id` as text."""
    return pd.DataFrame(
        {"key": pd.Series([key_text(v) for v in raw["id"]], index=raw.index, dtype=object), "name": raw["name"], "qty": raw["qty"]},
        index=raw.index,
    )


def items_suite() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name="keyed_items",
        expectations=[gxe.ExpectColumnValuesToNotBeNull(column="key"), gxe.ExpectColumnValuesToBeBetween(column="qty", min_value=0)],
    )


TARGET = SqlTarget(
    connection="keyed",
    table=tracked_table(
        "keyed_items", sa.Column("key", sa.String(250), primary_key=True), sa.Column("name", sa.String(100)), sa.Column("qty", sa.Integer)
    ),
    key="key",
)


def pipeline(source: Any) -> Pipeline:
    return Pipeline(
        name=NAME, source=source, source_key="id", transform=to_items, suite=items_suite, key="key", target=TARGET,
        contract=SchemaContract(version="1", fields={"name": "string"}), gate=Gate(policy="quarantine"),
    )


class Batches:
    """A source handing over batches of records decoded as a REST page is (`records_frame`), one chunk each."""

    connection, cursor, sorted, setting = "batches", None, True, "the test's batches"

    def __init__(self, batches: list[list[dict]]):
        self.batches = batches

    def chunks(self, settings: Settings, since: str | None, chunk_rows: int) -> Iterator[Chunk]:
        for number, batch in enumerate(self.batches, 1):
            frame, refused = records_frame(batch)
            yield Chunk(frame, last=number == len(self.batches), refused=tuple(refused))

    def done(self, settings: Settings, chunk: Chunk) -> None:
        """Nothing to archive."""


@pytest.fixture
def keyed_url(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{home / 'keyed.db'}"
    monkeypatch.setenv("INTERLINK_KEYED__URL", url)
    return url


def delivered(url: str) -> dict[str, str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT key, name FROM keyed_items")).all()) if sa.inspect(conn).has_table("keyed_items") else {}
    engine.dispose()
    return rows


def letters() -> list[dict]:
    return DeadLetters(Settings().state_db).entries(NAME, "open", reveal=True)


def test_a_null_key_beside_a_numeric_key_is_one_dead_letter_and_the_rest_is_delivered(tmp_path, keyed_url, monkeypatch):
    items = [
        {"id": None, "name": "no key", "qty": 1, "updated_at": "2026-01-01T00:00:00Z"},
        {"id": 12, "name": "twelve", "qty": 2, "updated_at": "2026-01-02T00:00:00Z"},
        {"id": 13, "name": "thirteen", "qty": -1, "updated_at": "2026-01-03T00:00:00Z"},
    ]
    with json_server({"items": items}, tmp_path) as url:
        monkeypatch.setenv("INTERLINK_SHOP__BASE_URL", url)
        source = RestSource(
            "shop", "/items", "updated_at", "updated_at_gte", paginator={"type": "link_header", "page_size_param": "_limit", "page_size": 50},
            params={"_page": 1, "_sort": "updated_at", "_order": "asc"}, sorted=True,
        )
        first = pipeline(source).sync(return_state=True)
        second = pipeline(source).sync(return_state=True)

    assert first.name == second.name == "Quarantined", first.message
    assert delivered(keyed_url) == {"12": "twelve"}
    found = {letter["record_key"].split(":")[0]: letter for letter in letters()}
    assert set(found) == {"no-key", "13"}
    assert "key" in found["no-key"]["reason"] and found["no-key"]["payload"] == [items[0]]
    assert "qty" in found["13"]["reason"] and found["13"]["payload"] == [items[2]]


# The property: mixed batches of every key type, made by a seeded generator


def expected_text(value: Any) -> str | None:
    """The key text a dead letter must hold, written out case by case."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


KINDS = ["none", "nan", "int", "integral float", "float", "bool", "text", "object", "list"]


def a_key(rng: random.Random, kind: str) -> Any:
    n = rng.randrange(1, 10**12) * rng.choice([1, -1])
    return {
        "none": None, "nan": float("nan"), "int": n, "integral float": float(rng.randrange(1, 10**6)), "float": n / 7,
        "bool": rng.random() < 0.5, "text": rng.choice(["k", "Zoë ", "名前", "12", "a b", "{}", "1e3"]) + str(n),
        "object": {"id": n, "scope": rng.choice(["x", "y"])}, "list": [n, "x"],
    }[kind]


def mixed_batches(seed: int, count: int) -> tuple[list[list[dict]], list[dict], list[tuple[dict, str]]]:
    """`count` batches, each of keys of a few kinds, none sharing its text with another; the good records, and
    each bad record with the field its dead letter must name."""
    rng = random.Random(seed)
    batches, good, bad, taken = [], [], [], set()
    for _ in range(count):
        kinds, batch = rng.sample(KINDS, rng.randint(2, 5)), []
        for _ in range(rng.randint(1, 12)):
            key = a_key(rng, rng.choice(kinds))
            if (text := expected_text(key)) is not None and text in taken:
                continue
            taken.add(text)
            record = {"id": key, "name": f"item {len(taken)}-{rng.random()}", "qty": rng.randint(0, 9)}
            fault = "key" if text is None else rng.choice([None, None, "name", "qty"])
            if fault == "name":
                record["name"] = {"first": record["name"]}
            elif fault == "qty" or (fault == "key" and rng.random() < 0.3):
                record["qty"] = -rng.randint(1, 9)
            batch.append(record)
            (good.append(record) if fault is None else bad.append((record, fault)))
        batches.append(batch)
    return batches, good, bad


def same(a: Any, b: Any) -> bool:
    """Equal, taking NaN as equal to NaN (a dead letter keeps NaN as null)."""
    nan = isinstance(a, float) and math.isnan(a)
    return b is None if nan else a == b


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_bad_record_of_mixed_key_types_is_one_dead_letter_with_its_reason_and_the_good_are_delivered(seed, keyed_url):
    batches, good, bad = mixed_batches(seed, 25)
    state = pipeline(Batches(batches)).sync(return_state=True)

    assert state.is_completed(), state.message
    assert delivered(keyed_url) == {expected_text(r["id"]): r["name"] for r in good}
    found = letters()
    assert len(found) == len(bad) == state.result()["rows_quarantined"]
    by_key = {letter["record_key"]: letter for letter in found}
    keyless = [letter for letter in found if letter["record_key"].startswith("no-key:")]
    for record, field in bad:
        text = expected_text(record["id"])
        if text is None:
            [letter] = [k for k in keyless if k["payload"][0]["name"] == record["name"]]
        else:
            letter = by_key[text]
        [kept] = letter["payload"]
        assert f"{field}" in letter["reason"], (record, letter)
        assert kept.keys() == record.keys() and all(same(record[k], kept[k]) for k in record), (record, kept)
    assert {type(r["id"]) for r, _ in bad} >= {type(None), float, int, str, dict, list}  # the generator covers the kinds


def test_a_key_as_text():
    assert [key_text(v) for v in (None, float("nan"), np.nan, pd.NA, pd.NaT)] == [None] * 5
    assert [key_text(v) for v in (12, np.int64(12), 12.0, np.float64(12.0), "12", 1.5, True, np.True_, False)] == [
        "12", "12", "12", "12", "12", "1.5", "true", "true", "false",
    ]
    assert key_text({"b": 1, "a": [1, None]}) == '{"a": [1, null], "b": 1}' and key_text([2, "x"]) == '[2, "x"]'
