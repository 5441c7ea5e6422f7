"""Work spread over threads that keeps the caller's context: its trace span, its Prefect run (for logs)."""

from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from contextvars import copy_context
from typing import TypeVar

Item, Result = TypeVar("Item"), TypeVar("Result")


def mapped(pool: Executor, work: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
    """`work` on each of `items` in `pool`, each call in a copy of the caller's context; the results in order
    (the first failure raised, once every call has ended)."""
    futures = [pool.submit(copy_context().run, work, item) for item in items]
    return [future.result() for future in futures]
