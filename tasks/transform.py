"""Transform: map source records to the target's shape and normalise them, a batch at a time.

Transforms never drop or reject a record: what cannot be normalised is left as it is
(or null) for the data checks to name.
"""

import re
from collections.abc import Callable

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

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


def latest_per_key(frame: pd.DataFrame, key: str, updated: str) -> pd.DataFrame:
    """One row per non-null key, the most recently updated; rows without a key are kept."""
    ordered = frame.sort_values(updated, kind="stable", na_position="first")  # no valid time loses
    keyed = ordered[ordered[key].notna()].drop_duplicates(subset=key, keep="last")
    return pd.concat([keyed, ordered[ordered[key].isna()]]).sort_index()


@task(name="transform", cache_policy=NO_CACHE)
def to_billing_customers(raw: pd.DataFrame) -> pd.DataFrame:
    """CRM customers → rows of `billing.customers`, one per CRM id (latest update wins).

    The result keeps the raw frame's index, so each row can be traced to its source record.
    """
    country = normalise_country(raw["country"])
    rows = pd.DataFrame(
        {
            "crm_id": blank_to_na(raw["id"]),
            "name": blank_to_na(raw["name"]),
            "email": normalise_email(raw["email"]),
            "phone": normalise_phone(raw["phone"], country),
            "country": country,
            "crm_updated_at": pd.to_datetime(raw["updated_at"], utc=True, errors="coerce", format="ISO8601"),
        },
        index=raw.index,
    )
    return latest_per_key(rows, "crm_id", "crm_updated_at")



@task(name="transform", cache_policy=NO_CACHE)
def to_erp_orders(raw: pd.DataFrame) -> pd.DataFrame:
    """Storefront orders → ERP order rows, each with its `lines` (a list of dicts) and line figures.

    Amounts stay in the order's currency here; enrichment converts them. Keeps the raw index.
    """
    lines = raw["lines"].map(_order_lines)
    totals = lines.map(lambda ls: sum(ln["quantity"] * ln["unit_price"] for ln in ls) if _complete(ls) else None)
    return latest_per_key(
        pd.DataFrame(
            {
                "order_id": blank_to_na(raw["id"]),
                "customer_email": normalise_email(raw["customer_email"]),
                "currency": blank_to_na(raw["currency"]).str.upper(),
                "status": blank_to_na(raw["status"]).str.lower(),
                "placed_at": pd.to_datetime(raw["placed_at"], utc=True, errors="coerce", format="ISO8601"),
                "updated_at": pd.to_datetime(raw["updated_at"], utc=True, errors="coerce", format="ISO8601"),
                "total": totals.astype("float64"),
                "line_count": lines.map(len),
                "min_quantity": lines.map(lambda ls: min((ln["quantity"] for ln in ls), default=None)).astype("float64"),
                "lines": lines,
            },
            index=raw.index,
        ),
        "order_id",
        "updated_at",
    )


def _order_lines(lines: object) -> list[dict]:
    """Typed order lines; a number that cannot be read becomes None for the checks to catch."""
    if not isinstance(lines, list):
        return []
    return [
        {
            "line_no": _number(line.get("line_no"), int),
            "sku": line.get("sku"),
            "quantity": _number(line.get("quantity"), int),
            "unit_price": _number(line.get("unit_price"), float),
        }
        for line in lines
    ]


def _number(value: object, kind: type) -> int | float | None:
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _complete(lines: list[dict]) -> bool:
    return bool(lines) and all(ln["quantity"] is not None and ln["unit_price"] is not None for ln in lines)


@task(name="transform", cache_policy=NO_CACHE)
def to_stock_levels(raw: pd.DataFrame) -> pd.DataFrame:
    """ERP stock export rows (one per SKU and warehouse) → one stock level per SKU.

    Each row keeps the index of the SKU's first export row. A count that is not a whole
    number makes the SKU's stock missing, for the checks to name.
    """
    sku = blank_to_na(raw["sku"]).str.upper()
    on_hand = pd.to_numeric(raw["on_hand"], errors="coerce")
    on_hand = on_hand.where(on_hand == on_hand.round())
    frame = pd.DataFrame({"sku": sku, "on_hand": on_hand, "first": raw.index})
    levels = frame.groupby("sku", sort=True).agg(
        stock=("on_hand", lambda s: s.sum() if s.notna().all() else float("nan")), first=("first", "min")
    )
    levels = levels.reset_index().set_index("first")
    levels.index.name = None
    return levels.astype({"stock": "Int64"})
