"""The cursor column is parsed to times once per batch: every rule gives the same answer with the parsed times
as when it parses them itself."""

import re
import sys
from datetime import UTC, datetime, timedelta

import great_expectations as gx
import great_expectations.expectations as gxe
import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.sql import create_engine, read_watermark
from interlink.data_checks.policy import SchemaContract
from interlink.flows.pipeline import Pipeline
from interlink.tasks.admit import admit
from interlink.tasks.deliver import SqlTarget, tracked_table
from interlink.tasks.ingest import RestSource, SqlSource
from interlink.tasks.watermark import _shape, _usual, cursor_times, epoch_times, horizon, newest, order_break, positions
from prefect import task
from prefect.cache_policies import NO_CACHE

from interlink.deadletter import DeadLetters
from interlink.settings import ConfigError, Settings
from tests.json_server import json_server

SOON = datetime.now(UTC) + timedelta(hours=2)
COLUMNS = {
    "iso text, one in the future": ["2026-01-01T00:00:00Z", "2026-01-02T10:00:00+02:00", None, "2099-01-01T00:00:00Z"],
    "mixed shapes": ["2026-01-01T00:00:00Z", "20260103T000000Z", "not a time", "2026-01-02 00:00:00", ""],
    "out of order": ["2026-01-03T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"],
    "driver times": [datetime(2026, 1, 1, tzinfo=UTC), SOON, None, datetime(2025, 12, 31, 23, tzinfo=UTC)],
    "numeric text": ["17", "3", None, "20260101"],
}


@pytest.mark.parametrize("values", COLUMNS.values(), ids=COLUMNS.keys())
def test_parsed_once_gives_what_each_rule_parses_itself(values):
    frame = pd.DataFrame({"updated_at": pd.Series(values, dtype=object, index=range(10, 10 + len(values)))})
    column, moments = frame["updated_at"], cursor_times(frame, "updated_at")
    pd.testing.assert_series_equal(positions(column, moments=moments), positions(column))
    for since in (None, "2026-01-01T00:00:00Z", "20260101T000000Z"):
        assert newest(column, since, moments) == newest(column, since)
    known = positions(column).dropna().sort_values()
    for after in (None, known.iloc[len(known) // 2]):
        assert order_break(column, after, moments) == order_break(column, after)
    contract = SchemaContract(version="1", fields={"updated_at": "string"})
    pd.testing.assert_frame_equal(admit(frame, contract, "updated_at", moments)[1], admit(frame, contract, "updated_at")[1])


def test_a_numeric_cursor_is_not_parsed_to_times():
    assert cursor_times(pd.DataFrame({"version": [1, 2, 3]}), "version") is None
    assert cursor_times(pd.DataFrame({"version": [1, 2, 3]}), None) is None


def test_a_shape_is_the_text_with_every_digit_that_regex_d_matches_as_9():
    every_digit = "".join(chr(c) for c in range(sys.maxunicode + 1) if re.fullmatch(r"\d", chr(c)))
    for text in (every_digit, "2026-01-01T00:00:00Z", "٢٠٢٦-٠١-٠١", "x\x00²½Ⅻ 12", ""):
        assert _shape(text) == re.sub(r"\d", "9", text)


def test_the_watermark_of_text_is_the_newest_value_written_like_since():
    # The newer value parses as a time too, but a source comparing text would sort it elsewhere.
    values = pd.Series(["2026-01-02T00:00:00Z", "2026-01-03 00:00:00Z", "2026-01-01T00:00:00Z"], dtype="string")
    assert newest(values, since="2025-12-31T00:00:00Z") == "2026-01-02T00:00:00Z"
    assert newest(values, since="2025-12-31 00:00:00Z") == "2026-01-03 00:00:00Z"


SHAPED = [
    "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "٢٠٢٦-٠١-٠٣T00:00:00Z", "2026-01-04 00:00:00Z", "2026-01-0５T00:00:00Z",
    "2026-01-06T00:00:00Z\n", "2026.01.07T00:00:00Z", "2026-01-08T00:00:00é", "x\ud800", "", "[0-9]$", "\\x{2d}", "99",
]


@pytest.mark.parametrize("since", [None, "2025-12-31T00:00:00Z", "2025.12.31T00:00:00Z", "١٢", "nothing like it"])
@pytest.mark.parametrize("take", [slice(None), slice(0, 2), slice(2, None), slice(3, 8), slice(8, None)])
@pytest.mark.parametrize("dtype", [object, "str"])
def test_the_usual_way_of_writing_is_found_as_by_shaping_every_value(since, take, dtype):
    shaped = SHAPED[take] if dtype is object else [t for t in SHAPED[take] if "\ud800" not in t]  # Arrow text holds none
    texts = pd.Series(shaped, dtype=dtype, index=range(100, 100 + len(shaped)))
    shapes = pd.Series([_shape(v) for v in texts], index=texts.index, dtype=object)
    usual = _shape(since) if since is not None and (shapes == _shape(since)).any() else shapes.mode().iloc[0]
    assert _usual(texts, since).tolist() == (shapes == usual).tolist()


# A numeric cursor of epoch seconds or milliseconds, declared so, is guarded like a time: end to end through a sync


@task(name="transform", cache_policy=NO_CACHE)
def to_rows(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"id": raw["id"].astype("int64"), "name": raw["name"]}, index=raw.index)


def rows_suite() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name="epoch_rows", expectations=[gxe.ExpectColumnValuesToNotBeNull(column="id")])


EPOCH_TARGET = SqlTarget(
    connection="epoch_db",
    table=tracked_table("epoch_rows", sa.Column("id", sa.Integer, primary_key=True, autoincrement=False), sa.Column("name", sa.String(40))),
    key="id",
)


def epoch_pipeline(source) -> Pipeline:
    return Pipeline(name="epoch_sync", source=source, source_key="id", transform=to_rows, suite=rows_suite, key="id", target=EPOCH_TARGET)


def synced(url: str) -> tuple[dict, str | None]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT id, name FROM epoch_rows")).all())
    mark = read_watermark(engine, "epoch_sync")
    engine.dispose()
    return rows, mark


def epoch_letters() -> dict[str, dict]:
    return {e["record_key"]: e for e in DeadLetters(Settings().state_db).entries("epoch_sync", "open")}


NOW_S = int(datetime.now(UTC).timestamp())


@pytest.fixture
def epoch_db(home, monkeypatch) -> str:
    url = f"sqlite:///{home / 'epoch.db'}"
    monkeypatch.setenv("INTERLINK_EPOCH_DB__URL", url)
    return url


def test_a_far_future_epoch_second_in_a_sql_source_is_a_dead_letter_not_the_watermark(home, epoch_db, monkeypatch):
    legacy = f"sqlite:///{home / 'legacy.db'}"
    monkeypatch.setenv("INTERLINK_LEGACY__URL", legacy)
    engine = create_engine(legacy)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, changed_at INTEGER NOT NULL)"))
        conn.execute(sa.text("INSERT INTO items VALUES (1, 'one', :a), (2, 'two', :b), (3, 'poison', 99999999999)"), {"a": NOW_S - 7200, "b": NOW_S - 3600})
    pipeline = epoch_pipeline(SqlSource(connection="legacy", table="items", cursor="changed_at", key="id", cursor_unit="epoch_s"))

    first = pipeline.sync(return_state=True)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO items VALUES (4, 'later', :c)"), {"c": NOW_S})
    pipeline.sync()
    engine.dispose()

    assert first.name == "Quarantined"
    rows, mark = synced(epoch_db)
    assert rows == {1: "one", 2: "two", 4: "later"} and mark == str(NOW_S)  # the later change arrived
    letter = epoch_letters()["3"]
    assert letter["stage"] == "ingest" and "changed_at: 99999999999 is in the future" in letter["reason"]


def test_a_far_future_epoch_millisecond_from_a_rest_api_is_a_dead_letter_not_the_watermark(tmp_path, epoch_db, monkeypatch):
    now_ms = NOW_S * 1000
    items = [
        {"id": 1, "name": "one", "changed_ms": now_ms - 7_200_000},
        {"id": 2, "name": "poison", "changed_ms": 99999999999999},
        {"id": 3, "name": "three", "changed_ms": now_ms - 3_600_000},
    ]
    with json_server({"items": items}, tmp_path) as url, httpx.Client(base_url=url) as api:
        monkeypatch.setenv("INTERLINK_SHOP__BASE_URL", url)
        source = RestSource(
            "shop", "/items", "changed_ms", "changed_ms_gte", cursor_unit="epoch_ms",
            paginator={"type": "link_header", "page_size_param": "_limit", "page_size": 50}, params={"_page": 1},
        )
        epoch_pipeline(source).sync()
        api.post("/items", json={"id": 4, "name": "later", "changed_ms": now_ms}).raise_for_status()
        epoch_pipeline(source).sync()

    rows, mark = synced(epoch_db)
    assert rows == {1: "one", 3: "three", 4: "later"} and mark == str(now_ms)
    assert "changed_ms: 99999999999999 is in the future" in epoch_letters()["2"]["reason"]


def test_a_cursor_unit_that_is_not_known_names_the_choices():
    with pytest.raises(ConfigError, match=r"cursor_unit='seconds' is not known: use 'epoch_s' or 'epoch_ms'"):
        SqlSource(connection="legacy", table="items", cursor="changed_at", key="id", cursor_unit="seconds")
    with pytest.raises(ConfigError, match=r"the RestSource of shop /items: cursor_unit='ms'"):
        RestSource("shop", "/items", "changed_ms", "changed_ms_gte", cursor_unit="ms")


def test_epoch_times_hold_far_future_numbers_as_far_future():
    values = pd.Series([NOW_S, 99999999999, None, -99999999999], dtype="float64")
    moments = epoch_times(values, "epoch_s")
    assert moments[0] == pd.Timestamp(NOW_S, unit="s", tz="UTC") and moments[1] > horizon() and pd.isna(moments[2])
    known = positions(values, moments=moments)
    assert known[0] == NOW_S and pd.isna(known[1]) and pd.isna(known[2]) and known[3] == -99999999999  # only the future is out
    assert float(newest(values, None, moments)) == NOW_S and float(newest(values, None)) == 99999999999  # undeclared: a number
