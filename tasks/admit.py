"""Admit: which raw records of a batch go on to the transform, and why the others cannot.

A record is refused (dead-lettered at stage `ingest`) when it is not an object, when it holds what
JSON does not allow (NaN, 1e400, a key twice: `interlink.connectors.decoding`), when a field's text holds a
lone surrogate (which Arrow-backed text columns cannot hold), when a field holds a
list or an object where the source contract declares a scalar (or a scalar where it declares a
list or an object), or when its cursor time (or epoch number, `cursor_unit`) lies further ahead than `interlink.tasks.watermark.FUTURE`.
A field the contract declares but the batch lacks becomes nulls.
"""

from __future__ import annotations

import json
from datetime import timedelta
from itertools import chain
from numbers import Number
from typing import Any

import pandas as pd
import pyarrow as pa
from interlink.connectors.decoding import Undecodable
from interlink.connectors.refusals import LONE_SURROGATE, SURROGATE
from interlink.data_checks.policy import SchemaContract
from interlink.tasks.watermark import FUTURE, horizon, times

CONTAINERS = {"list": list, "object": dict}
NO_FAILURES = pd.DataFrame(columns=["reason", "values"])


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """`frame`'s rows as JSON-able dicts (times in ISO 8601), as a dead letter keeps them."""
    return as_json(frame, orient="records")


def as_json(data: pd.DataFrame | pd.Series, **options: Any) -> Any:
    """`data` written as JSON by pandas (times in ISO 8601, other objects as text) and read back.

    pandas' JSON writer cannot encode text holding a lone surrogate, which a source may send (JavaScript writes
    one as `"\\ud800"`); such values are swapped for placeholders while pandas writes, then put back as they were.
    """
    options = {"date_format": "iso", "default_handler": str, **options}
    try:
        return json.loads(data.to_json(**options))
    except UnicodeEncodeError:
        held: dict[str, Any] = {}

        def hold(value: Any) -> Any:
            if isinstance(value, str | dict | list) and not _encodable(value):
                held[token := f"\x00unencodable {len(held)}\x00"] = value
                return token
            return value

        def swap(column: pd.Series) -> pd.Series:
            return column.map(hold) if column.dtype == object or isinstance(column.dtype, pd.StringDtype) else column

        swapped = swap(data) if isinstance(data, pd.Series) else data.apply(swap)
        return _put_back(json.loads(swapped.to_json(**options)), held)


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _put_back(value: Any, held: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return held.get(value, value)
    if isinstance(value, dict):
        return {k: _put_back(v, held) for k, v in value.items()}
    if isinstance(value, list):
        return [_put_back(v, held) for v in value]
    return value


def missing(value: Any) -> bool:
    """Whether a value, of whatever type a source sends, is absent: None, NaN, NaT, NA."""
    return value is None or (pd.api.types.is_scalar(value) and pd.isna(value))


def records_frame(records: list[Any]) -> tuple[pd.DataFrame, list[tuple[Any, str]]]:
    """The records that are objects, as a frame, and each other one with the reason it is refused (see `Pages`)."""
    pages = Pages()
    pages.add(records)
    return pages.frame(), pages.refused


class Pages:
    """Pages of records gathered into one frame; `refused` holds each record that cannot be a row, with why.

    A page whose fields are all scalars of one JSON type each (text, integer, number, boolean, null) becomes an
    Arrow table, and the tables become one frame at the end: about half the work of a pandas frame per page, to
    the same columns. Any other page is read by pandas, as before: a nested field (Arrow would merge objects
    into structs), mixed types, integers beyond 64 bits, or text holding a lone surrogate. Such text is not
    valid Unicode: an Arrow text column cannot hold it, and no target can store it, so its record is refused
    here, naming the fields.
    """

    SCALARS = (pa.types.is_string, pa.types.is_int64, pa.types.is_float64, pa.types.is_boolean, pa.types.is_null)

    def __init__(self) -> None:
        self._parts: list[pa.Table | pd.DataFrame] = []
        self.refused: list[tuple[Any, str]] = []

    def add(self, records: list[Any]) -> None:
        objects = [r for r in records if isinstance(r, dict)]
        self.refused += [_refusal(r) for r in records if not isinstance(r, dict)]
        table = _scalar_table(objects)
        if table is None:
            frame, odd = _pandas_frame(objects)
            self.refused += [(objects[n], "; ".join(f"{f}: {LONE_SURROGATE}" for f in fields)) for n, fields in odd.items()]
        self._parts.append(frame if table is None else table)

    def frame(self) -> pd.DataFrame:
        """Every page's rows, in order, indexed from 0."""
        parts = self._parts
        if parts and all(isinstance(p, pa.Table) for p in parts):
            try:
                return pa.concat_tables(parts, promote_options="permissive").combine_chunks().to_pandas()
            except pa.ArrowException:  # a field of different types on two pages: pandas makes it objects
                pass
        frames = [p.to_pandas() if isinstance(p, pa.Table) else p for p in parts]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0] if frames else pd.DataFrame()


def _refusal(record: Any) -> tuple[Any, str]:
    """A record that is no object, or holds what JSON does not allow (`interlink.connectors.decoding`), with why."""
    if isinstance(record, Undecodable):
        return record.record, record.why
    return record, f"the record is {_json_kind(record)}, not an object"


def _scalar_table(objects: list[dict]) -> pa.Table | None:
    """The records as an Arrow table with a column per field (in order of first appearance), or None where a
    field is not scalars of one type (see `Pages`)."""
    if not objects or not objects[0]:
        return None
    try:
        if set().union(*objects).difference(objects[0]):  # a field the first record lacks (Arrow would look no further)
            names = list(dict.fromkeys(chain.from_iterable(objects)))
            table = pa.table([pa.array([record.get(name) for record in objects]) for name in names], names=names)
        else:
            table = pa.Table.from_pylist(objects)
    except (pa.ArrowException, OverflowError, UnicodeEncodeError):
        return None
    return table if all(any(scalar(t) for scalar in Pages.SCALARS) for t in table.schema.types) else None


def _pandas_frame(objects: list[dict]) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """The records as pandas makes a frame of them, less those holding a lone surrogate, which come back by
    position with their fields."""
    try:
        frame = pd.DataFrame.from_records(objects)
        odd = _surrogate_fields({c: frame[c] for c in frame.columns if frame[c].dtype == object})  # Arrow text holds none
    except UnicodeEncodeError:  # rare: a text column's Arrow array refused one, so look at every record
        odd = _surrogate_fields(dict(pd.DataFrame(objects, dtype=object).items()))
        return pd.DataFrame.from_records([r for n, r in enumerate(objects) if n not in odd]), odd
    return (frame.drop(index=list(odd)).reset_index(drop=True) if odd else frame), odd


def _surrogate_fields(columns: dict[str, pd.Series]) -> dict[Any, list[str]]:
    """The fields holding text with a lone surrogate, by row; one scan of a column's text, then value by value."""
    found: dict[Any, list[str]] = {}
    for name, values in columns.items():
        if SURROGATE.search("".join(v for v in values if isinstance(v, str))):
            for index in values.index[[isinstance(v, str) and SURROGATE.search(v) is not None for v in values]]:
                found.setdefault(index, []).append(name)
    return dict(sorted(found.items()))


def admit(
    raw: pd.DataFrame, contract: SchemaContract | None, cursor: str | None, moments: pd.Series | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`raw` with the contract's missing fields as nulls, and the refused records (`reason`, `values`), indexed like it.
    `moments`: the cursor column's `times`, when the batch's reader parsed them already (for a numeric cursor of epoch
    seconds or milliseconds, only they say it holds times)."""
    if contract and (missing := [f for f in contract.fields if f not in raw.columns]):
        raw = raw.assign(**dict.fromkeys(missing))
    reasons: dict[Any, list[str]] = {}
    values: dict[Any, dict[str, Any]] = {}

    def refuse(index: Any, field: str, reason: str) -> None:
        reasons.setdefault(index, []).append(f"{field}: {reason}")
        values.setdefault(index, {})[field] = raw.at[index, field]

    for field, kind in (contract.fields.items() if contract else ()):
        for index, wrong in _mistyped(raw[field], kind).items():
            refuse(index, field, f"{wrong} where the contract says {kind}")
    if cursor and cursor in raw.columns and (moments is not None or not pd.api.types.is_numeric_dtype(raw[cursor])):
        column = raw[cursor]
        moments = times(column) if moments is None else moments
        for index in moments.index[moments > horizon()]:
            refuse(index, cursor, f"{column[index]} is in the future (more than {FUTURE / timedelta(hours=1):g} h ahead): it would move the watermark past every later change")
    if not reasons:
        return raw, NO_FAILURES
    failures = pd.DataFrame({"reason": {i: "; ".join(r) for i, r in reasons.items()}, "values": values}, columns=["reason", "values"])
    return raw, failures


def _mistyped(values: pd.Series, kind: str) -> pd.Series:
    """What each value wrongly is ('an object', 'a list', 'text', …), for the values that do not fit `kind`."""
    if values.dtype != object:
        return pd.Series(dtype=object) if kind not in CONTAINERS or values.isna().all() else values[values.notna()].map(_json_kind)
    container = CONTAINERS.get(kind)
    wrong = [
        (index, _json_kind(v))
        for index, v in values.items()
        if (isinstance(v, dict | list) if container is None else not isinstance(v, container) and not missing(v))
    ]
    return pd.Series(dict(wrong), dtype=object)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, Number) else f"a {type(value).__name__}"
