"""Shared fixtures: a Prefect test server, an isolated Interlink home, the demo systems, real databases."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from prefect.testing.utilities import prefect_test_harness

from demo_systems.app import create_app
from demo_systems.crm_data import seed
from demo_systems.server import serve

API_KEY = "sk-test-3b9f27c1d54e4a8f"  # distinctive, so a leak anywhere is found
SERVICES = {
    "postgresql": os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh Interlink home; the demo systems and the billing database are not configured."""
    for name in list(os.environ):
        if name.startswith("INTERLINK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INTERLINK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def crm_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("crm") / "crm.db"
    seed(db)
    return db


@pytest.fixture
def crm_db(crm_template: Path, home: Path) -> Path:
    """A private copy of the seeded demo CRM database."""
    db = home / "demo" / "crm.db"
    db.parent.mkdir(parents=True)
    shutil.copy(crm_template, db)
    return db


@pytest.fixture
def systems(crm_db: Path, monkeypatch: pytest.MonkeyPatch) -> Callable:
    """Start the demo CRM + finance API over real HTTP and point the connections at them."""

    @contextmanager
    def start(api_key: str = API_KEY, **options) -> Iterator:
        app = create_app(crm_db, api_key=API_KEY, **options)
        with serve(app) as url:
            monkeypatch.setenv("INTERLINK_CRM__BASE_URL", url)
            monkeypatch.setenv("INTERLINK_CRM__API_KEY", api_key)
            monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", url)
            yield app

    return start


def service_url(kind: str) -> str:
    """The URL of a real database service; skips (or fails under REQUIRE_SERVICES=1) if it is down."""
    url = SERVICES[kind]
    try:
        with sa.create_engine(url).connect():
            pass
    except sa.exc.OperationalError as exc:
        message = f"{kind} is not reachable at {url}: {exc.orig}"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


def reset_tables(url: str, *names: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for name in names:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def billing_url(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The billing database, on each supported dialect; its tables start empty."""
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'billing.db'}"
    else:
        url = service_url(request.param)
        reset_tables(url, "customers", "interlink_watermarks")
        request.addfinalizer(lambda: reset_tables(url, "customers", "interlink_watermarks"))
    monkeypatch.setenv("INTERLINK_BILLING_URL", url)
    return url
