"""Data Docs for every validated batch (issue 28, item 11): an approved batch, and every integration's, gets its
Data Docs page and a filled "Data checks" table in the run's summary artifact — also when the Great Expectations
project under the home was made by another process (an earlier run), as it is for every run but the first."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from interlink.data_checks.gate import validated
from interlink.flows.orders_to_erp import PIPELINE as orders_to_erp
from interlink.flows.pipeline import sync_flow
from prefect.flow_runs import resume_flow_run

from tests.test_gate import APPROVE, CRM, artifacts, paused_run, start_in_thread

EARLIER_RUN = """
import sys
from pathlib import Path
from interlink.data_checks.gate import build_docs, context
build_docs(context(Path(sys.argv[1])), "an-earlier-run")  # the project and the docs site, as a first run leaves them
"""


def made_by_an_earlier_process(home: Path) -> None:
    subprocess.run([sys.executable, "-c", EARLIER_RUN, str(home)], check=True, capture_output=True, timeout=300)
    assert (home / "reports" / "index.html").is_file()


def docs_pages(home: Path, suite: str, run_id: str) -> list[Path]:
    return list((home / "reports" / "validations" / suite / run_id).glob("*/*.html"))


def checks_table(markdown: str) -> list[str]:
    """The rows of the artifact's "Data checks" table."""
    table = markdown.split("## Data checks")[1].split("Data Docs:")[0]
    return [line for line in table.strip().splitlines()[2:] if line.startswith("| expect_")]


def test_an_approved_batch_has_its_data_docs_page_and_a_filled_checks_table(systems, home, monkeypatch):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    made_by_an_earlier_process(home)
    with systems():
        thread, outcome = start_in_thread(sync_flow(replace(CRM, gate=APPROVE)))
        run = paused_run("crm_to_billing", thread)
        resume_flow_run(run.id, run_input={"decision": "approve", "approver": "alice", "comment": "known CRM clean-up"})
        thread.join(120)
    assert outcome["state"].is_completed() and outcome["state"].name == "Quarantined"
    assert validated(home, str(run.id))
    assert len(docs_pages(home, "billing_customers", str(run.id))) == 1
    summary = artifacts(run.id)["crm-to-billing"]
    assert "**Approval**: approved by alice" in summary
    rows = checks_table(summary)
    assert "| expect_column_values_to_match_regex(email) | failed | 145 |" in rows and len(rows) == 10, summary


def test_every_orders_to_erp_run_that_validates_has_its_data_docs_page_and_checks(storefront, home, monkeypatch):
    monkeypatch.setenv("INTERLINK_ERP__URL", f"sqlite:///{home / 'erp.db'}")
    made_by_an_earlier_process(home)
    with storefront():
        states = [orders_to_erp.sync(full_refresh=True, return_state=True) for _ in range(2)]
    for state in states:
        run_id = str(state.state_details.flow_run_id)
        assert state.result()["rows_quarantined"] == 121
        assert len(docs_pages(home, "erp_orders", run_id)) == 1, run_id
        rows = checks_table(artifacts(run_id)["orders-to-erp"])
        assert "| expect_column_values_to_be_between(min_quantity) | failed | 57 |" in rows and len(rows) == 12, rows
