"""Each demo integration masks every source field that feeds a sensitive column: found by running its transform on
one probe row, changed one field at a time; a field whose change changes a sensitive column must be masked, by name
(`Email` for `email`) or declared (`Gate.sensitive_source`)."""

from __future__ import annotations

import pandas as pd
import pytest
from interlink.connectors.masking import sensitive_fields
from interlink.flows.crm_to_billing import PIPELINE as crm_to_billing
from interlink.flows.orders_to_erp import PIPELINE as orders_to_erp

LINES = [{"sku": "SKU-1", "quantity": 2, "unit_price": 9.5}]
PROBES = {  # a valid source record, and another value for each field
    crm_to_billing.name: (
        {"id": "C1", "name": "Ada Lovelace", "email": "ada@example.org", "phone": "+44 20 7946 0018", "country": "GB",
         "updated_at": "2026-07-01T00:00:00Z"},
        {"id": "C2", "name": "Bo Byrne", "email": "bo@example.org", "phone": "+44 20 7946 0019", "country": "FR",
         "updated_at": "2026-07-02T00:00:00Z"},
    ),
    orders_to_erp.name: (
        {"id": "O1", "customer_email": "ada@example.org", "currency": "EUR", "status": "paid", "placed_at": "2026-07-01T00:00:00Z",
         "updated_at": "2026-07-01T00:00:00Z", "lines": LINES},
        {"id": "O2", "customer_email": "bo@example.org", "currency": "USD", "status": "open", "placed_at": "2026-07-02T00:00:00Z",
         "updated_at": "2026-07-02T00:00:00Z", "lines": [{**LINES[0], "quantity": 3}]},
    ),
}


def feeding(pipeline, base: dict, other: dict) -> dict[str, set[str]]:
    """For each column of the transform's output, the source fields whose change changes it."""
    before = pipeline.transform.fn(pd.DataFrame([base])).iloc[0]
    fed: dict[str, set[str]] = {}
    for field in base:
        after = pipeline.transform.fn(pd.DataFrame([base | {field: other[field]}])).iloc[0]
        for column in before.index:
            if str(before[column]) != str(after[column]):
                fed.setdefault(column, set()).add(field)
    return fed


@pytest.mark.parametrize("pipeline", [crm_to_billing, orders_to_erp], ids=lambda p: p.name)
def test_every_source_field_feeding_a_sensitive_column_is_masked(pipeline):
    base, other = PROBES[pipeline.name]
    assert set(base) == set(pipeline.contract.fields)  # the probe is a whole record
    fed = feeding(pipeline, base, other)
    feeders = {field for column in pipeline.gate.sensitive for field in fed.get(column, ())}
    assert feeders, fed  # the probe sees the sensitive columns fed
    assert feeders <= sensitive_fields(feeders, pipeline.gate.masked), feeders - sensitive_fields(feeders, pipeline.gate.masked)
