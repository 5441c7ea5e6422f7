"""A frame as the CSV text PostgreSQL's `COPY … (FORMAT csv, NULL …)` reads, built column by column.

pandas' `to_csv` hands every row to Python's `csv` writer; here each column becomes a list of text at once
(times and numbers through numpy), and only a column holding a `,`, `"`, `\\`, CR or LF quotes value by value.
A quoted value is never NULL, so text that reads like the NULL marker stays text. A missing value is `null`.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_SPECIAL = re.compile(r'[,"\r\n\\]')


def csv_text(rows: pd.DataFrame, null: str) -> str:
    """`rows` as CSV lines, without a header, each value as PostgreSQL stores it when bound as a parameter; `null` where missing."""
    columns = [_column(rows.iloc[:, i], null) for i in range(rows.shape[1])]
    return "\n".join(map(",".join, zip(*columns, strict=True))) + "\n"


def _column(values: pd.Series, null: str) -> list[str]:
    missing = values.isna().to_numpy()
    if pd.api.types.is_datetime64_dtype(values):  # naive times, to the microsecond as the INSERT path binds them
        text = np.datetime_as_string(values.to_numpy(), unit="us", casting="unsafe").astype(object)
    elif values.dtype == bool:
        text = np.where(values.to_numpy(), "true", "false").astype(object)
    elif isinstance(values.dtype, np.dtype) and values.dtype.kind in "iuf":
        text = values.to_numpy().astype(str).astype(object)
    else:
        text = values.to_numpy(dtype=object, na_value="", copy=True)
        if pd.api.types.infer_dtype(text, skipna=False) != "string":
            text = np.array([_written(v) for v in text], dtype=object)
        if _SPECIAL.search("\x00".join(text)):  # rare: one scan of the column, then value by value
            text = np.array([_quoted(v) if _SPECIAL.search(v) else v for v in text], dtype=object)
    text[missing] = null
    return text.tolist()


def _written(value: object) -> str:
    """A value of a mixed column as PostgreSQL writes it when it is bound as a parameter."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'
