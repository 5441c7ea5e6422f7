"""The demo, wired: every unset connection pointed at an embedded demo system, for one command.

Only `interlink demo …` (and `make demo`) come here; every other command uses exactly what is
configured. Connections that are configured stay as they are: the demo fills in the rest.
"""

import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

from interlink.demo_systems import crm_data, erp_files, erp_invoices, storefront_data
from interlink.demo_systems.app import create_app as crm_app
from interlink.demo_systems.server import serve
from interlink.demo_systems.storefront import create_app as storefront_app

from interlink.settings import PREFIX, Settings
from interlink.stand_ins import standing_in


def databases(settings: Settings) -> tuple[Path, Path]:
    """The demo CRM's and the demo storefront's SQLite files, seeded on first use."""
    crm, storefront = settings.home / "demo" / "crm.db", settings.home / "demo" / "storefront.db"
    crm_data.seed(crm)
    storefront_data.seed(storefront)
    return crm, storefront


@contextmanager
def demo_systems(settings: Settings, fault_rate: float = 0.02) -> Iterator[Settings]:
    """Serve the demo CRM, finance, storefront and rates APIs for every unset REST connection, and
    give every unset database and folder a place in the Interlink home.

    Yields the settings as the integrations will see them. The demo APIs answer a share
    `fault_rate` of requests with 429 or 503, so retries are exercised. The first time, the
    demo ERP also drops a stock export for `inventory_to_storefront` and fills its invoice table.
    """
    crm, storefront = databases(settings)
    unset = {name for name, connection in settings.connections.items() if connection.missing()}
    env: dict[str, str] = {}
    with ExitStack() as stack:
        if unset & {"crm", "finance"}:
            api_key = secrets.token_urlsafe(24)
            url = stack.enter_context(serve(crm_app(crm, api_key=api_key, fault_rate=fault_rate)))
            if "crm" in unset:
                env |= {"CRM__BASE_URL": url, "CRM__AUTH__KIND": "api_key", "CRM__AUTH__KEY": api_key}
            if "finance" in unset:
                env |= {"FINANCE__BASE_URL": url}
        if unset & {"storefront", "rates"}:
            client_secret = secrets.token_urlsafe(24)
            url = stack.enter_context(serve(storefront_app(storefront, "interlink-demo", client_secret, fault_rate=fault_rate)))
            if "storefront" in unset:
                env |= {
                    "STOREFRONT__BASE_URL": url,
                    "STOREFRONT__AUTH__KIND": "oauth2_client_credentials",
                    "STOREFRONT__AUTH__TOKEN_URL": f"{url}/oauth/token",
                    "STOREFRONT__AUTH__CLIENT_ID": "interlink-demo",
                    "STOREFRONT__AUTH__CLIENT_SECRET": client_secret,
                }
            if "rates" in unset:
                env |= {"RATES__BASE_URL": url}
        for name in unset & {"billing", "erp"}:
            env[f"{name.upper()}__URL"] = f"sqlite:///{settings.home / f'{name}.db'}"
        if "erp_stock" in unset:
            env["ERP_STOCK__PATH"] = str(settings.home / "drops" / "erp_stock")
        stack.enter_context(mock.patch.dict(os.environ, {PREFIX + k: v for k, v in env.items()}))
        demo = Settings.load()
        stood = {name: f"{demo.connections[name].display} (demo)" for name in sorted(unset) if not demo.connections[name].missing()}
        stack.enter_context(standing_in(settings.home, "interlink demo", stood))
        _first_exports(demo, storefront)
        yield demo


def mutate(settings: Settings, count: int) -> dict[str, list[str]]:
    """Change `count` records in each demo system: CRM customers, storefront orders, ERP stock levels and invoices."""
    with demo_systems(settings) as demo:
        crm, storefront = databases(demo)
        stock = storefront_data.product_stock(storefront)
        changes = erp_files.stock_changes(stock, count)
        erp_files.write_stock_export(demo.connection("erp_stock").path, changes)
        return {
            "crm customers": crm_data.mutate(crm, count),
            "storefront orders": storefront_data.mutate_orders(storefront, count),
            "ERP stock levels": sorted(sku for sku in changes if changes[sku] != stock[sku]),
            "ERP invoices": erp_invoices.mutate(erp, count) if (erp := _demo_erp(demo)) else [],
        }


def _first_exports(settings: Settings, storefront: Path) -> None:
    """The demo ERP's first stock export and its invoice table, made once."""
    folder = settings.connection("erp_stock").path
    if not folder.exists():
        stock = storefront_data.product_stock(storefront)
        erp_files.write_stock_export(folder, erp_files.stock_changes(stock, len(stock) // 10, seed=5))
    if erp := _demo_erp(settings):
        erp_invoices.seed(erp)


def _demo_erp(settings: Settings) -> Path | None:
    """The demo ERP's database file, unless `erp` is configured elsewhere (its invoices are then the real ones)."""
    demo = settings.home / "erp.db"
    return demo if settings.connection("erp").url == f"sqlite:///{demo}" else None
