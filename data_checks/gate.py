"""Run an expectation suite on a batch and say which rows fail and why.

Great Expectations does the checking and keeps every validation result in a file
context under `<home>/gx`; Data Docs (HTML) are built into `<home>/reports`.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from interlink.data_checks.offline_docs import make_offline

if TYPE_CHECKING:  # GX is imported by the functions that use it: its import costs seconds, and a run with no rows needs none
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.data_context import FileDataContext

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

SITE = "interlink"
RESULTS = "uncommitted/validations/"  # the validation results, in the GX project (`validated` reads its folders)
log = logging.getLogger(__name__)
_CONTEXTS: dict[Path, FileDataContext] = {}
_DEFINITIONS: dict[tuple[str, str], tuple[dict, gx.ValidationDefinition]] = {}
_LOCK = threading.RLock()


class GateFailed(Exception):
    """The batch as a whole failed its checks: nothing of it may be delivered."""


class GateRejected(GateFailed):
    """A person (or the approval timeout) rejected the batch; `decision` says who, when and why."""

    def __init__(self, message: str, decision: str):
        super().__init__(message)
        self.decision = decision


@dataclass
class Validation:
    """The outcome of one suite on one batch.

    `row_failures` is indexed like the batch, one row per failing row, with `reason`
    (every failed expectation, `; `-joined) and `values` (the offending values by column).
    `batch_failures` lists failed expectations that do not point at rows.
    """

    suite: str
    row_failures: pd.DataFrame
    batch_failures: list[str] = field(default_factory=list)
    expectations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.row_failures.empty and not self.batch_failures


@contextmanager
def exclusive(home: Path) -> Iterator[None]:
    """Hold the GX project under `home` alone: a validation rewrites its files, so processes take turns."""
    folder = home / "gx"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def context(home: Path) -> FileDataContext:
    """The GX file context under `home` (one per process), with progress bars off and a Data Docs site in `home/reports`."""
    with _LOCK:
        if home not in _CONTEXTS:
            _CONTEXTS[home] = _new_context(home)
        return _CONTEXTS[home]


def _new_context(home: Path) -> FileDataContext:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every batch below this size (an MD5 over every value, kept only as a batch marker): 2 s per
    # 1M rows, a second hashing of what delivery hashes anyway. A threshold of 0 turns it off.
    pandas_execution_engine.HASH_THRESHOLD = 0
    ctx = gx.get_context(mode="file", project_root_dir=str(home / "gx"))
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    _mask_results(ctx)
    if SITE not in (ctx.get_config().data_docs_sites or {}):
        ctx.add_data_docs_site(
            site_name=SITE,
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(home / "reports")},
            },
        )
    return ctx


def _mask_results(ctx: FileDataContext) -> None:
    """Keep the context's validation results on disk, in a `MaskingResultsStore` (saved in the project's config).

    GX 1.x, loading a project, puts an in-memory `ValidationResultsStore` in place of a results store whose
    `class_name` is not `ValidationResultsStore`: a store saved as `MaskingResultsStore` kept the results of the
    process that made the project only, and every later run's results were lost with its process (no Data Docs,
    an empty "Data checks" table). So the store is saved under that class name, from our module."""
    from great_expectations.data_context.store import TupleFilesystemStoreBackend
    from interlink.data_checks.masked_results import MaskingResultsStore

    store = ctx.validation_results_store
    if not isinstance(store, MaskingResultsStore) or not isinstance(store.store_backend, TupleFilesystemStoreBackend):
        ctx.add_store(ctx.validation_results_store_name, {
            "module_name": "interlink.data_checks.masked_results", "class_name": "ValidationResultsStore",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": RESULTS},
        })


def validate(
    ctx: FileDataContext, batch: pd.DataFrame, suite: gx.ExpectationSuite, run_name: str, sensitive: tuple[str, ...] = ()
) -> Validation:
    """Validate `batch` against `suite`; the result is stored under `run_name` for Data Docs,
    with the offending values of `sensitive` columns masked."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.exceptions import ResourceFreshnessAggregateError
    from interlink.data_checks.masked_results import masking

    def run(definition: gx.ValidationDefinition) -> ExpectationSuiteValidationResult:
        return definition.run(
            batch_parameters={"dataframe": batch},
            result_format={"result_format": "COMPLETE", "include_unexpected_rows": False},
            run_id=RunIdentifier(run_name=run_name),
        )

    with masking(sensitive):
        try:
            result = run(_definition(ctx, suite))
        except ResourceFreshnessAggregateError:  # another process stored the suite again (new ids): store ours again
            result = run(_definition(ctx, suite, stale=True))
    reasons: dict[Any, list[str]] = {}
    values: dict[Any, dict[str, Any]] = {}
    batch_failures, expectations = [], []
    for outcome in result.results:
        config = outcome.expectation_config
        column = config.kwargs.get("column")
        label = f"{config.type}({column})" + (f": {config.description}" if config.description else "")
        rows = outcome.result.get("unexpected_index_list")
        expectations.append({"expectation": config.type, "column": column, "success": outcome.success,
                             "unexpected": outcome.result.get("unexpected_count", 0)})
        if outcome.success:
            continue
        if rows is None:
            batch_failures.append(label)
            continue
        for index in rows:
            reasons.setdefault(index, []).append(label)
            values.setdefault(index, {})[column] = batch.at[index, column]
    failures = pd.DataFrame(
        {"reason": {i: "; ".join(r) for i, r in reasons.items()}, "values": values}, columns=["reason", "values"]
    )
    return Validation(suite.name, failures, batch_failures, expectations)


def validated(home: Path, run_name: str) -> bool:
    """Whether a validation result of `run_name` is stored under `home`, read from the store's folders
    (`<suite>/<run name>/…`) without importing GX."""
    return any((home / "gx" / "gx" / RESULTS).glob(f"*/{glob.escape(run_name)}"))


def docs_index(home: Path) -> Path:
    """The Data Docs site's index page under `home` (it exists once docs were built)."""
    return home / "reports" / "index.html"


def build_docs(ctx: FileDataContext, run_name: str) -> Path:
    """Render the Data Docs pages of one run's validations, readable offline; returns the site's index page."""
    keys = [k for k in ctx.validation_results_store.list_keys() if k.run_id.run_name == run_name]
    started = time.time() - 2  # file times are coarser than the clock
    ctx.build_data_docs(site_names=[SITE], resource_identifiers=keys)
    index = Path(ctx.get_docs_sites_urls(site_name=SITE)[0]["site_url"].removeprefix("file://"))
    unknown = make_offline(index.parent, [page for page in index.parent.rglob("*.html") if page.stat().st_mtime >= started])
    if unknown:
        log.warning("Data Docs load %s, which have no local copy and need a network: add them to "
                    "data_checks/docs_assets and VENDORED in data_checks/offline_docs.py", ", ".join(sorted(unknown)))
    return index


def _definition(ctx: FileDataContext, suite: gx.ExpectationSuite, stale: bool = False) -> gx.ValidationDefinition:
    """The validation definition of `suite` on a whole DataFrame; stored once per process unless the suite changes,
    or it is `stale`: another process stored it again (each store gives the expectations new ids), which
    `ValidationDefinition.run` finds on its own."""
    key, config = (ctx.root_directory, suite.name), suite.to_json_dict()
    with _LOCK:
        if stale or key not in _DEFINITIONS or _DEFINITIONS[key][0] != config:
            _DEFINITIONS[key] = config, _store_definition(ctx, suite)
        return _DEFINITIONS[key][1]


def _store_definition(ctx: FileDataContext, suite: gx.ExpectationSuite) -> gx.ValidationDefinition:
    import great_expectations as gx

    source = ctx.data_sources.add_or_update_pandas("interlink")
    asset = next((a for a in source.assets if a.name == suite.name), None) or source.add_dataframe_asset(suite.name)
    batch = next((b for b in asset.batch_definitions if b.name == "batch"), None) or asset.add_batch_definition_whole_dataframe("batch")
    stored = ctx.suites.add_or_update(suite)
    return ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=suite.name, data=batch, suite=stored))
