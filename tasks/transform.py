"""Transform: map source records to the target's shape and normalise them, a batch at a time.

Transforms never drop a record: what cannot be normalised is left as it is (or null) for the
data checks to name, and a number where text belongs becomes its text. A value that has no
text of its own (an object, a list, bytes: `NotText`) raises, naming its column; a record a
transform raises on is isolated and dead-lettered (`transform_batch`).
"""

import operator
import sys
import unicodedata
from collections.abc import Callable
from functools import cache
from itertools import repeat
from typing import Any, NoReturn

import numpy as np
import pandas as pd
from interlink.tasks.isolate import isolated
from pandas.api.extensions import ExtensionArray
from prefect import task
from prefect.cache_policies import NO_CACHE


@task(name="transform", cache_policy=NO_CACHE)
def transform_batch(step: Callable, raw: pd.DataFrame, groups: pd.Series | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An integration's transform on a batch; the records it fails on (all of a `groups` value together)
    come back as failures instead of failing the batch."""
    return isolated(getattr(step, "fn", step), raw, groups)


COUNTRY_ALIASES = {"UK": "GB", "USA": "US", "U.S.": "US", "GER": "DE", "DEU": "DE", "FRA": "FR"}
CALLING_CODES = {
    "US": "1", "CA": "1", "GB": "44", "DE": "49", "FR": "33", "NL": "31", "ES": "34", "IT": "39",
    "SE": "46", "PL": "48", "CH": "41", "AU": "61", "JP": "81", "IN": "91", "BR": "55", "MX": "52",
    "IE": "353", "DK": "45", "NO": "47", "BE": "32",
}
_NOT_DIGITS = bytes(set(range(256)) - set(b"0123456789\n"))  # what `_digits` deletes


def blank_to_na(values: pd.Series) -> pd.Series:
    """Strip text, collapse inner whitespace; empty becomes missing."""
    return _string_series(_collapsed(_text(values)), values.index)


def normalise_email(values: pd.Series) -> pd.Series:
    """Trimmed and lower-cased (inner whitespace collapsed, for the checks to name)."""
    texts = _text(values)  # emails rarely hold whitespace: one split-join-lower pass beats `_collapsed`'s check here
    return _string_series(np.fromiter(map(str.lower, map(" ".join, map(str.split, texts))), dtype=object, count=len(texts)), values.index)


def normalise_country(values: pd.Series) -> pd.Series:
    """Upper-cased ISO codes with aliases resolved (`uk` → `GB`), worked out once per distinct value."""
    return _string_series(np.asarray(per_distinct(_text(values), _country_code)), values.index)


def _country_code(text: str) -> str:
    code = " ".join(text.split()).upper()
    return COUNTRY_ALIASES.get(code, code)


def per_distinct(values: pd.Series | np.ndarray, function: Callable[[Any], Any], dtype: str = "object") -> ExtensionArray:
    """`function` of each value, worked out once per distinct value, as an array of `dtype`; missing where a value is."""
    codes, distinct = pd.factorize(values)
    results = pd.Series([function(v) for v in distinct] + [None], dtype=object).astype(dtype)
    return results.array.take(codes)  # a missing value's code, -1, takes the trailing None


def normalise_phone(values: pd.Series, countries: pd.Series) -> pd.Series:
    """E.164 (`+4930123456`): international prefixes kept, national numbers given the country's code.

    Digits of any script count as their ASCII digit (`+4٩١…` is `+491…`), and a fullwidth `＋` as `+`.
    """
    text = _text(values)
    other = ~_flags(str.isascii, text)
    text[other] = [t.translate(_ascii_digits()) for t in text[other]]
    text = _collapsed(text)
    digits = _digits(text)
    head = text.astype("U2")
    plus, zeros = np.strings.startswith(head, "+"), head == "00"
    calling = np.asarray(per_distinct(_text(countries), CALLING_CODES.get))  # no country (""): None
    national = ~(plus | zeros) & (calling != None) & (text != "")  # noqa: E711 (element-wise)
    result = text  # left as it was where no country code is known
    result[plus] = "+" + digits[plus]
    result[zeros] = "+" + _map(operator.getitem, digits[zeros], slice(2, None))
    result[national] = "+" + calling[national] + _national(digits[national], calling[national])
    return _string_series(result, values.index)


def _digits(texts: np.ndarray) -> np.ndarray:
    """The ASCII digits of each text, read in one pass over the texts joined (collapsed text holds no line break)."""
    joined = "\n".join(texts).encode("utf-8", "surrogatepass").translate(None, _NOT_DIGITS).decode()
    return np.array(joined.split("\n") if len(texts) else [], dtype=object)


def _national(digits: np.ndarray, calling: np.ndarray) -> np.ndarray:
    """National numbers without their trunk prefix: 0, or 1 in the North American plan (`1 555 123 4567`)."""
    national = _map(str.lstrip, digits, "0")
    nanp = (calling == "1") & (_map(len, national) == 11) & _flags(str.startswith, national, "1")
    national[nanp] = _map(operator.getitem, national[nanp], slice(1, None))
    return national


@cache
def decimal_digits() -> tuple[int, ...]:
    """Every decimal digit of Unicode (category Nd, what a regex's `\\d` matches), as code points; found once per process."""
    return tuple(c for c in range(sys.maxunicode + 1) if chr(c).isdecimal())


@cache
def _ascii_digits() -> dict[int, str]:
    """A `str.translate` table: each non-ASCII decimal digit (Arabic-Indic, fullwidth, …) → its ASCII digit; `＋` → `+`."""
    digits = {c: str(unicodedata.decimal(chr(c))) for c in decimal_digits() if c >= 128}
    return digits | {ord("＋"): "+"}


class NotText(TypeError):
    """A value with no text of its own (an object, a list, bytes …) in a column a text normaliser reads."""


def _text(values: pd.Series) -> np.ndarray:
    """Each value as text (a number too), in a new array; "" for missing. An object, a list or another value whose
    text would only be Python's spelling of it raises `NotText`, naming the column (only values that are not text
    are looked at, so text columns cost nothing more)."""
    if isinstance(values.dtype, pd.StringDtype):
        return values.to_numpy(dtype=object, na_value="", copy=True)
    scalar, missing, column = pd.api.types.is_scalar, pd.isna, values.name
    return np.array(
        [
            v if isinstance(v, str) else ("" if missing(v) else str(v)) if scalar(v) and not isinstance(v, bytes) else _not_text(v, column)
            for v in values.to_numpy(dtype=object)
        ],
        dtype=object,
    )


def _not_text(value: Any, column: Any) -> NoReturn:
    """Raise `NotText`: what `value` is (an object, a list …), where text belongs in `column`."""
    kind = _KINDS.get(type(value)) or next((k for t, k in _KINDS.items() if isinstance(value, t)), f"a {type(value).__name__}")
    raise NotText(f"{column}: {kind} where text belongs" if column is not None else f"{kind} where text belongs")


_KINDS = {dict: "an object", list: "a list", tuple: "a list", set: "a set", frozenset: "a set", np.ndarray: "a list",
          bytes: "bytes", bytearray: "bytes", memoryview: "bytes"}


def _collapsed(texts: np.ndarray) -> np.ndarray:
    """Each text stripped and its inner runs of whitespace made one space, as `" ".join(text.split())`."""
    stripped = _map(str.strip, texts)
    joined = "|".join(stripped)
    if joined.isprintable() and "  " not in joined:  # printable text holds no whitespace but " "
        return stripped
    odd = ~_flags(str.isprintable, stripped) | _flags(operator.contains, stripped, "  ")
    stripped[odd] = [" ".join(t.split()) for t in stripped[odd]]
    return stripped


def _map(function: Callable, texts: np.ndarray, *args: Any) -> np.ndarray:
    """`function(text, *args)` for each text, as an array."""
    return np.fromiter(map(function, texts, *(repeat(a) for a in args)), dtype=object, count=len(texts))


def _flags(test: Callable[..., bool], texts: np.ndarray, *args: Any) -> np.ndarray:
    """`test(text, *args)` for each text, as a boolean array."""
    return np.fromiter(map(test, texts, *(repeat(a) for a in args)), dtype=bool, count=len(texts))


def _string_series(texts: np.ndarray, index: pd.Index) -> pd.Series:
    """A string column of `texts`, empty text missing."""
    return pd.Series(pd.array(np.where(texts == "", None, texts), dtype="string"), index=index)


def latest_per_key(frame: pd.DataFrame, key: str, updated: str | None) -> pd.DataFrame:
    """One row per non-null key, the most recently updated (without `updated`, the last); rows without a key are kept."""
    keys = frame[key]
    contested = np.flatnonzero(keys.duplicated(keep=False) & keys.notna())  # positions of keys several rows share
    rivals = frame[[key, updated] if updated else [key]].iloc[contested].reset_index(drop=True)
    if updated:
        rivals = rivals.sort_values(updated, kind="stable", na_position="first")  # no valid time loses
    kept = np.ones(len(frame), dtype=bool)
    kept[contested] = False
    kept[contested[rivals.index[~rivals[key].duplicated(keep="last")]]] = True
    return frame[kept].sort_index()
