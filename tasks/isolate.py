"""Row isolation: when a record breaks a batch step, find that record instead of failing the batch.

The step runs on the whole batch; only when it raises a data error (a value it cannot handle,
not a system that is down) is the batch bisected, records of one group (e.g. one source key)
kept together, until each failing group stands alone. Those become failures with the error as
their reason; the step's output for the rest goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd

DATA_ERRORS: tuple[type[BaseException], ...] = (ArithmeticError, AttributeError, LookupError, TypeError, ValueError)
REASON_LIMIT = 300
Output = TypeVar("Output")


def isolated(
    step: Callable[[pd.DataFrame], pd.DataFrame], frame: pd.DataFrame, groups: pd.Series | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`step(frame)` and no failures; or, where the step raises a data error, its output for the
    groups it takes (in `frame`'s order) and the failures (`reason`, `values`) indexed like `frame`."""
    try:
        return step(frame), failures_frame({})
    except DATA_ERRORS:
        if frame.empty:
            raise
    outputs, failures = bisected(step, frame, groups)
    return (pd.concat(outputs).sort_index() if outputs else frame.iloc[:0, :0]), failures


def bisected(
    step: Callable[[pd.DataFrame], Output],
    frame: pd.DataFrame,
    groups: pd.Series | None = None,
    refused: Callable[[BaseException], bool] = lambda exc: isinstance(exc, DATA_ERRORS),
) -> tuple[list[Output], pd.DataFrame]:
    """`step` over halves of `frame`, and halves of the halves whose error is `refused` (the records' fault; any
    other error is raised), down to single groups: the outputs of the parts that passed, and the failures of the
    groups that did not."""
    codes = _codes(frame, groups)
    outputs: list[Output] = []
    reasons: dict[Any, str] = {}

    def split(part_codes: np.ndarray) -> None:
        half = len(part_codes) // 2
        for side in (part_codes[:half], part_codes[half:]):
            part = frame[np.isin(codes, side)]
            try:
                outputs.append(step(part))
            except Exception as exc:
                if not refused(exc):
                    raise
                if len(side) > 1:
                    split(side)
                else:
                    reasons.update(dict.fromkeys(part.index, reason(exc)))

    distinct = np.unique(codes)
    if len(distinct) == 1:
        try:
            outputs.append(step(frame))
        except Exception as exc:
            if not refused(exc):
                raise
            reasons.update(dict.fromkeys(frame.index, reason(exc)))
    else:
        split(distinct)
    return outputs, failures_frame(reasons)


def reason(exc: BaseException) -> str:
    """The error as a dead letter's reason: its type and first line (a database's own error, not the statement)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {text}"[:REASON_LIMIT]


def failures_frame(reasons: dict[Any, str]) -> pd.DataFrame:
    return pd.DataFrame({"reason": reasons, "values": dict.fromkeys(reasons, {})}, columns=["reason", "values"])


def _codes(frame: pd.DataFrame, groups: pd.Series | None) -> np.ndarray:
    """A group number per row: equal values of `groups` share one, every other row has its own."""
    if groups is None:
        return np.arange(len(frame))
    codes, _ = pd.factorize(groups)
    alone = codes == -1
    codes[alone] = codes.max() + 1 + np.arange(alone.sum())
    return codes
