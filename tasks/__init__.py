"""Reusable Prefect tasks: ingest, transform, enrich, check, deliver — each batch-sized."""

from interlink.connectors.errors import RetriableError
from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State


def retriable(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect `retry_condition_fn`: retry a task only when its failure may pass.

    A `RetriableError` is retried unless it opened its system's circuit: the retry would only fail fast
    (`CircuitOpen`) and bury the real error under the breaker's. `CircuitOpen` and fatal errors are not retried.
    With the connection defaults (5 attempts per request, a breaker threshold of 5 failed requests), a task
    declaring `retries=2` makes all three of its attempts before any circuit opens.
    """
    error = state.result(raise_on_failure=False)
    return isinstance(error, RetriableError) and not error.opened_circuit
