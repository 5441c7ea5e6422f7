"""Which values a SQL table would refuse, found before anything is written.

Checked against the declared columns, the same on every dialect: a required column left empty,
a list or an object where a column holds a scalar, text longer than its column or holding a
NUL byte (PostgreSQL cannot store one) or a lone surrogate (not encodable), a number that is
not one or does not fit its integer column, an infinite float, a time that is not a time.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

SURROGATE = re.compile("[\ud800-\udfff]")
LONE_SURROGATE = "holds a lone surrogate, which is not valid Unicode text"
_ODD = re.compile("[\x00\ud800-\udfff]")
INTEGER_LIMITS = ((sa.SmallInteger, 2**15), (sa.BigInteger, 2**63), (sa.Integer, 2**31))


def refusals(table: sa.Table, rows: pd.DataFrame) -> dict[Any, dict[str, str]]:
    """For each row the table would refuse (by index): the offending columns, each with why."""
    found: dict[Any, dict[str, str]] = {}
    for column in table.columns:
        if column.name not in rows.columns:
            continue
        for index, reason in _column_refusals(column, rows[column.name]).items():
            found.setdefault(index, {})[column.name] = reason
    return found


def _column_refusals(column: sa.Column, values: pd.Series) -> pd.Series:
    missing = values.isna()
    reasons = pd.Series(None, index=values.index, dtype=object)
    present = values
    if missing.any():
        if not column.nullable:
            reasons[missing] = "missing, and the column requires a value"
        present = values[~missing]
    if present.empty:
        return reasons.dropna()
    if present.dtype == object:
        containers = present.map(lambda v: isinstance(v, dict | list))
        reasons[containers[containers].index] = "a list or an object, where the column holds a single value"
        present = present[~containers]
    kind = column.type
    if isinstance(kind, sa.String):
        _merge(reasons, _text_refusals(present, kind.length))
    elif isinstance(kind, sa.Integer):
        _merge(reasons, _integer_refusals(present, kind))
    elif isinstance(kind, sa.Float | sa.Numeric):
        numbers = pd.to_numeric(present, errors="coerce")
        reasons[numbers.index[numbers.isna()]] = "not a number"
        reasons[numbers.index[numbers.abs() == float("inf")]] = "an infinite number"
    elif isinstance(kind, sa.DateTime | sa.Date) and not pd.api.types.is_datetime64_any_dtype(present):
        times = pd.to_datetime(present, errors="coerce", utc=True, format="mixed")
        reasons[times.index[times.isna()]] = "not a time"
    return reasons.dropna()


def _text_refusals(values: pd.Series, length: int | None) -> pd.Series:
    """`values` (none missing) as the text they are written as: lone surrogates, NUL bytes, over `length`."""
    reasons = pd.Series(None, index=values.index, dtype=object)
    if values.dtype != object and not _text_of(values.dtype, "python"):
        values = values.astype("string")  # Arrow text: numbers, times … as pandas writes them
    if _text_of(values.dtype, "pyarrow"):  # which holds no lone surrogate: NUL bytes and lengths counted in C
        if (nul := values.str.contains("\x00", regex=False).to_numpy(dtype=bool)).any():
            reasons[nul] = "holds a NUL byte"
        lengths = pd.Series(values.str.len().to_numpy(dtype=np.int64), index=values.index)
    else:
        text = [v if isinstance(v, str) else str(v) for v in values]
        if _ODD.search("".join(text)):  # rare: one scan of the whole column, then value by value
            odd = pd.Series(text, index=values.index, dtype=object)
            reasons[odd.str.contains(SURROGATE)] = LONE_SURROGATE
            reasons[odd.str.contains("\x00", regex=False)] = "holds a NUL byte"
        lengths = pd.Series(np.fromiter(map(len, text), dtype=np.int64, count=len(text)), index=values.index)
    if length is not None and (too_long := lengths > length).any():
        reasons[too_long] = lengths[too_long].map(lambda n: f"{n} characters, more than the column's {length}")
    return reasons.dropna()


def _merge(reasons: pd.Series, more: pd.Series) -> None:
    """`more` reasons into `reasons` (an update of none costs as much as one of every row)."""
    if not more.empty:
        reasons.loc[more.index] = more


def _text_of(dtype: Any, storage: str) -> bool:
    return isinstance(dtype, pd.StringDtype) and dtype.storage == storage


def _integer_refusals(values: pd.Series, kind: sa.Integer) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    limit = next(limit for cls, limit in INTEGER_LIMITS if isinstance(kind, cls))
    reasons = pd.Series(None, index=values.index, dtype=object)
    reasons[numbers.isna() | (numbers % 1 != 0)] = "not a whole number"
    reasons[(numbers >= limit) | (numbers < -limit)] = f"outside the column's range (±{limit:,})"
    return reasons.dropna()
