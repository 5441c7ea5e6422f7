"""Guards beyond row expectations: schema drift, volume drops and stale data. Pure functions of data."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import pandas as pd
from interlink.data_checks.policy import Gate, SchemaContract

INFERRED = {  # pandas' inferred dtype → JSON type
    "string": "string", "integer": "integer", "floating": "number", "mixed-integer-float": "number",
    "decimal": "number", "boolean": "boolean", "empty": "null",
}
CONTAINERS = ((list, "list"), (dict, "object"))


def observed_types(raw: pd.DataFrame) -> dict[str, str]:
    """The JSON type of each field, from its non-null values ("null" when it has none, "mixed" for several)."""
    return {column: _json_type(raw[column]) for column in raw.columns}


def schema_diff(raw: pd.DataFrame, contract: SchemaContract) -> list[str]:
    """How the batch's fields differ from the contract: new, missing and retyped fields."""
    seen = observed_types(raw)
    diff = [f"new field {name!r} ({kind})" for name, kind in seen.items() if name not in contract.fields]
    diff += [f"missing field {name!r}" for name in contract.fields if name not in seen]
    diff += [
        f"field {name!r} is {seen[name]}, contract {contract.version} says {kind}"
        for name, kind in contract.fields.items()
        if name in seen and seen[name] not in ("null", kind) and not (kind == "number" and seen[name] == "integer")
    ]
    return diff


def volume_problem(rows_read: int, history: list[int], gate: Gate) -> str | None:
    """Why `rows_read` is a suspicious drop against earlier successful runs, or None."""
    if gate.volume_drop is None or len(history) < gate.volume_min_runs:
        return None
    expected = statistics.median(history[: gate.volume_history])
    if expected > 0 and rows_read < gate.volume_drop * expected:
        return (
            f"volume dropped: {rows_read} rows read, expected at least {gate.volume_drop:.0%} of the median "
            f"{expected:g} of the last {min(len(history), gate.volume_history)} successful runs"
        )
    return None


def staleness(raw: pd.DataFrame, field: str, max_age: timedelta | None, now: datetime | None = None) -> str | None:
    """A warning when the newest value of `field` is older than `max_age`, or None."""
    if max_age is None or raw.empty or field not in raw:
        return None
    newest = pd.to_datetime(raw[field], utc=True, errors="coerce", format="ISO8601").max()
    age = (now or datetime.now(UTC)) - newest.to_pydatetime() if pd.notna(newest) else None
    if age is not None and age > max_age:
        return f"stale data: the newest {field} is {newest.isoformat()}, {age} old (more than {max_age})"
    return None


def _json_type(values: pd.Series) -> str:
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred in INFERRED:
        return INFERRED[inferred]
    kinds = {name for value in values.dropna().head(100) for kind, name in CONTAINERS if isinstance(value, kind)}
    return kinds.pop() if len(kinds) == 1 else "mixed"
