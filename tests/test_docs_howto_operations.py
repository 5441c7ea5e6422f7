"""Every code block of the how-to pages on deploying and operating, run as the page says, against the demo's project
and the session's Prefect test server; the operations pages (runbook, security, guarantees) hold prose only."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest
from interlink.deployments.declaration import read
from opentelemetry import trace
from prefect.client.orchestration import get_client
from prefect.testing.cli import invoke_and_assert

from interlink import alerts
from interlink.cli import main
from interlink.json_logs import JsonLines
from interlink.run_facts import BATCH, INTEGRATION
from tests.docs_blocks import Block, blocks

ROOT = Path(__file__).parents[1]
# Commands that run until stopped: each is checked to parse (its `--help` exits 0 and names every option the page uses).
LONG_RUNNING = {("interlink", "serve"), ("interlink", "demo", "serve"), ("prefect", "worker", "start"), ("prefect", "server", "start")}


def commands(block: Block) -> list[list[str]]:
    """The block's command lines, each split as a shell would (comments dropped, `\\` continuations joined)."""
    return [argv for line in block.code.replace("\\\n", " ").splitlines() if (argv := shlex.split(line, comments=True))]


def parses(argv: list[str], capsys) -> None:
    """A long-running command the test cannot wait for: its `--help` exits 0 and lists every option used."""
    [command] = [k for k in LONG_RUNNING if tuple(argv[: len(k)]) == k]
    if command[0] == "interlink":
        capsys.readouterr()
        assert main([*command[1:], "--help"]) == 0
        shown = capsys.readouterr().out
    else:
        shown = invoke_and_assert([*command[1:], "--help"], expected_code=0, echo=False).output
    for option in (w.split("=")[0] for w in argv if w.startswith("--")):
        assert option in shown, f"{' '.join(command)} has no {option}"


def interlink(argv: list[str], capsys) -> tuple[int, str]:
    """`interlink …` in this process: its exit status and what it printed."""
    capsys.readouterr()
    code = main(argv[1:])
    return code, capsys.readouterr().out


def shape(line: str) -> re.Pattern:
    """A sample line with its figures, times and keys left open: what the real output must match."""
    pattern = re.escape(line.strip())
    pattern = re.sub(r"\\ \\ +", r"\\ +", pattern)  # column padding
    return re.compile(re.sub(r"[A-Z]?\d+(?:\\\.\d+)?", r"[A-Z]?\\d+(?:\\.\\d+)?", pattern))


def assert_shaped_like(sample: Block, out: str) -> None:
    for line in sample.code.strip().splitlines():
        assert shape(line).search(out), f"{sample.page}:{sample.line}: no line of the output is shaped like {line!r}:\n{out}"


def declared(block: Block, tmp_path: Path):
    """A YAML block, read by the declaration reader from a file of its own."""
    assert block.lang == "yaml" and block.title == "deployments/deployments.yaml"
    path = tmp_path / f"deployments-{block.line}.yaml"
    path.write_text(block.code)
    return read(path)


@pytest.fixture
def left_as_found():
    """The session server as the test found it: the deployments, flow runs, automations and work pools a page's
    commands make are deleted after it (other tests share the server)."""

    async def ids() -> dict[str, set]:
        async with get_client() as client:
            return {
                "deployments": {d.id for d in await client.read_deployments()},
                "flow_runs": {r.id for r in await client.read_flow_runs()},
                "automations": {a.id for a in await client.read_automations()},
                "work_pools": {p.name for p in await client.read_work_pools()},
            }

    async def clean(before: dict[str, set]) -> None:
        after = await ids()
        async with get_client() as client:
            for run in after["flow_runs"] - before["flow_runs"]:
                await client.delete_flow_run(run)
            for deployment in after["deployments"] - before["deployments"]:
                await client.delete_deployment(deployment)
            for automation in after["automations"] - before["automations"]:
                await client.delete_automation(automation)
            for pool in after["work_pools"] - before["work_pools"]:
                await client.delete_work_pool(pool)

    before = asyncio.run(ids())
    yield
    asyncio.run(clean(before))


def test_deploy_page(home, tmp_path, monkeypatch, capsys, left_as_found):
    page = blocks("how-to/deploy.md")
    done = 0
    [declaration, serve, generate, pool, full_refresh, server, deploy_one] = page

    it = declared(declaration, tmp_path)
    assert (it.timezone, it.retries, it.concurrency_limit, it.work_pool) == ("Europe/Berlin", 2, 1, "interlink")
    assert [d.name for d in it.deployments] == ["crm_to_billing", "crm_to_billing-reconcile"]
    assert str(it.integrations["crm_to_billing"].owner) == "Billing (#billing-oncall)"
    done += 1

    for argv in commands(serve):  # `interlink serve` runs until stopped (tests/test_deployments.py serves for real)
        parses(argv, capsys)
    done += 1

    [argv] = commands(generate)
    assert argv[-2:] == [">", "prefect.yaml"]
    made = subprocess.run([sys.executable, *argv[1:-2]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert made.stdout == (ROOT / "prefect.yaml").read_text()  # what the repository commits
    done += 1

    monkeypatch.chdir(ROOT)  # `prefect deploy --all` reads the project's prefect.yaml
    create, deploy, automations, worker = commands(pool)
    assert invoke_and_assert(create[1:], expected_code=0, echo=False).output.count("Created work pool 'interlink'")
    deployed = invoke_and_assert(deploy[1:], expected_code=0, echo=False).output
    for name in ("crm_to_billing/crm_to_billing", "orders_to_erp/orders_to_erp", "interlink-prune/interlink-prune"):
        assert f"Deployment '{name}' successfully created" in deployed
    assert automations[:2] == ["python", "-m"]
    runpy.run_module(automations[2], run_name="__main__")
    assert "interlink: crash runs whose heartbeat stopped" in capsys.readouterr().out
    parses(worker, capsys)  # a worker runs until stopped: tests/test_work_pool.py runs one on a real server
    done += 1

    [argv] = commands(full_refresh)
    ran = invoke_and_assert(argv[1:], expected_code=0, echo=False).output
    assert "Created flow run" in ran and "'full_refresh': True" in ran
    done += 1

    [argv] = commands(server)
    parses(argv, capsys)  # a server runs until stopped: tests/test_deployments.py starts real ones
    done += 1

    [argv] = commands(deploy_one)
    made = invoke_and_assert(argv[1:], expected_code=0, echo=False).output
    assert "Deployment 'crm_to_billing_partitioned/nightly' successfully created" in made  # the flow's name, then --name
    done += 1

    assert done == len(page)


def test_operate_page(home, systems, tmp_path, monkeypatch, capsys):
    page = blocks("how-to/operate.md")
    done = 0
    [run, run_output, replay, reconcile, reconcile_output, retention, prune, prune_output] = page
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")

    with systems():
        [argv] = commands(run)
        code, out = interlink(argv, capsys)
        assert code == 0 and "crm_to_billing sync batch 6:" in out  # 5,100 demo customers, 1,000 a batch
        done += 1
        assert_shaped_like(run_output, out)
        done += 1

        listed, replayed = commands(replay)
        code, out = interlink(listed, capsys)
        assert code == 0 and "crm_to_billing" in out and "check" in out
        open_before = json.loads(interlink([*listed, "--json"], capsys)[1])
        code, out = interlink(replayed, capsys)
        assert code == 0 and open_before
        runs = json.loads(interlink(["interlink", "runs", "--json", "--limit", "1"], capsys)[1])
        assert runs[0]["rows_read"] == sum(len(letter["payload"]) for letter in open_before)  # the replay read them all
        done += 1

        plain, repair = commands(reconcile)
        code, out = interlink(plain, capsys)
        assert code == 0, out  # the dead-lettered keys alone do not fail it
        done += 1
        assert_shaped_like(reconcile_output, out)
        done += 1
        code, out = interlink(repair, capsys)
        assert code == 0 and ", repaired 0," in out

    it = declared(retention, tmp_path)
    assert it.retention_of("crm_to_billing").dead_letters.days == 180 and it.retention_of("other").dead_letters.days == 90
    assert it.prune == "30 4 * * *"
    done += 1

    dry, apply = commands(prune)
    code, out = interlink(dry, capsys)
    assert code == 0 and "would remove" in out
    done += 1
    assert_shaped_like(prune_output, out)
    done += 1
    code, applied = interlink(apply, capsys)
    assert code == 0 and "would remove" not in applied

    assert done == len(page)


def test_slas_and_owners_page(home, tmp_path, capsys, monkeypatch):
    page = blocks("how-to/slas-and-owners.md")
    done = 0
    [declaration, status, status_output, alert] = page

    it = declared(declaration, tmp_path)
    crm, storefront = it.integrations["crm_to_billing"], it.integrations["inventory_to_storefront"]
    assert (str(crm.owner), crm.sla.fresh_within.total_seconds(), str(crm.sla.done_by)) == ("Billing (#billing-oncall)", 26 * 3600, "06:00:00")
    assert storefront.sla.done_by is None and it.retention_of("inventory_to_storefront").dead_letters.days == 90
    assert it.retention_of("crm_to_billing").dead_letters.days == 180
    done += 1

    [argv] = commands(status)
    code, out = interlink(argv, capsys)
    assert code == 1 and out.count("LATE: never synced") == 3  # a new installation: every integration is in breach
    done += 1
    header = [column.strip() for column in status_output.code.splitlines()[0].split("  ") if column.strip()]
    assert [c.strip() for c in out.splitlines()[0].split("  ") if c.strip()] == header
    for integration in ("crm_to_billing", "orders_to_erp", "inventory_to_storefront"):
        assert integration in status_output.code and integration in out
    done += 1

    sample = json.loads(alert.code)  # what `interlink run` POSTs (the server's automations send the same keys)
    sent = []
    monkeypatch.setenv("INTERLINK_ALERT_URL", "http://alerts.example.com/hook")
    monkeypatch.delenv("INTERLINK_RUNBOOK_URL", raising=False)
    monkeypatch.setattr(alerts.httpx, "post", lambda url, json, timeout: sent.append(json) or _Answer())
    flow_run_id = str(uuid4())
    alerts.alert("crm_to_billing", "FAILED", flow_run_id, sample["message"], counts=sample["counts"])
    [payload] = sent
    assert payload.keys() == sample.keys() and payload["link"].endswith(f"/runs/flow-run/{flow_run_id}")
    assert {k: payload[k] for k in ("owner", "timezone", "runbook")} == {k: sample[k] for k in ("owner", "timezone", "runbook")}
    assert payload["runbook"] == "docs/operations/runbook.md#runbook-failed"  # the default INTERLINK_RUNBOOK_URL
    done += 1

    assert done == len(page)


class _Answer:
    def raise_for_status(self) -> None:
        return None


def test_observability_page():
    page = blocks("how-to/observability.md")
    done = 0
    [promtool, log_line] = page

    for argv in commands(promtool):
        checked = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0 and ("SUCCESS" in checked.stdout + checked.stderr), checked.stdout + checked.stderr
    done += 1

    sample = json.loads(log_line.code)
    record = logging.LogRecord(sample["logger"], logging.INFO, __file__, 1, sample["message"], None, None)
    for key in ("flow_run_id", "flow_name", "task_run_id"):
        setattr(record, key, sample[key])
    span = trace.NonRecordingSpan(trace.SpanContext(int(sample["trace_id"], 16), 1, is_remote=False))
    integration, batch = INTEGRATION.set(sample["integration"]), BATCH.set(sample["batch"])
    try:
        with trace.use_span(span):
            line = json.loads(JsonLines().format(record))
    finally:
        INTEGRATION.reset(integration)
        BATCH.reset(batch)
    assert line.keys() == sample.keys() and line.pop("time").endswith("Z")
    assert line == {k: v for k, v in sample.items() if k != "time"}
    done += 1

    assert done == len(page)


@pytest.mark.parametrize("page", ["operations/runbook.md", "operations/security.md", "operations/guarantees.md"])
def test_operations_pages_are_prose(page):
    assert blocks(page) == []


def test_the_runbook_has_a_section_for_every_alerted_state():
    """An alert links to `<runbook_url>#runbook-<state>`: each state has its heading with that id."""
    text = (ROOT / "docs/operations/runbook.md").read_text()
    for state in ("FAILED", "QUARANTINED", "CRASHED", "PAUSED", "SLA_BREACH"):
        anchor = alerts.runbook(state).split("#")[1]
        assert f"## {state} {{#{anchor}}}" in text
