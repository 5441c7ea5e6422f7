"""A value of the wrong shape where text belongs: an object or a list (or bytes, a set …) is never delivered as
Python's spelling of it (`{'nested': 'obj'}`); its record alone is a dead letter at stage `transform` naming the
column. A number (or a boolean, a time) where text belongs is still its text."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.sql import create_engine
from interlink.data_checks.policy import Gate
from interlink.flows.pipeline import Pipeline
from interlink.tasks.deliver import SqlTarget, tracked_table
from interlink.tasks.ingest import RestSource
from interlink.tasks.isolate import isolated
from interlink.tasks.transform import NotText, blank_to_na, normalise_country, normalise_email, normalise_phone
from prefect import task
from prefect.cache_policies import NO_CACHE

from interlink.deadletter import DeadLetters
from interlink.ledger import Ledger
from interlink.settings import Settings
from tests.test_rest import served

NORMALISERS = {
    "blank_to_na": blank_to_na,
    "normalise_email": normalise_email,
    "normalise_country": normalise_country,
    "normalise_phone": lambda values: normalise_phone(values, pd.Series("DE", index=values.index)),
    "normalise_phone's countries": lambda values: normalise_phone(pd.Series("030 1234567", index=values.index), values),
}
WRONG = [  # (value, what the reason calls it)
    ({"nested": "obj"}, "an object"),
    ({}, "an object"),
    (["a", "b"], "a list"),
    ([["a"], ["b", ["c"]]], "a list"),
    ([], "a list"),
    (("a",), "a list"),
    ({"a"}, "a set"),
    (b"bytes", "bytes"),
    (np.array(["a"]), "a list"),
]


def values(series: pd.Series) -> list:
    return [None if pd.isna(v) else v for v in series]


@pytest.mark.parametrize("normaliser", NORMALISERS)
@pytest.mark.parametrize(("value", "kind"), WRONG, ids=[type(v).__name__ + str(n) for n, (v, _) in enumerate(WRONG)])
def test_a_value_that_is_not_text_raises_naming_the_column_and_what_it_is(normaliser, value, kind):
    column = pd.Series(["Ada", None, value, "Bo"], dtype=object, name="name")
    with pytest.raises(NotText) as raised:
        NORMALISERS[normaliser](column)
    assert str(raised.value) == f"name: {kind} where text belongs"
    assert isinstance(raised.value, TypeError)  # a data error: isolation looks for the record instead of failing the batch


def test_an_unnamed_column_still_says_what_it_found():
    with pytest.raises(NotText, match=r"^an object where text belongs$"):
        blank_to_na(pd.Series([{"a": 1}], dtype=object))


@pytest.mark.parametrize("normaliser", ["blank_to_na", "normalise_email", "normalise_country"])
def test_missing_numbers_booleans_and_text_with_a_nul_are_still_normalised(normaliser):
    column = pd.Series([None, float("nan"), pd.NA, pd.NaT, 12345, np.int64(7), 1.5, Decimal("2.50"), True, "a\x00b", " Ada\x00 "], name="name")
    expected = [None, None, None, None, "12345", "7", "1.5", "2.50", "True", "a\x00b", "Ada\x00"]
    change = {"blank_to_na": str, "normalise_email": str.lower, "normalise_country": str.upper}[normaliser]
    result = NORMALISERS[normaliser](column)
    assert result.dtype == "string" and values(result) == [None if e is None else change(e) for e in expected]


def test_the_phone_of_a_number_and_no_country_is_as_before():
    phones = pd.Series([4930123456, "030 1234567", "030 1234567", None], name="phone")
    countries = pd.Series([None, float("nan"), "DE", "DE"], name="country")
    assert values(normalise_phone(phones, countries)) == ["4930123456", "030 1234567", "+49301234567", None]


@pytest.mark.parametrize("kind", ["string[python]", "string[pyarrow]", "str"])
def test_text_columns_hold_no_objects_and_pass_as_before(kind):
    column = pd.Series(["  Ada  Lovelace ", None, "a\x00b"], dtype=kind, name="name")
    assert values(blank_to_na(column)) == ["Ada Lovelace", None, "a\x00b"]


def test_isolation_fails_only_the_record_holding_an_object_and_names_its_column():
    raw = pd.DataFrame({"id": [1, 2, 3, 4], "name": ["Ada", {"nested": "obj"}, "Cy", ["x"]]}, index=[10, 11, 12, 13])

    def step(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"id": frame["id"], "name": blank_to_na(frame["name"])})

    rows, failures = isolated(step, raw, raw["id"])
    assert rows["name"].tolist() == ["Ada", "Cy"] and list(rows.index) == [10, 12]
    assert failures["reason"].to_dict() == {11: "NotText: name: an object where text belongs", 13: "NotText: name: a list where text belongs"}


NAME = "wrong_types"
TARGET = SqlTarget(
    connection="billing",
    table=tracked_table(NAME, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(100)), sa.Column("email", sa.String(100))),
    key="id",
)
RECORDS = [
    {"id": 1, "name": " Ada ", "email": "ADA@example.com", "updated_at": "2026-03-01T00:00:01Z"},
    {"id": 2, "name": {"nested": "obj"}, "email": "zo@example.com", "updated_at": "2026-03-01T00:00:02Z"},
    {"id": 3, "name": 12345, "email": "cy@example.com", "updated_at": "2026-03-01T00:00:03Z"},
    {"id": 4, "name": ["Di", "Dee"], "email": "di@example.com", "updated_at": "2026-03-01T00:00:04Z"},
    {"id": 5, "name": "Ed", "email": None, "updated_at": "2026-03-01T00:00:05Z"},
]


@task(name="transform", cache_policy=NO_CACHE)
def to_people(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"id": raw["id"], "name": blank_to_na(raw["name"]), "email": normalise_email(raw["email"])}, index=raw.index)


def suite() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name=NAME, expectations=[gxe.ExpectColumnValuesToNotBeNull(column="id")])


def test_a_rest_record_with_an_object_or_a_list_where_text_belongs_is_a_dead_letter_and_the_rest_is_delivered(
    home: Path, monkeypatch: pytest.MonkeyPatch
):
    url = f"sqlite:///{home / 'billing.db'}"
    monkeypatch.setenv("INTERLINK_BILLING__URL", url)
    monkeypatch.setenv("INTERLINK_CRM__BASE_URL", "https://crm.test")
    served(monkeypatch, lambda request: httpx.Response(200, json={"data": RECORDS, "next_cursor": None}))
    source = RestSource("crm", "/people", "updated_at", "since", paginator={"type": "cursor"}, records_path="data")
    pipeline = Pipeline(name=NAME, source=source, source_key="id", transform=to_people, suite=suite, key="id", target=TARGET,
                        gate=Gate(policy="quarantine"))

    state = pipeline.sync(return_state=True)

    assert state.name == "Quarantined", state.message
    engine = create_engine(url)
    with engine.connect() as conn:
        delivered = conn.execute(sa.text(f"SELECT id, name, email FROM {NAME} ORDER BY id")).all()
    engine.dispose()
    assert delivered == [(1, "Ada", "ada@example.com"), (3, "12345", "cy@example.com"), (5, "Ed", None)]
    letters = {e["record_key"]: e for e in DeadLetters(Settings.load().state_db).entries(NAME, "open")}
    assert set(letters) == {"2", "4"}
    for key, kind in {"2": "an object", "4": "a list"}.items():
        letter = letters[key]
        assert letter["stage"] == "transform" and f"name: {kind} where text belongs" in letter["reason"], letter
        assert letter["payload"] == [RECORDS[int(key) - 1]]  # as it came, ready to replay once the source is fixed
    run = Ledger(Settings.load().state_db).runs(NAME, limit=1)[0]
    parts = ("rows_inserted", "rows_updated", "rows_unchanged", "rows_quarantined", "rows_superseded")
    assert (run["state"], run["rows_read"], run["rows_inserted"], run["rows_quarantined"]) == ("QUARANTINED", 5, 3, 2)
    assert run["rows_read"] == sum(run[p] for p in parts)
