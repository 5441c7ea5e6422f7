"""OpenLineage events (interlink.lineage): sent to a real HTTP receiver in its own process, checked against the
vendored OpenLineage JSON schemas, off when nothing is configured, and bounded when the backend is down or silent."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from interlink import lineage
from interlink.run_facts import Dataset, RunFacts
from tests.observers import lineage_events, lineage_receiver

SPEC = Path(__file__).with_name("openlineage_spec")
FLOW_RUN_ID = "0b4c6a5e-7a7e-4f43-9d5b-2f6f1e0c2a11"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
STARTED, FINISHED = datetime(2026, 3, 2, 1, 0, 5, tzinfo=UTC), datetime(2026, 3, 2, 1, 0, 9, tzinfo=UTC)

SCHEMAS = [json.loads(path.read_text()) for path in SPEC.glob("*.json")]
REGISTRY = Registry().with_resources((schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS)
CORE = next(schema for schema in SCHEMAS if schema["$id"].endswith("/OpenLineage.json"))


def validate(event: dict) -> set[str]:
    """Check `event` against the OpenLineage schema, and each facet against the schema its `_schemaURL` names;
    the facets' names."""
    checker = Draft202012Validator.FORMAT_CHECKER
    Draft202012Validator(CORE, registry=REGISTRY, format_checker=checker).validate(event)
    holders = [event["run"], event["job"], *event.get("inputs", []), *event.get("outputs", [])]
    names = set()
    for holder in holders:
        for key in ("facets", "inputFacets", "outputFacets"):
            for name, facet in holder.get(key, {}).items():
                Draft202012Validator({"$ref": facet["_schemaURL"]}, registry=REGISTRY, format_checker=checker).validate(facet)
                names.add(name)
    return names


def run_facts(flow_run_id: str | None = FLOW_RUN_ID, kind: str = "sync") -> RunFacts:
    run = RunFacts(
        "crm_to_billing", "crm_to_billing" if kind == "sync" else f"crm_to_billing_{kind}", kind, flow_run_id,
        inputs=(Dataset("postgres://crm.example:5432", "crm.public.customers", (("id", "integer"), ("email", "text"))),
                Dataset("https://rates.example", "/v1/rates")),  # the source, then a lookup
        outputs=(Dataset("mysql://billing.example:3306", "billing.accounts", (("id", "INT"), ("email", "VARCHAR(200)"))),),
        ui_url=f"http://prefect.example:4200/runs/flow-run/{flow_run_id}" if flow_run_id else None,
        trace_id=TRACE_ID,
    )
    run.add_checks(
        [{"expectation": "expect_column_values_to_not_be_null", "column": "email", "success": False, "unexpected": 2},
         {"expectation": "expect_table_row_count_to_be_between", "column": None, "success": True}],
        rows=10, nulls={"email": 2, "id": 0},
    )
    return run


def ledger_row(state: str, error: str | None = None) -> dict:
    return dict(integration="crm_to_billing", kind="sync", flow_run_id=FLOW_RUN_ID, state=state,
                started_at=STARTED.replace(tzinfo=None), finished_at=FINISHED.replace(tzinfo=None), rows_read=10,
                rows_inserted=6, rows_updated=2, rows_unchanged=0, rows_quarantined=2, rows_superseded=0,
                watermark=None, error=error)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No OpenLineage configuration from this machine (variables, working directory, home); a fresh emitter."""
    for name in list(os.environ):
        if name.startswith("OPENLINEAGE"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    lineage.emitter.cache_clear()
    yield monkeypatch
    lineage.emitter.cache_clear()


def test_a_run_start_and_complete_reach_the_backend(env: pytest.MonkeyPatch) -> None:
    with lineage_receiver() as url:
        env.setenv("OPENLINEAGE_URL", url)
        env.setenv("OPENLINEAGE_NAMESPACE", "acme-integrations")
        emitter = lineage.emitter()
        assert emitter is not None and emitter is lineage.emitter()
        assert not [name for name in os.environ if name.startswith("OPENLINEAGE__")]  # the client's aliases undone
        run = run_facts()
        emitter.start(run, STARTED)
        emitter.end(run, ledger_row("QUARANTINED"), FINISHED)  # end waits until the events are sent
        start, complete = lineage_events(url)

    assert validate(start) == {"processing_engine", "prefect", "trace", "tags", "jobType", "documentation", "schema"}
    assert validate(complete) == validate(start) | {"dataQualityAssertions", "dataQualityMetrics", "outputStatistics"}
    assert [start["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
    assert start["run"]["runId"] == complete["run"]["runId"] == FLOW_RUN_ID
    assert datetime.fromisoformat(start["eventTime"]) == STARTED and datetime.fromisoformat(complete["eventTime"]) == FINISHED
    for event in (start, complete):
        assert event["producer"] == lineage.PRODUCER
        assert event["job"]["namespace"] == "acme-integrations" and event["job"]["name"] == "crm_to_billing"
        assert event["job"]["facets"]["jobType"] | {"_producer": "", "_schemaURL": ""} == {
            "processingType": "BATCH", "integration": "INTERLINK", "jobType": "FLOW", "_producer": "", "_schemaURL": ""}
        facets = event["run"]["facets"]
        assert facets["prefect"]["flowRunId"] == FLOW_RUN_ID
        assert facets["prefect"]["url"] == f"http://prefect.example:4200/runs/flow-run/{FLOW_RUN_ID}"
        assert facets["trace"]["traceId"] == TRACE_ID
        assert facets["processing_engine"]["name"] == "Prefect" and facets["processing_engine"]["version"] == "3.8.8"
        assert "errorMessage" not in facets
        [source, lookup], [target] = event["inputs"], event["outputs"]
        assert (lookup["namespace"], lookup["name"]) == ("https://rates.example", "/v1/rates")
        assert not lookup.get("inputFacets") and not lookup.get("facets")  # the checks ran on the source's rows
        assert (source["namespace"], source["name"]) == ("postgres://crm.example:5432", "crm.public.customers")
        assert (target["namespace"], target["name"]) == ("mysql://billing.example:3306", "billing.accounts")
        assert [(f["name"], f["type"]) for f in target["facets"]["schema"]["fields"]] == [("id", "INT"), ("email", "VARCHAR(200)")]
    assert not start["inputs"][0].get("inputFacets") and not start["outputs"][0].get("outputFacets")

    quality = complete["inputs"][0]["inputFacets"]
    assertions = [{k: a.get(k) for k in ("assertion", "column", "success")} for a in quality["dataQualityAssertions"]["assertions"]]
    assert assertions == [
        {"assertion": "expect_column_values_to_not_be_null", "column": "email", "success": False},
        {"assertion": "expect_table_row_count_to_be_between", "column": None, "success": True},
    ]
    assert quality["dataQualityMetrics"]["rowCount"] == 10
    assert {c: m["nullCount"] for c, m in quality["dataQualityMetrics"]["columnMetrics"].items()} == {"email": 2, "id": 0}
    assert complete["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 8  # inserted + updated


def test_failed_cancelled_and_retried_runs(env: pytest.MonkeyPatch) -> None:
    with lineage_receiver() as url:
        env.setenv("OPENLINEAGE_URL", url)
        emitter = lineage.emitter()
        outside = run_facts(flow_run_id=None)  # a run outside Prefect: its runId is made at START and kept
        emitter.start(outside, STARTED)
        emitter.end(outside, ledger_row("FAILED", "TargetError: billing refused the batch"), FINISHED)
        for attempt, state in enumerate(["CRASHED", "CANCELLED"]):  # two attempts of one flow run (a flow retry)
            run = run_facts(kind="stream")
            emitter.start(run, STARTED)
            emitter.end(run, ledger_row(state, "the process died" if attempt == 0 else None), FINISHED)
        events = lineage_events(url)

    for event in events:
        validate(event)
    assert [e["eventType"] for e in events] == ["START", "FAIL", "START", "FAIL", "START", "ABORT"]
    made = events[0]["run"]["runId"]
    assert uuid.UUID(made) and made != FLOW_RUN_ID and events[1]["run"]["runId"] == made
    assert "prefect" not in events[0]["run"]["facets"]
    assert {e["run"]["runId"] for e in events[2:]} == {FLOW_RUN_ID}
    assert events[1]["run"]["facets"]["errorMessage"]["message"] == "TargetError: billing refused the batch"
    assert events[1]["run"]["facets"]["errorMessage"]["programmingLanguage"] == "python"
    assert events[3]["run"]["facets"]["errorMessage"]["message"] == "the process died"
    assert "errorMessage" not in events[5]["run"]["facets"]
    assert {e["job"]["facets"]["jobType"]["processingType"] for e in events[2:]} == {"STREAMING"}
    assert {e["job"]["name"] for e in events[2:]} == {"crm_to_billing_stream"}


@pytest.mark.parametrize("setting", [None, "disabled", "config file missing", "yaml without transport"])
def test_off_unless_configured(env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture, setting: str | None) -> None:
    if setting == "disabled":
        env.setenv("OPENLINEAGE_URL", "http://127.0.0.1:9")
        env.setenv("OPENLINEAGE_DISABLED", "true")
    elif setting == "config file missing":
        env.setenv("OPENLINEAGE_CONFIG", str(tmp_path / "nowhere.yml"))
    elif setting == "yaml without transport":
        (tmp_path / "openlineage.yml").write_text("facets:\n  environment_variables: []\n")
    assert lineage.emitter() is None
    assert capsys.readouterr().out == ""  # the client's console fallback never prints an event


@pytest.mark.parametrize("where", ["cwd", "home", "variables"])
def test_on_when_configured(env: pytest.MonkeyPatch, tmp_path: Path, where: str) -> None:
    yaml = "transport:\n  type: http\n  url: http://lineage.example:5000\n"
    if where == "cwd":
        (tmp_path / "openlineage.yml").write_text(yaml)
    elif where == "home":
        (tmp_path / ".openlineage").mkdir()
        (tmp_path / ".openlineage" / "openlineage.yml").write_text(yaml)
    else:
        env.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
        env.setenv("OPENLINEAGE__TRANSPORT__URL", "http://lineage.example:5000")
    emitter = lineage.emitter()
    assert emitter is not None and emitter.backend == "http://lineage.example:5000/api/v1/lineage"
    config = emitter.client.transport.config
    assert config.retry == lineage.HTTP_RETRY and config.timeout == lineage.HTTP_TIMEOUT_S


@contextmanager
def backend_down(kind: str) -> Iterator[int]:
    """A port where nothing listens (`closed`), or a socket that accepts connections and never answers (`silent`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        if kind == "silent":
            sock.listen(16)
            yield port
            return
    yield port


@pytest.mark.parametrize("kind", ["closed", "silent", "refusing"])
def test_a_failing_backend_costs_a_run_at_most_the_bound(env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    caplog.set_level(logging.DEBUG, logger="interlink.lineage")
    with (lineage_receiver(status=422) if kind == "refusing" else backend_down(kind)) as where:
        port = where.rsplit(":", 1)[1] if kind == "refusing" else where
        env.setenv("OPENLINEAGE_URL", f"http://interlink:s3cret@127.0.0.1:{port}/?token=hush")
        emitter = lineage.emitter()
        runs = 1 if kind == "silent" else 2  # a second run: still one warning
        for _ in range(runs):
            run = run_facts()
            began = time.monotonic()
            emitter.start(run, STARTED)
            emitter.end(run, ledger_row("COMPLETED"), FINISHED)
            assert time.monotonic() - began < lineage.LINEAGE_WAIT_S + 2
    warnings = [r for r in caplog.records if r.name == "interlink.lineage" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert f"http://127.0.0.1:{port}/api/v1/lineage" in message and "OPENLINEAGE_URL" in message
    if kind == "refusing":
        assert "HTTP 422" in message
    if kind == "closed":
        assert "refused" in message
    assert "s3cret" not in caplog.text and "hush" not in caplog.text
