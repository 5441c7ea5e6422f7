"""CRM → billing: the nightly customer sync.

Customers updated in the CRM since the last committed watermark are read page by page,
mapped to billing's shape, given their country's currency and tax rate, checked, and
upserted into `customers` with the watermark in the same transaction. Rows that fail
the checks go to the dead-letter store; `replay` runs them through again.
"""

import pandas as pd
import sqlalchemy as sa
from prefect import flow
from prefect.runtime import flow_run

from connectors.sql import Timestamp
from data_checks.customers import billing_customers
from interlink.deadletter import OPEN, REPLAYED, RESOLVED, DeadLetters
from interlink.ledger import Counts, Entry, Ledger
from interlink.settings import Settings
from tasks.check import check
from tasks.deliver import SqlTarget, deliver, tracked_table
from tasks.enrich import CountryTerms, add_billing_terms, lookup_countries
from tasks.ingest import IncrementalEndpoint, fetch_chunk
from tasks.quarantine import quarantine
from tasks.report import publish_report
from tasks.transform import to_billing_customers
from tasks.watermark import committed_watermark

INTEGRATION = "crm_to_billing"

CUSTOMERS = IncrementalEndpoint(connection="crm", path="/customers", cursor_field="updated_at", since_param="updated_since")

BILLING_CUSTOMERS = SqlTarget(
    tracked_table(
        "customers",
        sa.Column("crm_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("email", sa.String(254)),
        sa.Column("phone", sa.String(32)),
        sa.Column("country", sa.String(8)),
        sa.Column("currency", sa.String(3)),
        sa.Column("tax_rate", sa.Float),
        sa.Column("crm_updated_at", Timestamp),
    ),
    key="crm_id",
    updated="crm_updated_at",
)


@flow(name=INTEGRATION)
def sync(full_refresh: bool = False, chunk_size: int = 10_000) -> dict:
    """Sync customers changed since the last run (all of them with `full_refresh`)."""
    settings = Settings.load()
    since = None if full_refresh else committed_watermark(settings.billing.url, INTEGRATION)
    with _ledgered(settings, "sync", since) as entry:
        terms: CountryTerms = {}
        page = None
        while True:
            chunk = fetch_chunk(CUSTOMERS, settings.rest("crm"), since, page, chunk_size)
            entry.counts += _process(settings, chunk.records, terms, chunk.watermark, RESOLVED)
            entry.watermark = chunk.watermark or entry.watermark
            page = chunk.next_page
            if page is None:
                break
        entry.report = str(publish_report(INTEGRATION, settings.home, _run_name(), entry.counts, (since, entry.watermark), settings.billing.masked_url))
    return _summary(entry)


@flow(name=f"{INTEGRATION}_replay")
def replay() -> dict:
    """Run the open dead letters through transform → enrich → check → deliver again."""
    settings = Settings.load()
    records = [e["payload"] for e in DeadLetters(settings.state.url).entries(INTEGRATION, OPEN)]
    with _ledgered(settings, "replay", None) as entry:
        if records:
            entry.counts = _process(settings, pd.DataFrame.from_records(records), {}, None, REPLAYED)
        entry.report = str(publish_report(INTEGRATION, settings.home, _run_name(), entry.counts, (None, None), settings.billing.masked_url))
    return _summary(entry)


def _process(settings: Settings, raw: pd.DataFrame, terms: CountryTerms, watermark: str | None, settled: str) -> Counts:
    """One batch through the four steps; `terms` caches country lookups for the whole run."""
    if raw.empty:
        return Counts()
    rows = to_billing_customers(raw)
    unknown = set(rows["country"].dropna()) - terms.keys()
    if unknown:
        terms.update(lookup_countries(settings.rest("finance"), unknown))
    rows = add_billing_terms(rows, terms)
    validation = check(rows, billing_customers(), settings.home, _run_name())
    failures = validation.row_failures
    quarantined = quarantine(settings.state.url, INTEGRATION, raw, rows, failures, "crm_id", settled, flow_run.id)
    delivered = deliver(settings.billing.url, BILLING_CUSTOMERS, rows.drop(failures.index), INTEGRATION, watermark, flow_run.id)
    return delivered + Counts(rows_read=len(raw), rows_quarantined=quarantined)


def _ledgered(settings: Settings, kind: str, since: str | None):
    return Ledger(settings.state.url).record(
        INTEGRATION, kind=kind, flow_run_id=flow_run.id, target=settings.billing.masked_url, watermark=since
    )


def _run_name() -> str:
    return flow_run.id or "local"


def _summary(entry: Entry) -> dict:
    return {"integration": INTEGRATION, **vars(entry.counts), "watermark": entry.watermark, "report": entry.report}
