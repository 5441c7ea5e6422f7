"""CRM → billing: the nightly customer sync.

Customers updated in the CRM since the last committed watermark are read page by page,
mapped to billing's shape, given their country's currency and tax rate, checked, and
upserted into `customers` with the watermark in the same transaction.
"""

import sqlalchemy as sa

from connectors.sql import Timestamp
from data_checks.customers import billing_customers
from data_checks.policy import Gate, SchemaContract
from flows.pipeline import Pipeline
from tasks.deliver import SqlTarget, tracked_table
from tasks.enrich import Lookup, add_billing_terms, lookup_countries
from tasks.ingest import RestSource
from tasks.transform import to_billing_customers

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
    ),
    source_key="id",
    transform=to_billing_customers,
    enrichers=(Lookup(connection="finance", column="country", fetch=lookup_countries, apply=add_billing_terms),),
    suite=billing_customers,
    contract=SchemaContract(
        version="1",
        fields={f: "string" for f in ("id", "name", "email", "phone", "country", "updated_at")},
    ),
    gate=Gate(policy="quarantine", sensitive=("email", "phone")),
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
