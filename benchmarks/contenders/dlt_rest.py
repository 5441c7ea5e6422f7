"""dlt: its `rest_api` source into its `postgres` destination, with dlt's default settings."""

from __future__ import annotations

import os
import tempfile
import time

from benchmarks.contenders import main


def run(config: dict) -> dict:
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"  # no network but the benchmark's own
    import dlt
    from dlt.sources.rest_api import rest_api_source
    from sqlalchemy.engine import make_url

    target = make_url(config["pg"])
    if target.password is None:  # dlt insists on a password; trust or peer authentication ignores it
        target = target.set(password="unused")

    with tempfile.TemporaryDirectory(prefix="dlt-bench-") as workdir:
        started = time.perf_counter()
        source = rest_api_source(
            {
                "client": {
                    "base_url": config["url"],
                    "auth": {"type": "api_key", "name": "X-API-Key", "api_key": config["api_key"], "location": "header"},
                    "paginator": {"type": "offset", "limit": config["page"], "total_path": "total"},
                },
                "resources": [{"name": "customers", "endpoint": {"path": "customers", "data_selector": "data"}}],
            }
        )
        pipeline = dlt.pipeline(
            pipeline_name="bench",
            pipelines_dir=workdir,
            destination=dlt.destinations.postgres(credentials=target.render_as_string(hide_password=False)),
            dataset_name=config["schema"],
        )
        pipeline.run(source).raise_on_failed_jobs()
        seconds = time.perf_counter() - started
        return {"sync_s": seconds, "rows_read": pipeline.last_trace.last_normalize_info.row_counts.get("customers")}


if __name__ == "__main__":
    main(run)
