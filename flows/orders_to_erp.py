"""Storefront → ERP: orders changed since the last run, with their lines, amounts converted to EUR."""

from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa
from interlink.connectors.connections import RestConnection
from interlink.connectors.rest import RestClient
from interlink.connectors.sql import Timestamp
from interlink.data_checks.orders import erp_orders
from interlink.data_checks.policy import Gate, SchemaContract
from interlink.flows.pipeline import Pipeline
from interlink.tasks import retriable
from interlink.tasks.deliver import ChildTable, SqlTarget, tracked_table
from interlink.tasks.enrich import Lookup
from interlink.tasks.ingest import RestSource
from interlink.tasks.transform import blank_to_na, latest_per_key, normalise_email
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE


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


PIPELINE = Pipeline(
    name="orders_to_erp",
    source=RestSource(
        connection="storefront",
        path="/orders",
        cursor_field="updated_at",
        since_param="updated_since",
        paginator={"type": "keyset", "key_field": "updated_at", "key_param": "updated_since", "page_size": 200, "page_size_param": "per_page"},
        records_path="orders",
        sorted=True,
    ),
    source_key="id",
    transform=to_erp_orders,
    enrichers=(Lookup(connection="rates", column="currency", fetch=fetch_rates, apply=convert_to_eur, dataset="/rates"),),
    suite=erp_orders,
    contract=SchemaContract(
        version="1",
        fields={**{f: "string" for f in ("id", "customer_email", "currency", "status", "placed_at", "updated_at")}, "lines": "list"},
    ),
    gate=Gate(policy="quarantine", sensitive=("customer_email",)),
    key="order_id",
    target=SqlTarget(
        connection="erp",
        table=tracked_table(
            "erp_orders",
            sa.Column("order_id", sa.String(32), primary_key=True),
            sa.Column("customer_email", sa.String(254)),
            sa.Column("status", sa.String(20)),
            sa.Column("currency", sa.String(3)),
            sa.Column("total", sa.Double),
            sa.Column("eur_rate", sa.Double),
            sa.Column("total_eur", sa.Double),
            sa.Column("line_count", sa.Integer),
            sa.Column("placed_at", Timestamp),
            sa.Column("updated_at", Timestamp),
        ),
        key="order_id",
        updated="updated_at",
        children=(
            ChildTable(
                sa.Table(
                    "erp_order_lines",
                    sa.MetaData(),
                    sa.Column("order_id", sa.String(32), primary_key=True),
                    sa.Column("line_no", sa.Integer, primary_key=True),
                    sa.Column("sku", sa.String(32)),
                    sa.Column("quantity", sa.Integer),
                    sa.Column("unit_price", sa.Double),
                ),
                column="lines",
                parent_key="order_id",
            ),
        ),
    ),
)
