"""What the target would refuse, found before writing, held against the real databases: every value the
check lets through is stored as it was, and a refusal the check cannot foresee is isolated by the database."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.sql import create_engine, read_watermark
from interlink.tasks.deliver import deliver, tracked_table

from tests.test_deliver import BILLING_CUSTOMERS, INTEGRATION, customers

HOSTILE_NAMES = [
    "x" * 200, "é" * 200, "名" * 200, "🎉" * 50, "tab\there\nnewline", "", "   ", "'; DROP TABLE customers; --", "\\N",
    "x" * 201, "nul\x00byte", "lone \ud800 surrogate", {"first": "A"}, ["A", "B"], 12345,
]
REFUSED = {9: "201 characters", 10: "NUL byte", 11: "lone surrogate", 12: "list or an object", 13: "list or an object"}


@pytest.mark.parametrize("billing_url", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_every_value_the_check_lets_through_is_stored_as_it_was(billing_url):
    rows = customers(len(HOSTILE_NAMES), name=HOSTILE_NAMES)
    refused = BILLING_CUSTOMERS.refusals(rows)
    assert {i: r for i, r in refused["reason"].items()}.keys() == REFUSED.keys()
    for index, fragment in REFUSED.items():
        assert refused.at[index, "reason"].startswith("name: ") and fragment in refused.at[index, "reason"]

    delivery = deliver(billing_url, BILLING_CUSTOMERS, rows.drop(refused.index), INTEGRATION, "w1", None)
    assert delivery.failures.empty and delivery.committed and delivery.counts.rows_inserted == len(HOSTILE_NAMES) - len(REFUSED)
    engine = create_engine(billing_url)
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT crm_id, name FROM customers")).all())
    engine.dispose()
    expected = {f"c{i}": str(name) for i, name in enumerate(HOSTILE_NAMES) if i not in REFUSED}
    assert stored == expected


def test_arrow_text_is_refused_for_the_same_reasons_as_text_held_by_python():
    names = [n for n in HOSTILE_NAMES if isinstance(n, str) and "\ud800" not in n]  # Arrow cannot hold a lone surrogate
    arrow = customers(len(names), name=names)
    python = arrow.assign(name=arrow["name"].astype(object))
    assert isinstance(arrow["name"].array, pd.arrays.ArrowStringArray)
    refused = BILLING_CUSTOMERS.refusals(arrow)
    assert refused["reason"].tolist() == ["name: 201 characters, more than the column's 200", "name: holds a NUL byte"]
    pd.testing.assert_frame_equal(refused, BILLING_CUSTOMERS.refusals(python))


VETOED = replace(BILLING_CUSTOMERS, table=tracked_table(
    "customers", *(c.copy() for c in BILLING_CUSTOMERS.table.columns if c.name not in ("row_hash", "synced_at")),
    sa.CheckConstraint("name <> 'Vetoed'", name="no_vetoed_names"),
))


@pytest.mark.parametrize("billing_url", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_a_refusal_no_check_foresaw_is_found_by_the_database_and_the_watermark_left_to_the_caller(billing_url):
    rows = customers(9, name=[*(f"Customer {i}" for i in range(4)), "Vetoed", *(f"Customer {i}" for i in range(5, 9))])
    assert BILLING_CUSTOMERS.refusals(rows).empty  # a constraint only the database knows

    delivery = deliver(billing_url, VETOED, rows, INTEGRATION, "w1", None)
    assert list(delivery.failures.index) == [4] and "no_vetoed_names" in delivery.failures.at[4, "reason"]
    assert delivery.counts.rows_inserted == 8 and not delivery.committed
    engine = create_engine(billing_url)
    assert read_watermark(engine, INTEGRATION) is None
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM customers")) == 8
    engine.dispose()
