"""The pytest plugin (`interlink.testing`) as a project's tests use it: test files run by `pytester` in a session of
their own, against the demo's `invoices_to_billing` and a tiny pipeline, with the plugin's real fixtures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

PROJECT_TESTS = '''
import sqlite3
from dataclasses import dataclass

import pandas as pd
import pytest
from interlink.data_checks.gate import GateFailed, GateRejected
from interlink.demo_systems.erp_invoices import COLUMNS, SCHEMA
from interlink.flows.invoices_to_billing import PIPELINE
from interlink.flows.pipeline import Pipeline
from interlink.testing import assert_dead_letters

GOOD = dict(customer_id="C0001", amount=10.5, currency="EUR", status="open", notes=None, due_date="2026-10-01",
            updated_at="2026-09-01 10:00:00")


def invoices():
    """One clean invoice and three the suite rejects."""
    return pd.DataFrame([
        {**GOOD, "id": 1},
        {**GOOD, "id": 2, "currency": "XXX"},
        {**GOOD, "id": 3, "amount": -4},
        {**GOOD, "id": 4, "due_date": "not a date"},
    ])


def test_batch_through_the_suite(run_pipeline, interlink_home):
    run = run_pipeline(PIPELINE, invoices())
    assert list(run.delivered["invoice_id"]) == [1]
    assert run.rows_read == 4 and run.stages == {"check": 3}
    assert_dead_letters(run, {2: "currency", 3: "AMOUNT is not negative", 4: "due date"})
    assert (interlink_home / "interlink.db").is_file()


def test_a_second_batch_lists_only_its_own_dead_letters(run_pipeline):
    run_pipeline(PIPELINE, invoices())
    run = run_pipeline(PIPELINE, invoices().iloc[[0, 1]])
    assert_dead_letters(run, {"2": "currency"})


def test_fail_policy_stops_the_batch(run_pipeline):
    with pytest.raises(GateFailed, match="3 of 4 rows fail"):
        run_pipeline(PIPELINE, invoices(), policy="fail")


def test_approve_policy_rejects_what_needs_a_person(run_pipeline):
    with pytest.raises(GateRejected, match="no decision within 0s"):
        run_pipeline(PIPELINE, invoices(), policy="approve")
    assert_dead_letters(run_pipeline(PIPELINE, pd.concat([invoices()] + [invoices().iloc[[0]].assign(id=i) for i in range(5, 70)]),
                                     policy="approve"), {2: "currency", 3: "amount", 4: "due date"})


def test_wrong_expectation(run_pipeline):
    assert_dead_letters(run_pipeline(PIPELINE, invoices()), {2: "currency", 3: "customer"})


@dataclass(frozen=True)
class Rows:
    connection: str = "nowhere"
    cursor: str | None = None
    sorted: bool = False
    setting: str = "the test"


@dataclass(frozen=True)
class Refuses:
    connection: str = "nowhere"

    def refusals(self, rows):
        return pd.DataFrame({"reason": {i: "qty: over 99" for i in rows.index[rows["qty"] > 99]}, "values": {}},
                            columns=["reason", "values"])


def to_rows(raw):
    return pd.DataFrame({"sku": raw["sku"], "qty": [int(q) for q in raw["qty"]]}, index=raw.index)


def suite():
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(name="stock", expectations=[gxe.ExpectColumnValuesToBeBetween(column="qty", min_value=0)])


TINY = Pipeline(name="tiny", source=Rows(), transform=to_rows, suite=suite, target=Refuses(), key="sku", source_key="sku")


def test_tiny_pipeline_every_stage(run_pipeline):
    frame = pd.DataFrame({"sku": ["a", "b", "c", "d"], "qty": ["1", "x", "-2", "100"]})
    run = run_pipeline(TINY, frame)
    assert list(run.delivered["sku"]) == ["a"]
    assert run.stages == {"transform": 1, "check": 1, "deliver": 1}
    assert_dead_letters(run.dead_letters, {"b": "invalid literal", "c": "qty", "d": "over 99"})


def test_sync_then_dead_letters(prefect_harness, interlink_home, dead_letters, tmp_path, monkeypatch):
    erp, billing = tmp_path / "erp.db", tmp_path / "billing.db"
    with sqlite3.connect(erp) as conn:
        conn.execute(SCHEMA)
        conn.executemany(f"INSERT INTO erp_invoices VALUES ({', '.join('?' * len(COLUMNS))})",
                         [tuple(row[c] for c in COLUMNS) for row in invoices().to_dict("records")])
    conn.close()
    monkeypatch.setenv("INTERLINK_ERP__URL", f"sqlite:///{erp}")
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{billing}")
    PIPELINE.sync()
    assert_dead_letters(dead_letters("invoices_to_billing"), {2: "currency", 3: "amount", 4: "due date"})
    with sqlite3.connect(billing) as conn:
        assert conn.execute("SELECT invoice_id FROM invoices").fetchall() == [(1,)]
    conn.close()


def test_each_test_has_its_own_state(dead_letters, interlink_home):
    assert dead_letters("invoices_to_billing") == []
    assert (interlink_home / "interlink.db").is_file()  # made fresh by the read above
'''


# The project's tests run in this process, against this session's Prefect API (tests/conftest.py): overriding
# `prefect_harness` spares a second temporary server (half a minute); the plugin's is the same call as conftest's.
SAME_API = '''
import pytest


@pytest.fixture(scope="session")
def prefect_harness():
    yield
'''


def test_fixtures_in_a_projects_tests(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERLINK_STATE_URL", "sqlite:////nonexistent/dir/state.db")  # interlink_home must unset it
    pytester.makeconftest(SAME_API)
    pytester.makepyfile(test_project=PROJECT_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=7, failed=1)
    result.stdout.fnmatch_lines([
        "*AssertionError: dead letters differ: unexpected: '4'; '3': reason does not contain 'customer'",
        "*dead letters found:",
        "*'2' [[]check[]] expect_column_values_to_be_in_set(currency): a known currency",
    ])


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--fixtures")
    for name, doc in [
        ("prefect_harness [[]session scope[]]", "A temporary Prefect API"),
        ("interlink_home", "A fresh Interlink home"),
        ("run_pipeline", "*one batch of raw source records"),
        ("dead_letters", "*the open dead letters of `integration`"),
    ]:  # each followed by its docstring
        result.stdout.fnmatch_lines([f"{name} -- */interlink/testing.py:*", f"    {doc}*"], consecutive=True)


def test_dead_letter_assertion_messages() -> None:
    from interlink.testing import DeadLetter, PipelineRun, assert_dead_letters

    letters = [DeadLetter("7", "check", "expect_…(amount): amount is a number")]
    assert_dead_letters(letters, {7: "AMOUNT"})
    with pytest.raises(AssertionError, match=r"missing: '8'.*\n.*\n  '7' \[check\] expect_…\(amount\)"):
        assert_dead_letters(PipelineRun(delivered=None, dead_letters=letters), {7: "amount", 8: "x"})
    with pytest.raises(AssertionError, match=r"unexpected: '7'"):
        assert_dead_letters(letters, {})


def test_plugin_is_cheap_to_import() -> None:
    code = "import sys, pytest, interlink.testing; print(*sorted({'prefect', 'pandas', 'great_expectations'} & set(sys.modules)))"
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ).stdout.split()
    assert heavy == []
