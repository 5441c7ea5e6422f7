"""The CRM API key never appears in a log line, artifact, report, ledger row or dead letter."""

import json
from pathlib import Path

from interlink.flows.crm_to_billing import PIPELINE as crm_to_billing
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker
from sqlalchemy.engine import make_url

from interlink.deadletter import DeadLetters
from interlink.ledger import Ledger
from interlink.settings import Settings
from tests.conftest import API_KEY, reset_tables, service_url

WRONG_KEY = "sk-wrong-77aa01f3e9"


def everything_prefect_kept(flow_run_ids: list) -> str:
    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)))
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))
    assert artifacts and len(runs) == len(flow_run_ids)
    kept = [log.message for log in logs]
    kept += [json.dumps(run.parameters) + str(run.state.message) for run in runs]
    kept += [str(task.state.message) for task in tasks]
    kept += [f"{a.key} {a.description} {a.data}" for a in artifacts]
    return "\n".join(kept)


def test_the_api_key_never_leaks(systems, home: Path, monkeypatch, capfd):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    with systems(fault_rate=0.2, retry_after=0, fault_seed=11):  # retries log too
        ok = crm_to_billing.sync(return_state=True)
    with systems(api_key=WRONG_KEY):
        refused = crm_to_billing.sync(return_state=True)
    assert ok.is_completed() and refused.is_failed()

    settings = Settings()
    places = {
        "prefect": everything_prefect_kept([ok.state_details.flow_run_id, refused.state_details.flow_run_id]),
        "ledger": json.dumps(Ledger(settings.state_db).runs(), default=str),
        "dead letters": json.dumps(DeadLetters(settings.state_db).entries(), default=str),
        "console": "".join(capfd.readouterr()),
    }
    files = [p for p in home.rglob("*") if p.is_file() and p.suffix in (".html", ".json", ".yml", ".md", ".txt")]
    assert any(p.suffix == ".html" for p in files)
    places |= {str(p): p.read_text(errors="replace") for p in files}
    assert "credentials were rejected" in places["ledger"]  # the failure itself is recorded
    assert "retrying in" in places["prefect"]  # connector logs reach the run's logs
    for secret in (API_KEY, WRONG_KEY):
        assert not [where for where, text in places.items() if secret in text]


def test_a_database_password_is_masked_in_the_ledger_and_artifact(systems, home: Path, monkeypatch):
    url = make_url(service_url("postgresql")).set(password="db-pass-91c4").render_as_string(hide_password=False)
    reset_tables(url, "customers", "interlink_watermarks")
    monkeypatch.setenv("INTERLINK_BILLING__URL", url)
    with systems():
        state = crm_to_billing.sync(return_state=True)
    reset_tables(url, "customers", "interlink_watermarks")

    run = Ledger(Settings().state_db).runs()[0]
    assert run["state"] == "QUARANTINED" and run["target"] == make_url(url).render_as_string(hide_password=True)
    assert "postgres:***@127.0.0.1" in run["target"]
    kept = everything_prefect_kept([state.state_details.flow_run_id])
    assert "postgres:***@127.0.0.1" in kept and "db-pass-91c4" not in kept


def test_the_oauth2_client_secret_never_leaks(storefront, home: Path, capfd, monkeypatch):
    from interlink.flows.orders_to_erp import PIPELINE as orders_to_erp

    from tests.conftest import STOREFRONT_SECRET

    monkeypatch.setenv("INTERLINK_ERP__URL", f"sqlite:///{home / 'erp.db'}")
    wrong = "cs-wrong-0a9b8c7d"
    with storefront():
        ok = orders_to_erp.sync(return_state=True)
    with storefront(client_secret=wrong):
        refused = orders_to_erp.sync(return_state=True)
    assert ok.is_completed() and refused.is_failed()

    settings = Settings()
    kept = "\n".join([
        everything_prefect_kept([ok.state_details.flow_run_id, refused.state_details.flow_run_id]),
        json.dumps(Ledger(settings.state_db).runs(), default=str),
        json.dumps(DeadLetters(settings.state_db).entries(), default=str),
        "".join(capfd.readouterr()),
        *(p.read_text(errors="replace") for p in home.rglob("*") if p.is_file() and p.suffix in (".html", ".json", ".yml")),
    ])
    assert "OAuth2 token request: /oauth/token answered 401" in kept
    for secret in (STOREFRONT_SECRET, wrong):
        assert secret not in kept
