"""Transform: map source records to the target's shape and normalise them, a batch at a time.

Transforms never drop or reject a record: what cannot be normalised is left as it is
(or null) for the data checks to name. A record a transform raises on is isolated and
dead-lettered (`transform_batch`).
"""

import re
from collections.abc import Callable

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.isolate import isolated


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
_NOT_DIGIT = re.compile(r"\D")


def blank_to_na(values: pd.Series) -> pd.Series:
    """Strip text, collapse inner whitespace; empty becomes missing."""
    return _each(values, _clean)


def normalise_email(values: pd.Series) -> pd.Series:
    return _each(values, lambda v: (_clean(v) or "").lower() or None)


def normalise_country(values: pd.Series) -> pd.Series:
    def code(value: str) -> str | None:
        text = (_clean(value) or "").upper()
        return COUNTRY_ALIASES.get(text, text) or None

    return _each_distinct(values, code)


def normalise_phone(values: pd.Series, countries: pd.Series) -> pd.Series:
    """E.164 (`+4930123456`): international prefixes kept, national numbers given the country's code."""
    phones = _text(values)
    codes = countries.astype("string").to_numpy(dtype=object, na_value=None)
    return pd.Series([_e164(p, c) for p, c in zip(phones, codes, strict=True)], index=values.index, dtype="string")


def _e164(phone: str | None, country: str | None) -> str | None:
    text = _clean(phone)
    if text is None:
        return None
    digits = _NOT_DIGIT.sub("", text)
    if text.startswith("00"):
        return "+" + digits[2:]
    if text.startswith("+"):
        return "+" + digits
    calling = CALLING_CODES.get(country)
    if calling is None:
        return text  # left as it was where no country code is known
    national = digits.lstrip("0")  # the trunk prefix: 0, or 1 in the North American plan
    if calling == "1" and len(national) == 11 and national.startswith("1"):
        national = national[1:]
    return "+" + calling + national


def _clean(value: str | None) -> str | None:
    return " ".join(value.split()) or None if value is not None else None


def _text(values: pd.Series) -> list[str | None]:
    """Each value as text (a number or a nested list too); None for missing."""
    return [
        v if isinstance(v, str) else None if pd.api.types.is_scalar(v) and pd.isna(v) else str(v)
        for v in values.to_numpy(dtype=object)
    ]


def _each(values: pd.Series, normalise: Callable[[str | None], str | None]) -> pd.Series:
    """`normalise` applied to each value (as text; None for missing), as a string column like `values`."""
    return pd.Series([normalise(v) for v in _text(values)], index=values.index, dtype="string")


def _each_distinct(values: pd.Series, normalise: Callable[[str | None], str | None]) -> pd.Series:
    """Like `_each`, calling `normalise` once per distinct value: for columns of few values, such as codes."""
    codes, distinct = pd.factorize(pd.Series(_text(values), dtype=object))
    done = pd.array([normalise(v) for v in distinct] + [normalise(None)], dtype="string")
    return pd.Series(done.take(codes), index=values.index)


def latest_per_key(frame: pd.DataFrame, key: str, updated: str | None) -> pd.DataFrame:
    """One row per non-null key, the most recently updated (without `updated`, the last); rows without a key are kept."""
    ordered = frame.sort_values(updated, kind="stable", na_position="first") if updated else frame  # no valid time loses
    keyed = ordered[ordered[key].notna()].drop_duplicates(subset=key, keep="last")
    return pd.concat([keyed, ordered[ordered[key].isna()]]).sort_index()
