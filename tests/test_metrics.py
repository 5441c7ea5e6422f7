"""The run figures are the ledger's: runs recorded through `Ledger`, dead letters through `DeadLetters`, and each
collected figure equal to what the ledger's own API says (on SQLite, PostgreSQL and MariaDB state databases)."""

from __future__ import annotations

import re
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest
from interlink.deployments.declaration import read
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from interlink import metrics
from interlink.deadletter import REPLAYED, DeadLetters, Reject
from interlink.ledger import RUNNING, Counts, Ledger
from interlink.metrics import LedgerCollector
from interlink.settings import ConfigError, Settings
from interlink.status import SYNCS
from tests.conftest import service_url

ROWS = ("read", "inserted", "updated", "unchanged", "quarantined")


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def state_url(request: pytest.FixtureRequest, home) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{home / 'interlink.db'}"
    return service_url(request.param, f"metrics-{request.node.name}")  # a schema of its own: the figures are of all its rows


def record(ledger: Ledger, integration: str, kind: str, counts: Counts, fail: bool = False) -> None:
    try:
        with ledger.record(integration, kind=kind, flow_run_id=None, target="sqlite:///target.db", watermark=None) as entry:
            entry.counts = counts
            if fail:
                raise RuntimeError("the target refused the batch")
    except RuntimeError:
        pass


def ledgered(state_url: str) -> Ledger:
    """A ledger with known runs: two successful syncs (one quarantined), a failed one, a replay; and dead letters."""
    ledger = Ledger(state_url)
    record(ledger, "crm_to_billing", "sync", Counts(10, 7, 2, 1))
    record(ledger, "crm_to_billing", "sync", Counts(20, 5, 4, 8, 3))
    record(ledger, "crm_to_billing", "sync", Counts(4, 4), fail=True)
    record(ledger, "orders_to_erp", "replay", Counts(3, 3, 0, 0, 0, 0))
    rejects = [Reject(f"c{i}", "check", "email is not valid", {"email": f"a{i}@example.com"}, [{"email": f"a{i}@example.com"}]) for i in range(3)]
    letters = DeadLetters(state_url)
    letters.put("crm_to_billing", rejects, None)
    letters.settle("crm_to_billing", ["c0"], REPLAYED)
    return ledger


def samples(collector: LedgerCollector) -> dict[str, dict[tuple, float]]:
    """Each sample's value by name and sorted label items, through the text format and its parser."""
    registry = CollectorRegistry()
    registry.register(collector)
    found: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return found


def by(runs: list[dict], *labels: str) -> dict[tuple, list[dict]]:
    grouped = defaultdict(list)
    for run in runs:
        grouped[tuple(sorted((label, run[label].lower() if label == "state" else run[label]) for label in labels))].append(run)
    return grouped


def test_figures_are_the_ledgers(state_url: str) -> None:
    ledger = ledgered(state_url)
    with ledger.record("inventory_to_storefront", kind="sync", flow_run_id=None, target="t", watermark=None) as entry:
        entry.counts = Counts(6, 6)
        entry.checkpoint()  # a running run's committed batch counts
        found = samples(LedgerCollector(state_url))
        runs = ledger.runs(limit=1000)
    running = [r for r in runs if r["state"] == RUNNING]
    ended = [r for r in runs if r["state"] != RUNNING]
    assert len(running) == 1 and len(ended) == 4

    for row in ROWS:
        assert found[f"interlink_rows_{row}_total"] == {k: sum(r[f"rows_{row}"] for r in v) for k, v in by(runs, "integration", "kind").items()}
    assert found["interlink_rows_read_total"][("integration", "crm_to_billing"), ("kind", "sync")] == 34
    assert found["interlink_runs_total"] == {k: len(v) for k, v in by(ended, "integration", "kind", "state").items()}
    assert found["interlink_runs_running"] == {(("integration", "inventory_to_storefront"), ("kind", "sync")): 1}
    assert found["interlink_run_duration_seconds_count"] == {k: len(v) for k, v in by(ended, "integration", "kind").items()}
    for key, group in by(ended, "integration", "kind").items():
        seconds = sum((r["finished_at"] - r["started_at"]).total_seconds() for r in group)
        # SQLite's julianday reads times to the millisecond: each duration within 1 ms
        assert found["interlink_run_duration_seconds_sum"][key] == pytest.approx(seconds, abs=1e-3 * len(group))
        last = max(group, key=lambda r: r["id"])
        assert found["interlink_last_run_timestamp_seconds"][key] == pytest.approx(last["finished_at"].replace(tzinfo=UTC).timestamp(), abs=1e-3)
        assert found["interlink_last_run_duration_seconds"][key] == pytest.approx((last["finished_at"] - last["started_at"]).total_seconds(), abs=1e-3)
        for outcome in (*ROWS, "superseded"):
            assert found["interlink_last_run_rows"][(*key, ("outcome", outcome))] == last[f"rows_{outcome}"]
    assert found["interlink_last_run_rows"][("integration", "crm_to_billing"), ("kind", "sync"), ("outcome", "read")] == 4  # the failed one
    assert found["interlink_dead_letters_open"] == {(("integration", "crm_to_billing"),): len(DeadLetters(state_url).entries(status="open"))}
    assert found["interlink_dead_letters_open"][(("integration", "crm_to_billing"),)] == 2


def test_freshness_is_the_status_commands(state_url: str) -> None:
    ledger = ledgered(state_url)
    before = datetime.now(UTC)
    found = samples(LedgerCollector(state_url))
    after = datetime.now(UTC)
    successes = [r for r in ledger.runs(limit=1000) if r["kind"] in SYNCS and r["state"] in ("COMPLETED", "QUARANTINED")]
    last = max(r["finished_at"] for r in successes if r["integration"] == "crm_to_billing").replace(tzinfo=UTC)
    key = (("integration", "crm_to_billing"),)
    assert found["interlink_last_success_timestamp_seconds"] == {key: pytest.approx(last.timestamp(), abs=1e-3)}  # no other sync succeeded
    assert (before - last).total_seconds() - 1e-3 <= found["interlink_freshness_seconds"][key] <= (after - last).total_seconds() + 1e-3
    declared = {name: i.sla.fresh_within for name, i in read().integrations.items() if i.sla and i.sla.fresh_within}
    assert declared  # the shipped declaration promises freshness
    assert found["interlink_freshness_sla_seconds"] == {(("integration", n),): d.total_seconds() for n, d in declared.items()}


def test_one_integrations_figures(state_url: str) -> None:
    ledgered(state_url)
    found = samples(LedgerCollector(state_url, "orders_to_erp"))
    labelled = {dict(k).get("integration") for series in found.values() for k in series} - {None}
    assert labelled == {"orders_to_erp"}
    assert found["interlink_runs_total"] == {(("integration", "orders_to_erp"), ("kind", "replay"), ("state", "completed")): 1}


def test_names_and_labels_follow_the_conventions(home) -> None:
    state_url = f"sqlite:///{home / 'interlink.db'}"
    ledgered(state_url)
    registry = CollectorRegistry()
    registry.register(LedgerCollector(state_url))
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    assert {f.name for f in families} >= {
        "interlink_rows_read", "interlink_runs", "interlink_runs_running", "interlink_run_duration_seconds", "interlink_freshness_seconds",
        "interlink_freshness_sla_seconds", "interlink_dead_letters_open", "interlink_build_info", "interlink_last_run_rows",
    }
    for family in families:
        assert family.name.startswith("interlink_")
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        if "duration" in family.name or "timestamp" in family.name or "freshness" in family.name:
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:
            for value in sample.labels.values():
                assert value == value.lower() or sample.name == "interlink_build_info"
                assert "@" not in value and "://" not in value and not re.search(r"\S+@\S+\.\w+", value), (sample.name, value)
    states = {s.labels["state"] for f in families if f.name == "interlink_runs" for s in f.samples}
    assert states == {"completed", "quarantined", "failed"}


def test_serve_answers_on_metrics(home, capsys: pytest.CaptureFixture) -> None:
    state_url = f"sqlite:///{home / 'interlink.db'}"
    ledger = ledgered(state_url)
    port = metrics.serve(state_url, 0, "127.0.0.1")
    assert capsys.readouterr().out == f"metrics on http://127.0.0.1:{port}/metrics\n"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    read_total = {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text) for s in f.samples if s.name == "interlink_rows_read_total"
    }
    expected = Counter()
    for run in ledger.runs(limit=1000):
        expected[("integration", run["integration"]), ("kind", run["kind"])] += run["rows_read"]
    assert read_total == dict(expected)
    assert "process_cpu_seconds_total" in text  # the default registry's collectors too


def test_serve_without_a_port_serves_nothing(home) -> None:
    assert metrics.serve(f"sqlite:///{home / 'interlink.db'}", None, "127.0.0.1") is None


@pytest.mark.parametrize("value", ["nine", "-1", "70000", "80.5"])
def test_a_bad_port_is_one_line_naming_the_variable(home, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("INTERLINK_METRICS_PORT", value)
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("INTERLINK_METRICS_PORT: input should be"), message


def test_a_port_taken_is_one_line_naming_the_variables(home) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError) as caught:
            metrics.serve(f"sqlite:///{home / 'interlink.db'}", taken.getsockname()[1], "127.0.0.1")
    assert "set INTERLINK_METRICS_PORT to a free port" in str(caught.value) and "\n" not in str(caught.value)


def test_a_failed_push_warns_once_and_hides_credentials(home, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = f"http://ops:hunter2-secret@127.0.0.1:{port}/?token=q-secret"
    monkeypatch.setattr(metrics, "_warned", set())
    state_url = f"sqlite:///{home / 'interlink.db'}"
    ledgered(state_url)
    with caplog.at_level("WARNING", logger="interlink.metrics"):
        metrics.push(state_url, gateway, "crm_to_billing")
        metrics.push(state_url, gateway, "crm_to_billing")
    warnings = [r.getMessage() for r in caplog.records if r.name == "interlink.metrics"]
    assert len(warnings) == 1 and f"http://127.0.0.1:{port}/" in warnings[0]
    assert "hunter2" not in warnings[0] and "ops" not in warnings[0] and "q-secret" not in warnings[0]


def test_a_bad_port_stops_a_long_running_command_in_one_line(home, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from interlink.cli import main

    monkeypatch.setenv("INTERLINK_METRICS_PORT", "metrics")
    assert main(["webhooks", "serve", "--port", "1"]) == 2  # stops before it would bind the receiver's port
    err = capsys.readouterr().err
    assert err == "interlink: INTERLINK_METRICS_PORT: input should be a valid integer, unable to parse string as an integer\n"


def test_a_blank_metrics_setting_is_off(home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERLINK_PUSHGATEWAY_URL", "")
    monkeypatch.setenv("INTERLINK_METRICS_PORT", " ")
    settings = Settings.load()
    assert settings.pushgateway_url is None and settings.metrics_port is None
