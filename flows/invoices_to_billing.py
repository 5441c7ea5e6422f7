"""ERP → billing: invoices, SQL to SQL.

Invoices changed in the ERP's `erp_invoices` table since the last committed watermark (less a
five-minute window for late commits) are read in chunks, typed, checked, and upserted into
billing's `invoices` with the watermark in the same transaction. The ERP keeps times as text.
"""

from datetime import timedelta

import pandas as pd
import sqlalchemy as sa
from interlink.connectors.sql import Timestamp
from interlink.data_checks.invoices import billing_invoices
from interlink.flows.pipeline import Pipeline
from interlink.tasks.deliver import SqlTarget, tracked_table
from interlink.tasks.ingest import SqlSource
from interlink.tasks.transform import blank_to_na
from prefect import task
from prefect.cache_policies import NO_CACHE


@task(name="transform", cache_policy=NO_CACHE)
def to_billing_invoices(raw: pd.DataFrame) -> pd.DataFrame:
    """ERP invoices (values as the database gave them) → rows of `billing.invoices`, keeping the raw index.

    What cannot be read becomes null for the checks to name; `due_date_unreadable` marks a due
    date that was given but is not a date.
    """
    due = pd.to_datetime(raw["due_date"], errors="coerce", format="ISO8601")
    return pd.DataFrame(
        {
            "invoice_id": pd.to_numeric(raw["id"]).astype("Int64"),
            "customer_id": blank_to_na(raw["customer_id"]),
            "amount": pd.to_numeric(raw["amount"], errors="coerce").round(2),
            "currency": blank_to_na(raw["currency"]).str.upper(),
            "status": blank_to_na(raw["status"]).str.lower(),
            "notes": raw["notes"].astype("string"),
            "due_date": pd.Series([d.date() if pd.notna(d) else None for d in due], index=raw.index, dtype=object),
            "due_date_unreadable": due.isna() & raw["due_date"].notna(),
            "erp_updated_at": pd.to_datetime(raw["updated_at"], utc=True, errors="coerce", format="ISO8601"),
        },
        index=raw.index,
    )


PIPELINE = Pipeline(
    name="invoices_to_billing",
    source=SqlSource(connection="erp", table="erp_invoices", cursor="updated_at", key="id", lag=timedelta(minutes=5)),
    source_key="id",
    transform=to_billing_invoices,
    suite=billing_invoices,
    key="invoice_id",
    target=SqlTarget(
        connection="billing",
        table=tracked_table(
            "invoices",
            sa.Column("invoice_id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("customer_id", sa.String(32)),
            sa.Column("amount", sa.Numeric(12, 2)),
            sa.Column("currency", sa.String(3)),
            sa.Column("status", sa.String(16)),
            sa.Column("notes", sa.String(500)),
            sa.Column("due_date", sa.Date),
            sa.Column("erp_updated_at", Timestamp),
        ),
        key="invoice_id",
        updated="erp_updated_at",
    ),
)
