"""The shipped Prometheus rules, their unit tests, the example scrape config and the Grafana dashboard: valid for
promtool, and naming only metrics Interlink exposes, every one of them somewhere."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import interlink.connectors.telemetry as telemetry
import pytest
import yaml

from interlink.metrics import LedgerCollector

FOLDER = Path(__file__).resolve().parents[1] / "deployments" / "observability"
PROMTOOL = "/usr/bin/promtool"
NAME = re.compile(r"interlink_[a-z_]+")
GRAFANA_MACROS = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "$integration": ".*", "$connection": ".*"}


def exposed(family) -> str:
    """The name a family's samples are queried by: counters with `_total`."""
    return f"{family.name}_total" if family.type == "counter" else family.name


KNOWN = {exposed(f) for f in LedgerCollector("sqlite://").describe()} | {
    exposed(f) for metric in (telemetry.REQUEST_DURATION, telemetry.RESPONSES, telemetry.RETRIES, telemetry.BREAKER_OPEN,
                              telemetry.BREAKER_OPENED, telemetry.QUEUE_MESSAGES) for f in metric.describe()
}


def names(expr: str) -> set[str]:
    return {re.sub(r"_(sum|count|bucket)$", "", name) for name in NAME.findall(expr)}


def promtool(*args: str) -> subprocess.CompletedProcess:
    if not shutil.which(PROMTOOL):
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"{PROMTOOL} is not installed")
        pytest.skip(f"{PROMTOOL} is not installed")
    return subprocess.run([PROMTOOL, *args], cwd=FOLDER, capture_output=True, text=True, timeout=120)


def rule_exprs() -> list[str]:
    groups = yaml.safe_load((FOLDER / "prometheus-rules.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads((FOLDER / "grafana-dashboard.json").read_text())


def dashboard_exprs() -> list[str]:
    board = dashboard()
    targets = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    return targets + [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]


def test_the_known_names_are_the_ones_documented():
    assert {"interlink_runs_total", "interlink_run_duration_seconds", "interlink_freshness_sla_seconds", "interlink_build_info",
            "interlink_http_request_duration_seconds", "interlink_http_responses_total", "interlink_circuit_breaker_opened_total",
            "interlink_queue_messages"} <= KNOWN
    assert len(KNOWN) == 22


def test_the_rules_are_valid():
    result = promtool("check", "rules", "prometheus-rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_each_alert_fires_on_its_series_and_stays_quiet_otherwise():
    result = promtool("test", "rules", "prometheus-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {test["alertname"] for case in yaml.safe_load((FOLDER / "prometheus-rules.test.yml").read_text())["tests"]
              for test in case["alert_rule_test"] if test["exp_alerts"]}
    groups = yaml.safe_load((FOLDER / "prometheus-rules.yml").read_text())["groups"]
    assert tested == {rule["alert"] for group in groups for rule in group["rules"]}


def test_every_alert_says_what_how_bad_and_where_to_look():
    for group in yaml.safe_load((FOLDER / "prometheus-rules.yml").read_text())["groups"]:
        assert group["name"] == "interlink"
        for rule in group["rules"]:
            assert "for" in rule and rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]
            assert re.search(r"/operations/runbook/#runbook-([a-z-]+|\{\{ \$labels\.state \}\})$", rule["annotations"]["runbook_url"])
            assert ("$labels.integration" in rule["annotations"]["summary"]) != ("$labels.connection" in rule["annotations"]["summary"])


def test_the_example_config_is_valid_and_loads_the_rules():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((FOLDER / "prometheus.yml").read_text())
    assert config["rule_files"] == ["prometheus-rules.yml"]
    assert [job["honor_labels"] for job in config["scrape_configs"] if job["job_name"] == "pushgateway"] == [True]


def test_the_dashboard_is_a_grafana_dashboard():
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["title"] == "Interlink" and board["uid"]
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
    assert [panel["id"] for panel in board["panels"]] == list(range(1, len(board["panels"]) + 1))


def test_the_dashboards_queries_are_promql(tmp_path):
    """Each query, its Grafana variables given values, parses as PromQL (as a recording rule's expression)."""
    exprs = []
    for expr in dashboard_exprs():
        if expr.startswith("label_values("):
            continue  # Grafana's own function, not PromQL
        for macro, value in GRAFANA_MACROS.items():
            expr = expr.replace(macro, value)
        exprs.append(expr)
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard-queries.yml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(tmp_path / "dashboard-queries.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_only_known_metrics_are_queried_and_every_one_is_shown():
    in_rules = set().union(*map(names, rule_exprs()))
    in_dashboard = set().union(*map(names, dashboard_exprs()))
    assert in_rules <= KNOWN, in_rules - KNOWN
    assert in_dashboard <= KNOWN, in_dashboard - KNOWN
    assert KNOWN <= in_dashboard, KNOWN - in_dashboard
