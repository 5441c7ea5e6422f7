"""Report: what a run moved and how its data checks went, as Data Docs and a Prefect artifact."""

from dataclasses import asdict
from pathlib import Path

from interlink.data_checks.gate import build_docs, context, docs_index, validated
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from interlink.ledger import Counts


@task(name="report", cache_policy=NO_CACHE)
def publish_report(
    integration: str, home: Path, run_name: str, counts: Counts, watermarks: tuple[str | None, str | None], target: str,
    decision: str | None = None,
) -> Path:
    """Build the run's Data Docs and publish a markdown artifact with its counts and any person's approval
    decision; returns the docs path. A run that validated nothing (no new rows) leaves the docs as they were, loading no GX."""
    failing: dict[str, int] = {}  # every expectation of the run → rows that failed it, over all batches
    if not validated(home, run_name) and docs_index(home).exists():
        docs = docs_index(home)
    else:
        ctx = context(home)
        docs = build_docs(ctx, run_name)
        for key in ctx.validation_results_store.list_keys():
            if key.run_id.run_name != run_name:
                continue
            for outcome in ctx.validation_results_store.get(key).results:
                name = f"{outcome.expectation_config.type}({outcome.expectation_config.kwargs.get('column')})"
                failing[name] = failing.get(name, 0) + (0 if outcome.success else outcome.result.get("unexpected_count") or 1)
    lines = [
        f"# {integration}",
        f"Target: `{target}`  ",
        f"Watermark: `{watermarks[0]}` → `{watermarks[1]}`",
        *([f"**Quarantined**: {counts.rows_quarantined} rows dead-lettered (a warning: the run is Completed, named Quarantined)"]
          if counts.rows_quarantined else []),
        *(["", f"**Approval**: {decision}"] if decision else []),
        "",
        "| rows | count |",
        "|---|---|",
        *[f"| {name.removeprefix('rows_')} | {value} |" for name, value in asdict(counts).items()],
        "",
        "## Data checks",
        "| expectation | result | failing rows |",
        "|---|---|---|",
        *[f"| {name} | {'failed' if n else 'passed'} | {n} |" for name, n in sorted(failing.items())],
        "",
        f"Data Docs: `{docs}`",
    ]
    create_markdown_artifact(
        key=integration.replace("_", "-"), markdown="\n".join(lines), description=f"{integration} run summary"
    )
    return docs
