"""The watermark: the committed position of an integration, and the rules that keep any source from poisoning it.

A watermark is a cursor value as the source wrote it (it goes back to the source as the next
`since`), never one ahead of now, and for text, only one written like the watermark before it
(or like most of the batch): a source may compare the text, so one odd value would hide every
later change. A cursor time further ahead than `FUTURE` is dead-lettered (`interlink.tasks.admit`), and so
is a numeric cursor declared to hold epoch seconds or milliseconds (`cursor_unit`) read as a time. A
source that says its records come in cursor order is held to it (`order_break`); one that does
not moves its watermark only when a whole run has been delivered.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from interlink.connectors.errors import ConfigError
from interlink.connectors.sql import WATERMARKS, create_engine, cursor_text, ensure_tables, read_watermark, write_watermark
from interlink.tasks.transform import decimal_digits
from prefect import task
from prefect.cache_policies import NO_CACHE

FUTURE = timedelta(days=1)  # how far ahead of now a cursor time may be
EPOCH_UNITS = {"epoch_s": 1, "epoch_ms": 1000}  # a numeric cursor's `cursor_unit`: how many of it make a second
EPOCH_BOUND = 9.2e9  # seconds either side of 1970 that a pandas time can hold (years 1678 to 2261)


def horizon() -> pd.Timestamp:
    """The latest cursor time a watermark may take: now plus `FUTURE`, in UTC."""
    return pd.Timestamp(datetime.now(UTC) + FUTURE)


def positions(values: pd.Series, until: pd.Timestamp | None = None, moments: pd.Series | None = None) -> pd.Series:
    """Cursor values as comparable positions: numbers as they are, anything else as UTC times
    (missing where a value is neither, or a time is beyond `until`, by default the `horizon`).
    `moments`: the `times` of these values, or of the batch's column they come from, when already parsed
    (for numbers, their times as epoch seconds or milliseconds: a number whose time is beyond `until` is missing)."""
    until = horizon() if until is None else until
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
    else:
        numbers = _numbers(values) if values.dtype == object else None
    if numbers is None:
        moments = times(values) if moments is None else moments.loc[values.index]
        return moments.where(moments <= until)
    return numbers if moments is None else numbers.where(~(moments.loc[values.index] > until).to_numpy())


def _numbers(values: pd.Series) -> pd.Series | None:
    """Text values as numbers, when every present one is a number (a glance at the first present value rejects most)."""
    present = values.dropna()
    if present.empty or pd.isna(pd.to_numeric(present.iloc[:1], errors="coerce").iloc[0]):
        return None
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers.astype("float64") if numbers.notna().sum() == len(present) else None


def times(values: pd.Series) -> pd.Series:
    """Cursor values as UTC times: ISO 8601 text, or times and dates as a driver reads them (NaT for anything else)."""
    if values.dtype == object:
        values = values.map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v).astype("string")
    return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")


def cursor_times(frame: pd.DataFrame, cursor: str | None, unit: str | None = None) -> pd.Series | None:
    """The `times` of a batch's cursor column, parsed once for every rule that needs them (`newest`,
    `order_break`, admission's future check); for a cursor of epoch seconds or milliseconds (`unit`, see
    `EPOCH_UNITS`), its numbers as times; None for another numeric cursor, or none."""
    if cursor is None or cursor not in frame.columns:
        return None
    if unit is not None:
        return epoch_times(frame[cursor], unit)
    return None if pd.api.types.is_numeric_dtype(frame[cursor]) else times(frame[cursor])


def epoch_times(values: pd.Series, unit: str) -> pd.Series:
    """Numbers (or numeric text) of epoch `unit` as UTC times (NaT for anything else). A number beyond what a time
    can hold is taken as the latest (or earliest) time one can: far ahead is still far ahead, not missing."""
    seconds = pd.to_numeric(values, errors="coerce").astype("float64") / EPOCH_UNITS[unit]
    return pd.to_datetime(seconds.clip(-EPOCH_BOUND, EPOCH_BOUND), unit="s", utc=True)


def check_unit(unit: str | None, setting: str) -> None:
    """`ConfigError` naming the choices when a source's `cursor_unit` is not one of `EPOCH_UNITS` (or None)."""
    if unit is not None and unit not in EPOCH_UNITS:
        raise ConfigError(
            f"{setting}: cursor_unit={unit!r} is not known: use {' or '.join(map(repr, EPOCH_UNITS))} for a cursor of "
            "epoch seconds or milliseconds, or leave it unset"
        )


def newest(values: pd.Series, since: str | None, moments: pd.Series | None = None) -> str | None:
    """The value of a chunk's cursor to commit as its watermark, as text: the latest not after now, and, for
    text, written like `since` (where none is, like most of the values). None when no value qualifies.
    `moments`: the values' `times`, when already parsed."""
    present = values.dropna()
    if present.empty:
        return None
    if pd.api.types.infer_dtype(present, skipna=False) == "string":
        present = present[_usual(present, since)]
    known = positions(present, until=pd.Timestamp(datetime.now(UTC)), moments=moments).dropna()
    return None if known.empty else cursor_text(present[known.idxmax()])


def _usual(texts: pd.Series, since: str | None) -> np.ndarray:
    """Which texts are written like `since`, or, where none is, like most of them."""
    guess = _shape(since if since is not None else texts.iloc[0])
    alike = _written_like(texts, guess)
    if alike.all() or (since is not None and alike.any()):
        return alike
    shapes = pd.Series([_shape(v) for v in texts], index=texts.index, dtype=object)
    return (shapes == shapes.mode().iloc[0]).to_numpy()


def _shape(text: str) -> str:
    """How a value is written: its digits (of any script, as `\\d` matches them) as 9s
    (`2026-01-01T00:00:00Z` → `9999-99-99T99:99:99Z`)."""
    return text.translate(_nines())


def _written_like(texts: pd.Series, shape: str) -> np.ndarray:
    """Which texts have `shape`: the ASCII ones matched by Arrow at once, the others (and text Arrow cannot hold) here."""
    try:
        array = pa.array(texts, pa.string())  # Arrow text as it is
    except (pa.ArrowException, UnicodeEncodeError):  # a lone surrogate
        return np.array([_shape(v) == shape for v in texts], dtype=bool)
    pattern = "".join("[0-9]" if c == "9" else c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in shape)
    alike = pc.match_substring_regex(array, f"^{pattern}$").to_numpy(zero_copy_only=False)
    for at in np.flatnonzero(~pc.string_is_ascii(array).to_numpy(zero_copy_only=False)):
        alike[at] = _shape(texts.iloc[at]) == shape
    return alike


@functools.cache
def _nines() -> dict[int, str]:
    """A `str.translate` table taking every decimal digit to 9: five times faster than a regex per value."""
    return dict.fromkeys(decimal_digits(), "9")


def order_break(values: pd.Series, after: object | None = None, moments: pd.Series | None = None) -> str | None:
    """Where `values` (one chunk's cursor values, in the order read) go backwards, or go below
    `after` (the newest position of the chunk before); None when they are in order. `moments`: their `times`."""
    known = positions(values, moments=moments).dropna()
    previous, shown = after, after
    for index, position in known.items():
        if previous is not None and position < previous:
            return f"{values[index]} came after {shown}"
        previous, shown = position, values[index]
    return None


def later(a: str | None, b: str | None) -> str | None:
    """The later of two watermarks as text (None counts as earliest)."""
    if a is None or b is None:
        return a if b is None else b
    first, second = positions(pd.Series([a, b], dtype=object)).tolist()
    if pd.isna(second):
        return a
    return b if pd.isna(first) or second >= first else a


@task(name="read-watermark", cache_policy=NO_CACHE)
def committed_watermark(url: str, integration: str) -> str | None:
    engine = create_engine(url)
    try:
        return read_watermark(engine, integration)
    finally:
        engine.dispose()


@task(name="commit-watermark", cache_policy=NO_CACHE)
def commit_watermark(url: str, integration: str, value: str, flow_run_id: str | None) -> None:
    """Move the watermark on its own: after a batch whose rows were written part by part, or at the end
    of a run of a source whose records are not in cursor order."""
    engine = create_engine(url)
    try:
        ensure_tables(engine, WATERMARKS)
        with engine.begin() as conn:
            write_watermark(conn, integration, value, flow_run_id)
    finally:
        engine.dispose()
