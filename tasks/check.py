"""Check: run a batch's expectation suite before anything is delivered."""

from pathlib import Path

import great_expectations as gx
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from data_checks.gate import GateFailed, Validation, context, validate


@task(name="check", cache_policy=NO_CACHE)
def check(rows: pd.DataFrame, suite: gx.ExpectationSuite, home: Path, run_name: str) -> Validation:
    """Validate `rows`; fail when the batch as a whole is bad, else name the failing rows."""
    validation = validate(context(home), rows, suite, run_name)
    if validation.batch_failures:
        raise GateFailed(f"{suite.name}: batch failed {', '.join(validation.batch_failures)}")
    get_run_logger().info("%s: %d of %d rows pass", suite.name, len(rows) - len(validation.row_failures), len(rows))
    return validation
