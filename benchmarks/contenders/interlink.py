"""Interlink: the crm_to_billing pipeline (ingest, transform, enrich, GX gate, upsert) over the bench source, under Prefect.

Four runs of one flow in this process, against the Prefect server at `PREFECT_API_URL`: a full sync, an incremental
run with no source change, one after the source changed `change_share` of its rows, and a full re-sync into the
target that now holds every row (each row read, checked and compared again, none written). Each run's wall time and the
process's CPU time (every thread) are taken around the flow call; its task runs are read back from the Prefect API for the phase breakdown. With `profile`
(a path), the full sync runs under pyinstrument (sampling every 10 ms) and its call tree is written there.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import httpx
from pyinstrument import Profiler
from sqlalchemy.engine import make_url

from benchmarks.common import busy_seconds, phase_seconds, status_mb, task_runs
from benchmarks.contenders import FIELDS, main


def run(config: dict) -> dict:
    target = make_url(config["pg"]).set(drivername="postgresql+psycopg")
    os.environ.update(
        {
            "INTERLINK_HOME": config["home"],
            "INTERLINK_CRM__BASE_URL": config["url"],
            "INTERLINK_CRM__AUTH__KIND": "api_key",
            "INTERLINK_CRM__AUTH__KEY": config["api_key"],
            "INTERLINK_FINANCE__BASE_URL": config["url"],
            "INTERLINK_FINANCE__AUTH__KIND": "api_key",
            "INTERLINK_FINANCE__AUTH__KEY": config["api_key"],
            "INTERLINK_BILLING__URL": target.update_query_dict({"options": f"-csearch_path={config['schema']}"}).render_as_string(
                hide_password=False
            ),
        }
    )
    from interlink.connectors.gauge import ROWS_HELD
    from interlink.data_checks.policy import SchemaContract
    from interlink.flows.crm_to_billing import PIPELINE
    from interlink.flows.pipeline import sync_flow
    from interlink.tasks.ingest import RestSource

    source = RestSource(
        connection="crm",
        path="/customers",
        cursor_field="updated_at",
        since_param="updated_since",
        paginator={"type": "offset", "limit": config["page"], "total_path": "total"},
        params={},
        concurrent_pages=config["concurrent_pages"],
    )
    sync = sync_flow(
        replace(PIPELINE, source=source, contract=SchemaContract(version="bench", fields=dict.fromkeys(FIELDS, "string")))
    )

    def timed(full_refresh: bool, profile: str | None = None) -> dict:
        profiler = Profiler(interval=0.01) if profile else None
        started, cpu = time.perf_counter(), time.process_time()
        with profiler or nullcontext():
            state = sync(full_refresh=full_refresh, chunk_size=config["chunk"], return_state=True)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        if profiler:
            Path(profile).write_text(profiler.output_text(unicode=False, color=False))
        summary = state.result()
        runs = task_runs(state.state_details.flow_run_id)
        phases = phase_seconds(runs)
        return {
            "sync_s": seconds,
            "cpu_s": cpu,
            "state": state.name,
            "counts": {k: v for k, v in summary.items() if k.startswith("rows_")},
            "phases": phases,
            "outside_tasks_s": seconds - busy_seconds(runs),
        }

    full = timed(full_refresh=True, profile=config.get("profile"))
    full["full_sync_peak_rss_mb"] = status_mb("VmHWM")
    full["max_source_rows_held"] = ROWS_HELD.peak
    noop = timed(full_refresh=False)
    changed = (
        httpx.post(
            config["url"] + "/admin/mutate", params={"share": config["change_share"]}, headers={"X-API-Key": config["api_key"]}
        )
        .raise_for_status()
        .json()["changed"]
    )
    changed_run = {**timed(full_refresh=False), "rows_changed_at_source": changed}
    return {**full, "noop": noop, "changed": changed_run, "resync": timed(full_refresh=True)}


if __name__ == "__main__":
    main(run)
