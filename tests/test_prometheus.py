"""The run figures as the real Prometheus tools see them (Debian's `prometheus-pushgateway` and `prometheus`): pushed
after ledgered runs, and scraped from a process serving `/metrics`, they equal the ledger's. Without the binaries
these tests skip, or fail under REQUIRE_SERVICES=1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

import pytest
from interlink.demo_systems.cli import DEMO_PROJECT
from prefect.settings import PREFECT_API_URL, temporary_settings
from prometheus_client.parser import text_string_to_metric_families

from interlink import metrics
from interlink.ledger import Counts, Ledger
from tests import observers
from tests.observers import binary, free_port, get, poll, started

ROOT = Path(__file__).parents[1]


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    with observers.pushgateway(tmp_path / "pushgateway.log") as url:
        yield url


def ledgered(state_url: str) -> Ledger:
    ledger = Ledger(state_url)
    for counts in (Counts(10, 7, 2, 1), Counts(20, 5, 4, 8, 3)):
        with ledger.record("crm_to_billing", kind="sync", flow_run_id=None, target="t", watermark=None) as entry:
            entry.counts = counts
    with ledger.record("orders_to_erp", kind="replay", flow_run_id=None, target="t", watermark=None) as entry:
        entry.counts = Counts(3, 3)
    return ledger


def sums(runs: list[dict], integration: str | None = None, row: str = "rows_read") -> dict[tuple, float]:
    """The ledger's sum of `row` per (integration, kind)."""
    found: Counter = Counter()
    for run in runs:
        if integration in (None, run["integration"]):
            found[run["integration"], run["kind"]] += run[row]
    return dict(found)


def pushed(gateway: str, name: str, integration: str) -> dict[tuple, float]:
    """Sample `name` of group {job="interlink", integration=…} on the Pushgateway, per (integration, kind)."""
    return {
        (s.labels["integration"], s.labels["kind"]): s.value
        for family in text_string_to_metric_families(get(f"{gateway}/metrics"))
        for s in family.samples
        if s.name == name and s.labels.get("job") == "interlink" and s.labels.get("integration") == integration
    }


def test_pushed_figures_are_the_ledgers(home: Path, pushgateway: str) -> None:
    state_url = f"sqlite:///{home / 'interlink.db'}"
    ledger = ledgered(state_url)
    metrics.push(state_url, pushgateway, "crm_to_billing")
    runs = ledger.runs(limit=1000)
    for row in ("rows_read", "rows_inserted", "rows_updated", "rows_unchanged", "rows_quarantined"):
        assert pushed(pushgateway, f"interlink_{row}_total", "crm_to_billing") == sums(runs, "crm_to_billing", row)
    assert pushed(pushgateway, "interlink_rows_read_total", "crm_to_billing") == {("crm_to_billing", "sync"): 30}
    assert pushed(pushgateway, "interlink_rows_read_total", "orders_to_erp") == {}  # not pushed: its group is its own

    with ledger.record("crm_to_billing", kind="sync", flow_run_id=None, target="t", watermark=None) as entry:
        entry.counts = Counts(5, 5)
    metrics.push(state_url, pushgateway, "crm_to_billing")  # PUT: the group now holds the new figures
    assert pushed(pushgateway, "interlink_rows_read_total", "crm_to_billing") == sums(ledger.runs(limit=1000), "crm_to_billing")
    assert pushed(pushgateway, "interlink_rows_read_total", "crm_to_billing") == {("crm_to_billing", "sync"): 35}


def test_interlink_run_pushes_its_figures(home: Path, systems, pushgateway: str, tmp_path: Path) -> None:
    """A real `interlink run` with INTERLINK_PUSHGATEWAY_URL set pushes, once its ledger row is final
    (`interlink.observe`), what its ledger then holds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLINK_")} | DEMO_PROJECT | {
        "INTERLINK_HOME": str(home), "INTERLINK_BILLING__URL": f"sqlite:///{home / 'billing.db'}",
        "INTERLINK_PUSHGATEWAY_URL": pushgateway, "PREFECT_API_URL": PREFECT_API_URL.value(),
    }
    with systems():
        env |= {k: v for k, v in os.environ.items() if k.startswith("INTERLINK_CRM__") or k.startswith("INTERLINK_FINANCE__")}
        done = subprocess.run([sys.executable, "-m", "interlink.cli", "run", "crm_to_billing"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = subprocess.run([sys.executable, "-m", "interlink.cli", "runs", "--json"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    runs = json.loads(listed.stdout)
    assert len(runs) == 1 and runs[0]["rows_read"] > 0
    for row in ("rows_read", "rows_inserted", "rows_quarantined"):
        assert pushed(pushgateway, f"interlink_{row}_total", "crm_to_billing") == sums(runs, "crm_to_billing", row)
    finished = [s for f in text_string_to_metric_families(get(f"{pushgateway}/metrics")) for s in f.samples
                if s.name == "interlink_runs_total" and s.labels.get("integration") == "crm_to_billing"]
    assert [(s.labels["state"], s.value) for s in finished] == [(runs[0]["state"].lower(), 1)]


@contextmanager
def serving_metrics(state_url: str, log: Path) -> Iterator[int]:
    """A process serving `state_url`'s figures on /metrics (`metrics.serve` on port 0); its port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLINK_")} | DEMO_PROJECT | {"INTERLINK_METRICS_PORT": "0"}
    code = f"import sys; from interlink import metrics; metrics.serve({state_url!r}, 0, '127.0.0.1'); sys.stdin.read()"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out, env=env,
                                   cwd=ROOT, text=True)
    try:
        line = process.stdout.readline()  # `metrics on http://127.0.0.1:PORT/metrics`, or nothing if it failed
        assert line.startswith("metrics on http://127.0.0.1:"), f"{line!r}; {log.read_text()[-2000:]}"
        yield int(line.rsplit(":", 1)[1].split("/")[0])
    finally:
        process.stdin.close()
        process.wait(timeout=30)


@contextmanager
def prometheus_scraping(port: int, tmp_path: Path) -> Iterator[Callable[[str], dict[tuple, float]]]:
    """A real Prometheus scraping 127.0.0.1:`port` every second; yields a query: each result's value by its labels."""
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: interlink\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    argv = [binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address={address}"]
    with started(argv, tmp_path / "prometheus.log", f"http://{address}/-/ready"):

        def query(expression: str) -> dict[tuple, float]:
            result = json.loads(get(f"http://{address}/api/v1/query?" + urllib.parse.urlencode({"query": expression})))["data"]["result"]
            return {tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("__name__", "job", "instance"))): float(r["value"][1]) for r in result}

        yield query


def by_integration_and_kind(found: dict[tuple, float]) -> dict[tuple, float]:
    return {(dict(labels)["integration"], dict(labels)["kind"]): value for labels, value in found.items()}


def test_prometheus_scrapes_the_ledgers_figures(home: Path, tmp_path: Path) -> None:
    """A process serving /metrics (`metrics.serve`), scraped by Prometheus: its figures are the ledger's."""
    state_url = f"sqlite:///{home / 'interlink.db'}"
    ledger = ledgered(state_url)
    expected = sums(ledger.runs(limit=1000))
    assert expected == {("crm_to_billing", "sync"): 30, ("orders_to_erp", "replay"): 3}
    with serving_metrics(state_url, tmp_path / "served.log") as port, prometheus_scraping(port, tmp_path) as query:
        poll("Prometheus has scraped the figures", lambda: by_integration_and_kind(query("interlink_rows_read_total")) == expected)


DECLARATION = """\
timezone: Europe/Berlin
integrations:
  crm_to_billing:
    owner: {team: Billing, contact: "#billing-oncall"}
    sla: {fresh_within: 26h}
deployments:
  - integration: crm_to_billing
    flow: sync
    cron: "0 2 * * *"
"""


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.test_deployments import prefect_server

    with prefect_server(tmp_path_factory.mktemp("prefect"), "sqlite") as (url, _):
        yield url


def test_prometheus_scrapes_interlink_serve(home: Path, systems, prefect_api: str, tmp_path: Path) -> None:
    """`interlink serve` with INTERLINK_METRICS_PORT, on a real Prefect server: a deployment's run, made in a subprocess of
    the runner, is in the figures Prometheus scrapes from it, as the ledger has it."""
    from prefect.client.orchestration import get_client

    from tests.test_crashed_runs import interlink_serve
    from tests.test_deployments import _deployment, wait_until

    declaration = tmp_path / "deployments.yaml"
    declaration.write_text(DECLARATION)
    log = tmp_path / "serve.log"
    with systems():
        env = os.environ | {
            "PREFECT_API_URL": prefect_api, "PREFECT_RUNNER_POLL_FREQUENCY": "1", "INTERLINK_DEPLOYMENTS_FILE": str(declaration),
            "INTERLINK_BILLING__URL": f"sqlite:///{home / 'billing.db'}", "INTERLINK_METRICS_PORT": "0",
        }
        runner = interlink_serve(env, log)
        try:
            line = poll("interlink serve saying where its metrics are",
                        lambda: next((x for x in log.read_text().splitlines() if x.startswith("metrics on http://127.0.0.1:")), None), runner)
            port = int(line.rsplit(":", 1)[1].split("/")[0])
            with temporary_settings({PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
                deployment = wait_until(lambda: _deployment(client, "crm_to_billing/crm_to_billing"), 90, "the deployment registered")
                flow_run = client.create_flow_run_from_deployment(deployment.id)
                final = wait_until(lambda: (r := client.read_flow_run(flow_run.id)).state.is_final() and r, 180, "the run finishing")
                assert final.state.is_completed(), (final.state, log.read_text()[-3000:])
                [run] = Ledger(f"sqlite:///{home / 'interlink.db'}").runs()  # the server's Prefect: it knows the run
            assert run["flow_run_id"] == str(flow_run.id) and run["rows_read"] > 0
            with prometheus_scraping(port, tmp_path) as query:
                expected = {("crm_to_billing", "sync"): run["rows_read"]}
                poll("Prometheus has scraped the run", lambda: by_integration_and_kind(query("interlink_rows_read_total")) == expected)
                runs = (("integration", "crm_to_billing"), ("kind", "sync"), ("state", run["state"].lower()))
                assert query("interlink_runs_total") == {runs: 1}
                assert query("interlink_freshness_sla_seconds") == {(("integration", "crm_to_billing"),): 26 * 3600}
                assert query("interlink_last_success_timestamp_seconds") == {
                    (("integration", "crm_to_billing"),): pytest.approx(run["finished_at"].replace(tzinfo=UTC).timestamp(), abs=1e-3)
                }
        finally:
            runner.terminate()
            runner.wait(60)


def test_a_push_carries_only_its_runs_own_connection_figures(home: Path, pushgateway: str) -> None:
    """A process that runs several integrations (`interlink run`, `demo run`) pushes each one's group with the requests
    of its own connections made since its run began (`metrics.snapshot`), not the whole process's."""
    from interlink.connectors.telemetry import HttpMetrics

    state_url = f"sqlite:///{home / 'interlink.db'}"
    ledgered(state_url)
    mine, theirs = HttpMetrics("probe-mine"), HttpMetrics("probe-theirs")
    for _ in range(3):
        mine.observe("GET", 200, 0.01)  # an earlier run's requests
    since = metrics.snapshot()
    for _ in range(2):
        mine.observe("GET", 200, 0.01)
        theirs.observe("PATCH", 200, 0.01)
    metrics.push(state_url, pushgateway, "crm_to_billing", ["probe-mine"], since)
    samples = [s for f in text_string_to_metric_families(get(f"{pushgateway}/metrics")) for s in f.samples
               if s.labels.get("connection", "").startswith("probe-")]
    responses = {s.labels["connection"]: s.value for s in samples if s.name == "interlink_http_responses_total"}
    assert responses == {"probe-mine": 2}
    (count,) = [s.value for s in samples if s.name == "interlink_http_request_duration_seconds_count"]
    assert count == 2
