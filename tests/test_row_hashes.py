"""Row hashes computed column by column are bit-identical to the row-by-row formatting they replace, on hostile rows."""

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from interlink.tasks.deliver import _naive_utc, row_hashes


def row_hashes_before(rows: pd.DataFrame, target) -> pd.Series:
    """`row_hashes` as it was: every time formatted by strftime, every hash by str.format."""
    compared = _naive_utc(rows[target.compared])
    for column in compared.select_dtypes(include=["datetime"]).columns:
        compared[column] = compared[column].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return pd.util.hash_pandas_object(compared.astype("string"), index=False).map("{:016x}".format)


TEXT = ["plain", None, "", "nul\x00byte", "ünïcödé ✓ 🚀", "\u202eright-to-left", "  padded  ", "a" * 5000, "NaN", "None"]
NUMBERS = [0.1, -0.0, 0.0, float("inf"), float("-inf"), float("nan"), 1e300, 5e-324, 2**53 + 1.0, None]
MIXED = [{"nested": [1, {"deep": None}]}, [1, 2, "x"], 7, True, Decimal("1.10"), date(2026, 1, 1), None, b"bytes", 3.5, "x"]
ZONED = [datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30))), datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
         None, datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)] * 2
NAIVE_NS = pd.Series(np.array(["1969-12-31T23:59:59.9999995", "2026-01-01T00:00:00.123456789", "NaT", "1677-09-22T00:00:00",
                               "2262-04-11T00:00:00", "2026-03-29T02:30:00", "NaT", "2000-02-29T00:00:00", "1970-01-01", "2026-11-26"],
                              dtype="datetime64[ns]"))
FAR = pd.Series(np.array(["0001-01-01T00:00:00.5", "0999-12-31", "9999-12-31T23:59:59.999999", "NaT"] * 2 + ["2026-01-01"] * 2,
                         dtype="datetime64[us]"))

RNG = np.random.default_rng(14)
FLOATS = np.concatenate([RNG.standard_normal(20_000) * 10.0 ** RNG.integers(-330, 308, 20_000),
                         RNG.integers(-(2**62), 2**62, 5_000).astype(float), [np.nan] * 10])

FRAMES = {
    "object columns": pd.DataFrame({"text": TEXT, "number": NUMBERS, "mixed": MIXED, "zoned": ZONED}),
    "typed columns": pd.DataFrame({"text": pd.Series(TEXT, dtype="string"), "number": pd.Series(NUMBERS, dtype="float64"),
                                   "count": pd.Series([1, None, -3, 2**62, 0, 5, 6, 7, 8, 9], dtype="Int64"),
                                   "flag": pd.Series([True, False, None] * 3 + [True], dtype="boolean"),
                                   "zoned": pd.to_datetime(pd.Series(ZONED), utc=True), "naive": NAIVE_NS, "far": FAR}),
    "floats of every magnitude": pd.DataFrame({"float": FLOATS, "object": pd.Series(FLOATS, dtype=object)}),
    "all missing": pd.DataFrame({"text": [None] * 3, "at": pd.Series([pd.NaT] * 3, dtype="datetime64[ns, UTC]")}),
    "no rows": pd.DataFrame({"text": pd.Series([], dtype="string"), "at": pd.Series([], dtype="datetime64[us]")}),
}


@pytest.mark.parametrize("frame", FRAMES.values(), ids=FRAMES.keys())
def test_hashes_are_bit_identical_to_the_row_by_row_ones(frame):
    frame = frame.set_axis(range(100, 100 + len(frame)))  # a batch's index, not 0..n
    target = SimpleNamespace(compared=list(frame.columns))
    new, old = row_hashes(frame, target), row_hashes_before(frame, target)
    assert new.tolist() == old.tolist() and new.index.equals(old.index)
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in new)


def test_a_change_in_any_column_changes_the_hash():
    frame = FRAMES["typed columns"]
    target = SimpleNamespace(compared=list(frame.columns))
    before = row_hashes(frame, target)
    changed = frame.copy()
    changed.loc[0, "naive"] += pd.Timedelta(microseconds=1)
    changed.loc[1, "text"] = "changed"
    assert (row_hashes(changed, target) != before).tolist() == [True, True] + [False] * 8


@pytest.mark.parametrize("dtype", [object, pd.StringDtype("python")])  # Arrow text cannot hold one at all
def test_a_lone_surrogate_is_hashed_and_every_other_row_keeps_its_hash(dtype):
    """A record re-read at the watermark is hashed before its check: text the target refuses must not fail the run."""
    frame = FRAMES["typed columns"].copy()
    target = SimpleNamespace(compared=list(frame.columns))
    clean = row_hashes(frame, target)
    frame["text"] = pd.Series(["Ada \ud800 Lovelace", *TEXT[1:]], dtype=dtype)
    hashed = row_hashes(frame, target)
    assert hashed.iloc[1:].tolist() == clean.iloc[1:].tolist()
    assert hashed.iloc[0] != clean.iloc[0] and hashed.iloc[0] == row_hashes(frame, target).iloc[0]
