"""CRM → billing: the nightly customer sync.

Customers updated in the CRM since the last committed watermark are read page by page,
mapped to billing's shape, given their country's currency and tax rate, checked, and
upserted into `customers` with the watermark in the same transaction.
"""

from collections.abc import Iterable
from urllib.parse import quote

import pandas as pd
import sqlalchemy as sa
from interlink.connectors.connections import RestConnection
from interlink.connectors.errors import NotFound
from interlink.connectors.rest import RestClient
from interlink.connectors.sql import Timestamp
from interlink.data_checks.customers import billing_customers
from interlink.data_checks.policy import Gate, SchemaContract
from interlink.flows.pipeline import Pipeline
from interlink.tasks import retriable
from interlink.tasks.deliver import SqlTarget, tracked_table
from interlink.tasks.enrich import Lookup
from interlink.tasks.ingest import RestSource
from interlink.tasks.transform import (
    blank_to_na,
    latest_per_key,
    normalise_country,
    normalise_email,
    normalise_phone,
    per_distinct,
)
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE


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
    """Add `currency` and `tax_rate` by country; unknown countries get nulls for the checks to catch.

    A tax rate that is not a number fails the rows of that country only (they are dead-lettered).
    """
    present = set(rows["country"].dropna().unique())
    known = {code: t for code, t in terms.items() if t and code in present}
    for code, t in known.items():
        try:
            float(t["tax_rate"] if t.get("tax_rate") is not None else "nan")
        except (TypeError, ValueError):
            raise ValueError(f"tax_rate: finance answered {str(t['tax_rate'])[:40]!r} for {code}, not a number") from None

    def by_country(field: str, dtype: str) -> pd.api.extensions.ExtensionArray:
        return per_distinct(rows["country"], lambda code: known[code][field] if code in known else None, dtype)

    return rows.assign(currency=by_country("currency", "string"), tax_rate=by_country("tax_rate", "float64"))


PIPELINE = Pipeline(
    name="crm_to_billing",
    source=RestSource(
        connection="crm",
        path="/customers",
        cursor_field="updated_at",
        since_param="updated_since",
        until_param="updated_before",
        paginator={"type": "cursor", "cursor_path": "next_cursor"},
        params={"limit": 500},
        sorted=True,
    ),
    source_key="id",
    transform=to_billing_customers,
    enrichers=(Lookup(connection="finance", column="country", fetch=lookup_countries, apply=add_billing_terms, dataset="/countries"),),
    suite=billing_customers,
    contract=SchemaContract(
        version="1",
        fields={f: "string" for f in ("id", "name", "email", "phone", "country", "updated_at")},
    ),
    gate=Gate(policy="quarantine", sensitive=("name", "email", "phone")),
    key="crm_id",
    target=SqlTarget(
        connection="billing",
        table=tracked_table(
            "customers",
            sa.Column("crm_id", sa.String(32), primary_key=True),
            sa.Column("name", sa.String(200)),
            sa.Column("email", sa.String(254)),
            sa.Column("phone", sa.String(32)),
            sa.Column("country", sa.String(8)),
            sa.Column("currency", sa.String(3)),
            sa.Column("tax_rate", sa.Double),
            sa.Column("crm_updated_at", Timestamp),
        ),
        key="crm_id",
        updated="crm_updated_at",
    ),
)
