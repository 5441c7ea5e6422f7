"""A frame as the CSV PostgreSQL's `COPY … (FORMAT csv)` reads, written by Arrow's CSV writer.

Every value is quoted and a missing one is an unquoted empty field, which is COPY's NULL in CSV: so text that reads
like a NULL marker (or `\\.`) stays text. Times go to the microsecond, truncated as the INSERT path binds them. Bytes
go in `bytea`'s hex form (`\\x00ff`). A column Arrow cannot type (mixed values) is written value by value, as
PostgreSQL writes the values bound as parameters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv

_OPTIONS = csv.WriteOptions(include_header=False, quoting_style="all_valid")


def csv_bytes(rows: pd.DataFrame) -> memoryview:
    """`rows` as CSV lines without a header, each value as PostgreSQL stores it when bound as a parameter."""
    table = pa.table({str(i): _array(rows.iloc[:, i]) for i in range(rows.shape[1])})
    sink = pa.BufferOutputStream()
    csv.write_csv(table, sink, _OPTIONS)
    return memoryview(sink.getvalue())


def _array(values: pd.Series) -> pa.Array:
    try:
        array = pa.Array.from_pandas(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed values, or integers beyond 64 bits
        return pa.array([_written(v) for v in values.to_numpy(dtype=object, na_value=None)], pa.string())
    if pa.types.is_timestamp(array.type):
        return pc.cast(array, pa.timestamp("us", array.type.tz), safe=False)
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type) or pa.types.is_fixed_size_binary(array.type):
        return pa.array([_written(v) for v in array.to_pylist()], pa.string())
    return array


def _written(value: object) -> str | None:
    """A value of a mixed column as PostgreSQL writes it when it is bound as a parameter (None: missing, as
    `to_numpy(na_value=None)` gives NaN, NaT and NA)."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return value if isinstance(value, str) else str(value)
