"""Reusable Prefect tasks: ingest, transform, enrich, check, deliver — each batch-sized."""

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from connectors.errors import RetriableError


def retriable(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect `retry_condition_fn`: retry a task only when its failure may pass."""
    return isinstance(state.result(raise_on_failure=False), RetriableError)
