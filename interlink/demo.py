"""The embedded demo systems, started for the duration of a command."""

import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

from demo_systems import crm_data, erp_files, storefront_data
from demo_systems.app import create_app as crm_app
from demo_systems.server import serve
from demo_systems.storefront import create_app as storefront_app
from interlink.settings import Settings


def databases(settings: Settings) -> tuple[Path, Path]:
    """The demo CRM's and the demo storefront's SQLite files, seeded on first use."""
    crm, storefront = settings.home / "demo" / "crm.db", settings.home / "demo" / "storefront.db"
    crm_data.seed(crm)
    storefront_data.seed(storefront)
    return crm, storefront


@contextmanager
def demo_systems(settings: Settings) -> Iterator[Settings]:
    """Serve the demo CRM, finance, storefront and rates APIs for every unset REST connection.

    Yields the settings as the integrations will see them. The demo answers a share
    `demo_fault_rate` of requests with 429 or 503, so retries are exercised. The first
    time, the demo ERP also drops a stock export for `inventory_to_storefront`.
    """
    crm, storefront = databases(settings)
    unset = {name for name in ("crm", "finance", "storefront", "rates") if not getattr(settings, name).base_url}
    env: dict[str, str] = {}
    with ExitStack() as stack:
        if unset & {"crm", "finance"}:
            api_key = secrets.token_urlsafe(24)
            url = stack.enter_context(serve(crm_app(crm, api_key=api_key, fault_rate=settings.demo_fault_rate)))
            if "crm" in unset:
                env |= {"INTERLINK_CRM__BASE_URL": url, "INTERLINK_CRM__AUTH__KIND": "api_key", "INTERLINK_CRM__AUTH__KEY": api_key}
            if "finance" in unset:
                env |= {"INTERLINK_FINANCE__BASE_URL": url}
        if unset & {"storefront", "rates"}:
            client_secret = secrets.token_urlsafe(24)
            app = storefront_app(storefront, "interlink-demo", client_secret, fault_rate=settings.demo_fault_rate)
            url = stack.enter_context(serve(app))
            if "storefront" in unset:
                env |= {
                    "INTERLINK_STOREFRONT__BASE_URL": url,
                    "INTERLINK_STOREFRONT__AUTH__KIND": "oauth2_client_credentials",
                    "INTERLINK_STOREFRONT__AUTH__TOKEN_URL": f"{url}/oauth/token",
                    "INTERLINK_STOREFRONT__AUTH__CLIENT_ID": "interlink-demo",
                    "INTERLINK_STOREFRONT__AUTH__CLIENT_SECRET": client_secret,
                }
            if "rates" in unset:
                env |= {"INTERLINK_RATES__BASE_URL": url}
        stack.enter_context(mock.patch.dict(os.environ, env))
        demo = Settings.load()
        _first_stock_export(demo, storefront)
        yield demo


def mutate(settings: Settings, count: int) -> dict[str, list[str]]:
    """Change `count` records in each demo system: CRM customers, storefront orders, ERP stock levels."""
    crm, storefront = databases(settings)
    stock = storefront_data.product_stock(storefront)
    changes = erp_files.stock_changes(stock, count)
    erp_files.write_stock_export(settings.connection("erp_stock").path, changes)
    return {
        "crm customers": crm_data.mutate(crm, count),
        "storefront orders": storefront_data.mutate_orders(storefront, count),
        "ERP stock levels": sorted(sku for sku in changes if changes[sku] != stock[sku]),
    }


def _first_stock_export(settings: Settings, storefront: Path) -> None:
    folder = settings.connection("erp_stock").path
    if not folder.exists():
        stock = storefront_data.product_stock(storefront)
        erp_files.write_stock_export(folder, erp_files.stock_changes(stock, len(stock) // 10, seed=5))
