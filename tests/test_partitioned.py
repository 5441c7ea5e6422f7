"""The partitioned crm_to_billing sync on a local Dask cluster, against the real demo HTTP server."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import distributed
import pytest
import sqlalchemy as sa
from interlink.data_checks.policy import Gate
from interlink.demo_systems.crm_data import mutate
from interlink.flows.crm_to_billing import PIPELINE as crm_to_billing
from interlink.flows.partitioned import partitioned_sync_flow, windows
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

from interlink.deadletter import DeadLetters
from interlink.settings import ConfigError, Settings
from tests.conftest import reset_tables
from tests.test_crm_to_billing import crm_rows, last_run, target


def partition_runs(flow_run_id) -> list:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="sync-partition")),
        )


def open_keys() -> set[str]:
    return {e["record_key"] for e in DeadLetters(Settings().state_db).entries("crm_to_billing", "open")}


@contextmanager
def failing_updates_of(url: str, crm_id: str) -> Iterator[None]:
    """A SQLite trigger that breaks the target (not one of its values) on any update of one customer:
    the trigger writes to a table that is not there, so the partition fails instead of dead-lettering the row."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            f"CREATE TRIGGER refuse BEFORE UPDATE ON customers WHEN NEW.crm_id = '{crm_id}'"
            " BEGIN INSERT INTO injected_missing_table VALUES (1); END"
        ))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER refuse"))
        engine.dispose()


@pytest.fixture
def dask_scheduler() -> Iterator[str]:
    """A Dask scheduler and two single-threaded worker processes started by the `dask` CLI, as on separate machines."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    dask = str(Path(sys.executable).parent / "dask")
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"])
    workers = subprocess.Popen([dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard"])
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in (workers, scheduler):
            process.terminate()
            process.wait(30)


def test_windows_cover_the_range_once_from_the_watermark_to_an_open_end(systems, home):
    with systems():
        settings = Settings.load()
        assert windows(crm_to_billing.source, settings, "2026-09-01T00:00:00Z", 1) == [("2026-09-01T00:00:00Z", None)]
        bounds = windows(crm_to_billing.source, settings, "2026-09-01T00:00:00Z", 3)
    assert len(bounds) == 3 and bounds[0][0] == "2026-09-01T00:00:00Z" and bounds[-1][1] is None
    assert all(end == start for (_, end), (start, _) in zip(bounds, bounds[1:]))  # contiguous: no gap, no overlap
    assert bounds[0][1] < bounds[1][1]


def test_a_partitioned_sync_delivers_exactly_what_a_sync_delivers(systems, crm_db, billing_url, home, monkeypatch):
    with systems():
        crm_to_billing.sync()
        expected, expected_open = target(billing_url), open_keys()
        reset_tables(billing_url, "customers", "interlink_watermarks")
        monkeypatch.setenv("INTERLINK_HOME", str(home.parent / "partitioned"))  # a fresh ledger and dead-letter store
        state = crm_to_billing.sync_partitioned(partitions=3, return_state=True)

    summary, delivered, source = state.result(), target(billing_url), crm_rows(crm_db)
    assert delivered.to_dict("records") == expected.to_dict("records")
    assert delivered.attrs["watermark"] == summary["watermark"] == source["updated_at"].max()
    partitions = partition_runs(state.state_details.flow_run_id)
    assert len(partitions) == 3 and all(run.state.is_completed() for run in partitions)
    run = last_run()  # the ledger sums the partitions' counts
    assert run["state"] == "QUARANTINED" and run["watermark"] == summary["watermark"]
    assert run["rows_read"] == summary["rows_read"] == len(source)
    assert run["rows_inserted"] == summary["rows_inserted"] == len(delivered)
    assert open_keys() == expected_open  # including records whose older version failed in an earlier window


def test_a_failed_partition_leaves_the_watermark_and_the_next_run_redoes_its_window(systems, crm_db, home, monkeypatch):
    url = f"sqlite:///{home / 'billing.db'}"
    monkeypatch.setenv("INTERLINK_BILLING__URL", url)
    with systems():
        first = crm_to_billing.sync_partitioned(partitions=3)
        before = target(url)
        changed = mutate(crm_db, 25, seed=1)
        with failing_updates_of(url, changed[0]):
            state = crm_to_billing.sync_partitioned(partitions=3, return_state=True)
        assert state.is_failed()
        assert target(url).attrs["watermark"] == first["watermark"]
        assert last_run()["state"] == "FAILED" and "injected_missing_table" in last_run()["error"]
        failed = [run for run in partition_runs(state.state_details.flow_run_id) if run.state.is_failed()]
        assert len(failed) == 1

        again = crm_to_billing.sync_partitioned(partitions=3)

    after = target(url)
    assert again["rows_updated"] == 25 and again["rows_inserted"] == 0
    assert sorted(before.set_index("crm_id").compare(after.set_index("crm_id")).index) == changed
    assert again["watermark"] == after.attrs["watermark"] == crm_rows(crm_db)["updated_at"].max()


def test_only_a_windowed_rest_source_into_sql_without_an_approval_gate_can_be_partitioned():
    with pytest.raises(ConfigError, match="approve"):
        partitioned_sync_flow(replace(crm_to_billing, gate=Gate(policy="approve")))
    with pytest.raises(ConfigError, match="until_param"):
        partitioned_sync_flow(replace(crm_to_billing, source=replace(crm_to_billing.source, until_param=None)))


def test_with_a_dask_address_the_partitions_run_on_that_cluster(systems, crm_db, home, monkeypatch, dask_scheduler):
    url = f"sqlite:///{home / 'billing.db'}"
    monkeypatch.setenv("INTERLINK_BILLING__URL", url)
    monkeypatch.setenv("INTERLINK_DASK_ADDRESS", dask_scheduler)
    with systems():
        summary = crm_to_billing.sync_partitioned(partitions=2)
    with distributed.Client(dask_scheduler) as client:
        ran = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert any("sync_partition" in prefix for prefix in ran)
    assert summary["rows_read"] == len(crm_rows(crm_db)) and summary["rows_inserted"] == len(target(url)) > 4000
    assert summary["watermark"] == target(url).attrs["watermark"] == crm_rows(crm_db)["updated_at"].max()
