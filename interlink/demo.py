"""The embedded demo systems, started for the duration of a command."""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from demo_systems.app import create_app
from demo_systems.crm_data import seed
from demo_systems.server import serve
from interlink.settings import Settings


def crm_database(settings: Settings) -> Path:
    return settings.home / "demo" / "crm.db"


@contextmanager
def demo_systems(settings: Settings) -> Iterator[Settings]:
    """Serve the demo CRM and finance API and point every unset REST connection at them.

    Yields the settings as the integrations will see them. The demo answers a share
    `demo_fault_rate` of requests with 429 or 503, so retries are exercised.
    """
    if settings.crm.base_url and settings.finance.base_url:
        yield settings
        return
    database = crm_database(settings)
    seed(database)
    api_key = secrets.token_urlsafe(24)
    with serve(create_app(database, api_key=api_key, fault_rate=settings.demo_fault_rate)) as url:
        env = {}
        if not settings.crm.base_url:
            env |= {"INTERLINK_CRM__BASE_URL": url, "INTERLINK_CRM__AUTH__KIND": "api_key", "INTERLINK_CRM__AUTH__KEY": api_key}
        if not settings.finance.base_url:
            env |= {"INTERLINK_FINANCE__BASE_URL": url}
        with mock.patch.dict(os.environ, env):
            yield Settings.load()
