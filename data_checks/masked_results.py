"""The validation results store of Interlink's GX projects: it masks the values of sensitive columns before it writes.

GX stores every result from inside `ValidationDefinition.run`, so masking has to happen in the store: masked
afterwards, the offending values would reach the disk first. `validate` says which columns are sensitive with
`masking(columns)` around the run; the store masks the values every expectation on those columns shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from great_expectations.data_context.store import ValidationResultsStore
from interlink.connectors.masking import mask

_SENSITIVE: ContextVar[frozenset[str]] = ContextVar("sensitive", default=frozenset())
SHOWN = ("unexpected_list", "partial_unexpected_list")  # the value lists a result carries


@contextmanager
def masking(columns: Iterable[str]) -> Iterator[None]:
    """Results stored within this block show the values of `columns` masked."""
    token = _SENSITIVE.set(frozenset(columns))
    try:
        yield
    finally:
        _SENSITIVE.reset(token)


class MaskingResultsStore(ValidationResultsStore):
    """A `ValidationResultsStore` that masks sensitive columns' values (see `masking`) in a result before writing it."""

    def serialize(self, value):  # noqa: ANN001, ANN201 (GX's signature)
        sensitive = _SENSITIVE.get()
        for outcome in value.results if sensitive else ():
            if outcome.expectation_config.kwargs.get("column") in sensitive:
                _mask_details(outcome.result)
        return super().serialize(value)


# The name the project's config gives the store: GX keeps a results store only under this class name (see
# `interlink.data_checks.gate._mask_results`).
ValidationResultsStore = MaskingResultsStore


def _mask_details(details: dict) -> None:
    for name in SHOWN:
        if details.get(name):
            details[name] = [mask(v) for v in details[name]]
    for counted in details.get("partial_unexpected_counts") or []:
        counted["value"] = mask(counted["value"])
    if "observed_value" in details:
        observed = details["observed_value"]
        details["observed_value"] = [mask(v) for v in observed] if isinstance(observed, list) else mask(observed)
