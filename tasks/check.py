"""Check: run a batch's expectation suite before anything is delivered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from interlink.data_checks.gate import Validation, context, exclusive, validate
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

if TYPE_CHECKING:
    import great_expectations as gx


@task(name="check", cache_policy=NO_CACHE)
def check(
    rows: pd.DataFrame, suite: Callable[[], gx.ExpectationSuite], home: Path, run_name: str, sensitive: tuple[str, ...] = ()
) -> Validation:
    """Validate `rows` against the suite `suite` makes: which rows fail which expectations, and which batch-level
    expectations fail. The suite is made here, so the check's time includes importing Great Expectations."""
    with exclusive(home):  # partitions of one run validate in parallel processes
        validation = validate(context(home), rows, suite(), run_name, sensitive)
    get_run_logger().info(
        "%s: %d of %d rows pass%s", validation.suite, len(rows) - len(validation.row_failures), len(rows),
        f"; batch failed {', '.join(validation.batch_failures)}" if validation.batch_failures else "",
    )
    return validation
