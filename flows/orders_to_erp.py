"""Storefront → ERP: orders changed since the last run, with their lines, amounts converted to EUR."""

import sqlalchemy as sa

from connectors.sql import Timestamp
from data_checks.orders import erp_orders
from data_checks.policy import Gate, SchemaContract
from flows.pipeline import Pipeline
from tasks.deliver import ChildTable, SqlTarget, tracked_table
from tasks.enrich import Lookup, convert_to_eur, fetch_rates
from tasks.ingest import RestSource
from tasks.transform import to_erp_orders

PIPELINE = Pipeline(
    name="orders_to_erp",
    source=RestSource(
        connection="storefront",
        path="/orders",
        cursor_field="updated_at",
        since_param="updated_since",
        paginator={"type": "page_number", "total_pages_path": "total_pages"},
        records_path="orders",
        params={"per_page": 200},
    ),
    source_key="id",
    transform=to_erp_orders,
    enrichers=(Lookup(connection="rates", column="currency", fetch=fetch_rates, apply=convert_to_eur),),
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
