"""The cursor column is parsed to times once per batch: every rule gives the same answer with the parsed times
as when it parses them itself."""

import re
import sys
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from data_checks.policy import SchemaContract
from tasks.admit import admit
from tasks.watermark import _shape, _usual, cursor_times, newest, order_break, positions

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
