"""Enrich: look data up in another system, once per distinct value, never per record."""

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

import pandas as pd
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.errors import NotFound
from connectors.rest import RestClient
from interlink.settings import RestConnection, Settings
from tasks import retriable


@dataclass(frozen=True)
class Lookup:
    """Enrich rows from another system, looking up each distinct value of `column` once per run.

    `fetch(connection, values)` returns what it found for each value (None if unknown);
    `apply(rows, found)` adds it to the rows. `cache` carries the finds across batches.
    """

    connection: str
    column: str
    fetch: Task
    apply: Task

    def enrich(self, settings: Settings, rows: pd.DataFrame, cache: dict) -> pd.DataFrame:
        missing = set(rows[self.column].dropna().unique()) - cache.keys()
        if missing:
            cache.update(self.fetch(settings.connection(self.connection), missing))
        return self.apply(rows, cache)

CountryTerms = dict[str, dict | None]  # country code → {"currency", "tax_rate"}, None if unknown


@task(name="lookup-countries", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retriable)
def lookup_countries(connection: RestConnection, codes: Iterable[str]) -> CountryTerms:
    """Billing terms of each country code from the finance API; unknown codes map to None."""
    terms: CountryTerms = {}
    with RestClient.connect("finance", connection) as client:
        for code in sorted(codes):
            try:
                terms[code] = client.get_json(f"/countries/{quote(code, safe='')}")
            except NotFound:
                terms[code] = None
    get_run_logger().info("looked up %d countries (%d unknown)", len(terms), sum(v is None for v in terms.values()))
    return terms


@task(name="enrich", cache_policy=NO_CACHE)
def add_billing_terms(rows: pd.DataFrame, terms: CountryTerms) -> pd.DataFrame:
    """Add `currency` and `tax_rate` by country; unknown countries get nulls for the checks to catch."""
    known = {code: t for code, t in terms.items() if t}
    return rows.assign(
        currency=rows["country"].map({c: t["currency"] for c, t in known.items()}).astype("string"),
        tax_rate=rows["country"].map({c: t["tax_rate"] for c, t in known.items()}).astype("float64"),
    )


@task(name="lookup-rates", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retriable)
def fetch_rates(connection: RestConnection, currencies: Iterable[str]) -> dict[str, float | None]:
    """How many units of each currency one EUR buys, from one call to the rates API; None if unknown."""
    with RestClient.connect("rates", connection) as client:
        rates = client.get_json("/rates", {"base": "EUR"})["rates"]
    found = {code: rates.get(code) for code in currencies}
    get_run_logger().info("rates for %d currencies (%d unknown)", len(found), sum(v is None for v in found.values()))
    return found


@task(name="enrich", cache_policy=NO_CACHE)
def convert_to_eur(rows: pd.DataFrame, rates: dict[str, float | None]) -> pd.DataFrame:
    """Add the EUR rate and the order total in EUR (the ERP's currency); unknown currencies get nulls."""
    rate = rows["currency"].map({c: r for c, r in rates.items() if r}).astype("float64")
    return rows.assign(eur_rate=rate, total_eur=(rows["total"] / rate).round(2))
