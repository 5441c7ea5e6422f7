"""`INTERLINK_LOG_FORMAT=json`: every console log line one JSON object with the run's context, masked by the one rule;
unset, Prefect's text lines as before; any other value one configuration error line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from interlink.connectors.errors import ConfigError
from interlink.demo_systems.app import create_app
from interlink.demo_systems.cli import DEMO_PROJECT
from interlink.demo_systems.server import serve
from prefect.settings import PREFECT_API_URL

from interlink.json_logs import install
from tests.test_failure_logs import CAUSE, wrong_billing

from .conftest import API_KEY

ROOT = Path(__file__).resolve().parents[1]
INTERLINK = str(Path(sys.executable).with_name("interlink"))
SECRETS = ("canary-url-pw-5e1a", "canary-apikey-7c3d", "canary-header-9b2f", "canary-exc-pw-0d4e")
FLOW = f"""
import logging
import warnings

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prefect import flow, get_run_logger, task

from interlink.json_logs import install
from interlink.run_facts import BATCH, INTEGRATION

print("installed", install())  # as at the import of interlink.flows.pipeline: after Prefect set logging up
print("again", install())
print("root", *(type(h).__name__ for h in logging.getLogger().handlers))  # the console's, once
print("ui", *(type(h).__name__ for h in logging.getLogger("prefect.flow_runs").handlers))  # the Prefect UI's, as it was
trace.set_tracer_provider(TracerProvider())


@task
def deliver():
    get_run_logger().warning("target postgresql://billing:{SECRETS[0]}@db.internal/billing?api_key={SECRETS[1]}")
    logging.getLogger("interlink.connectors.rest").warning("a connector's own logger, header X-API-Key: {SECRETS[2]}")


@flow(name="json_logs_demo")
def demo():
    integration, batch = INTEGRATION.set("crm_to_billing"), BATCH.set(3)
    try:
        with trace.get_tracer("test").start_as_current_span("batch") as span:
            print("trace", format(span.get_span_context().trace_id, "032x"))
            get_run_logger().info("batch started")
            deliver()
            try:
                raise ValueError("refused: password={SECRETS[3]}\\nsecond line")
            except ValueError:
                get_run_logger().exception("delivery failed")
    finally:
        INTEGRATION.reset(integration), BATCH.reset(batch)
    warnings.warn("a Python warning")
    get_run_logger().info("after the batch")


demo()
logging.getLogger("interlink.connectors").warning("outside any run")
"""


def run_flow(tmp_path: Path, log_format: str | None) -> subprocess.CompletedProcess:
    """The flow above in its own process, against the tests' Prefect API (a temporary one if there is none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INTERLINK_"))} | DEMO_PROJECT
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(ROOT)}
    if PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    if log_format is not None:
        env["INTERLINK_LOG_FORMAT"] = log_format
    script = tmp_path / "demo_flow.py"
    script.write_text(FLOW)
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def json_lines(text: str) -> list[dict]:
    """Every line of `text` as JSON: one that is not fails the test."""
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return lines


def one(logs: list[dict], start: str) -> dict:
    found = [log for log in logs if log["message"].startswith(start)]
    assert len(found) == 1, (start, logs)
    return found[0]


def test_a_flows_log_lines_are_json_with_its_context_and_masked(tmp_path):
    done = run_flow(tmp_path, "json")
    printed = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert printed["installed"] == printed["again"] == "True"
    assert printed["root"] == "JsonLinesHandler" and printed["ui"] == "APILogHandler", printed
    logs = json_lines(done.stderr)
    for log in logs:
        assert {"time", "level", "logger", "message"} <= log.keys(), log
        assert datetime.fromisoformat(log["time"]).utcoffset().total_seconds() == 0, log
        assert None not in log.values() and "" not in log.values(), log  # keys with no value are left out
    started = one(logs, "batch started")
    assert started["logger"] == "prefect.flow_runs" and started["level"] == "INFO"
    assert started["integration"] == "crm_to_billing" and started["batch"] == 3 and started["flow_name"] == "json_logs_demo"
    assert len(started["flow_run_id"]) == 36 and "task_run_id" not in started
    assert started["trace_id"] == printed["trace"] and len(printed["trace"]) == 32

    target = one(logs, "target ")
    assert target["message"] == "target postgresql://billing:***@db.internal/billing?api_key=***"
    assert target["logger"] == "prefect.task_runs" and target["task_run_id"] and target["flow_run_id"] == started["flow_run_id"]
    connector = one(logs, "a connector's own logger")  # not a run logger: its run comes from Prefect's context
    assert connector["message"].endswith("X-API-Key: ***") and connector["task_run_id"] == target["task_run_id"]
    assert connector["flow_run_id"] == started["flow_run_id"] and connector["batch"] == 3

    failed = one(logs, "delivery failed")
    assert failed["level"] == "ERROR" and failed["exception"] == "ValueError: refused: password=***"
    assert failed["traceback"].startswith("Traceback") and "password=***" in failed["traceback"]  # masked too

    after = one(logs, "after the batch")  # in the run's trace (Prefect's flow run span), out of the batch
    assert "batch" not in after and "integration" not in after and after["trace_id"] == started["trace_id"], after
    outside = one(logs, "outside any run")
    assert outside.keys() == {"time", "level", "logger", "message"}, outside
    assert [log for log in logs if log["logger"] == "py.warnings" and "a Python warning" in log["message"]]
    assert not [s for s in SECRETS if s in done.stderr + done.stdout]


def test_unset_the_log_lines_are_prefects_text_as_before(tmp_path):
    done = run_flow(tmp_path, None)
    assert "installed False" in done.stdout
    assert [line for line in done.stderr.splitlines() if "| INFO    | Flow run" in line and "batch started" in line]
    assert not [line for line in done.stderr.splitlines() if line.startswith("{")]


def test_any_other_value_is_one_configuration_error_line(monkeypatch):
    monkeypatch.setenv("INTERLINK_LOG_FORMAT", "yaml")
    with pytest.raises(ConfigError) as error:
        install()
    message = str(error.value)
    assert "INTERLINK_LOG_FORMAT" in message and "json" in message and "text" in message and "\n" not in message


def test_an_interlink_command_with_a_bad_value_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "INTERLINK_LOG_FORMAT": "yes", "INTERLINK_HOME": str(tmp_path / "home")}
    done = subprocess.run([INTERLINK, "runs"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "INTERLINK_LOG_FORMAT='yes' is not a log format" in done.stderr, done.stderr


def test_interlink_run_writes_json_log_lines(crm_db: Path, home: Path, tmp_path: Path):
    """A failing `interlink run`, as a scheduler runs it: on stderr, JSON lines but for the command's outcome line;
    the cause among them, with the integration and the batch it failed in."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INTERLINK_"))} | DEMO_PROJECT
    with serve(create_app(crm_db, api_key=API_KEY)) as crm:
        env = base | {
            "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "INTERLINK_LOG_FORMAT": "json",
            "INTERLINK_HOME": str(home), "INTERLINK_BILLING__URL": wrong_billing(home),
            "INTERLINK_CRM__BASE_URL": crm, "INTERLINK_CRM__AUTH__KIND": "api_key", "INTERLINK_CRM__AUTH__KEY": API_KEY,
            "INTERLINK_FINANCE__BASE_URL": crm,
        }
        done = subprocess.run([INTERLINK, "run", "crm_to_billing"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    outcome = [line for line in done.stderr.splitlines() if line.startswith("interlink: ")]  # the command's own, not logs
    assert len(outcome) == 1 and outcome[0].startswith("interlink: crm_to_billing sync failed"), outcome
    logs = json_lines("\n".join(line for line in done.stderr.splitlines() if line not in outcome))
    errors = [log for log in logs if log["level"] == "ERROR"]
    assert errors and CAUSE in errors[0]["message"], errors[:1]
    assert errors[0]["integration"] == "crm_to_billing" and errors[0]["flow_name"] == "crm_to_billing" and errors[0]["flow_run_id"]
    assert [log for log in logs if log.get("batch") == 1 and log.get("integration") == "crm_to_billing"], logs
    assert API_KEY not in done.stderr + done.stdout
