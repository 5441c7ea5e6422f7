"""Integrations: one module per integration, each exposing a `sync` and a `replay` Prefect flow."""

import importlib
from types import ModuleType

from interlink.settings import ConfigError

INTEGRATIONS = ("crm_to_billing", "orders_to_erp", "inventory_to_storefront")
CHUNK_ROWS = 50_000  # rows per batch by default: enough that each batch's fixed costs (task runs, a GX run) amortise


def integration(name: str) -> ModuleType:
    """The module of integration `name`."""
    if name not in INTEGRATIONS:
        raise ConfigError(f"unknown integration {name!r}; choose one of: {', '.join(INTEGRATIONS)}")
    return importlib.import_module(f"flows.{name}")
