"""Shared fixtures: a Prefect test server, an isolated Interlink home, the demo systems, real databases."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from interlink.demo_systems import storefront_data
from interlink.demo_systems.app import create_app
from interlink.demo_systems.cli import DEMO_PROJECT
from interlink.demo_systems.crm_data import seed
from interlink.demo_systems.server import serve
from interlink.demo_systems.storefront import create_app as create_storefront
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy.engine import make_url

API_KEY = "sk-test-3b9f27c1d54e4a8f"  # distinctive, so a leak anywhere is found
STOREFRONT_SECRET = "cs-test-51d0c3aa9e77b2f4"
SERVICES = {
    "postgresql": os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}

os.environ.update(DEMO_PROJECT)  # this repository's tests work on the demo's project: its integrations, declaration, connections


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
    for name, value in DEMO_PROJECT.items():
        monkeypatch.setenv(name, value)
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
    db.parent.mkdir(parents=True, exist_ok=True)
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
            monkeypatch.setenv("INTERLINK_CRM__AUTH__KIND", "api_key")
            monkeypatch.setenv("INTERLINK_CRM__AUTH__KEY", api_key)
            monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", url)
            yield app

    return start


_namespaces: dict[tuple[str, str], tuple[str, str]] = {}  # (kind, purpose) -> (private schema/database, its URL)


@pytest.fixture(scope="session")
def storefront_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("storefront") / "storefront.db"
    storefront_data.seed(db)
    return db


@pytest.fixture
def storefront_db(storefront_template: Path, home: Path) -> Path:
    """A private copy of the seeded demo storefront database."""
    db = home / "demo" / "storefront.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(storefront_template, db)
    return db


@pytest.fixture
def storefront(storefront_db: Path, monkeypatch: pytest.MonkeyPatch) -> Callable:
    """Start the demo storefront + rates API over real HTTP and point the connections at them (OAuth2)."""

    @contextmanager
    def start(client_secret: str = STOREFRONT_SECRET, **options) -> Iterator:
        app = create_storefront(storefront_db, "interlink-test", STOREFRONT_SECRET, **options)
        with serve(app) as url:
            for name, value in {
                "INTERLINK_STOREFRONT__BASE_URL": url,
                "INTERLINK_STOREFRONT__AUTH__KIND": "oauth2_client_credentials",
                "INTERLINK_STOREFRONT__AUTH__TOKEN_URL": f"{url}/oauth/token",
                "INTERLINK_STOREFRONT__AUTH__CLIENT_ID": "interlink-test",
                "INTERLINK_STOREFRONT__AUTH__CLIENT_SECRET": client_secret,
                "INTERLINK_RATES__BASE_URL": url,
            }.items():
                monkeypatch.setenv(name, value)
            yield app

    return start


def service_url(kind: str, purpose: str = "tables") -> str:
    """A private schema (PostgreSQL) or database (MariaDB) on a real service, made once per session and
    `purpose`, so concurrent test runs (and pytest-xdist workers) never share tables, and a test that compares a
    whole schema sees only its own. Skips, or fails under REQUIRE_SERVICES=1, if the service is down."""
    if (kind, purpose) not in _namespaces:
        admin = SERVICES[kind]
        name = f"interlink_test_{uuid.uuid4().hex[:12]}"
        try:
            engine = sa.create_engine(admin)
            with engine.begin() as conn:
                conn.execute(sa.text(f"CREATE {'SCHEMA' if kind == 'postgresql' else 'DATABASE'} {name}"))
            engine.dispose()
        except sa.exc.OperationalError as exc:
            message = f"{kind} is not reachable at {admin}: {exc.orig}"
            if os.environ.get("REQUIRE_SERVICES") == "1":
                pytest.fail(message)
            pytest.skip(message)
        url = make_url(admin)
        if kind == "postgresql":
            url = url.update_query_dict({"options": f"-csearch_path={name}"})
        else:
            url = url.set(database=name)
        _namespaces[kind, purpose] = (name, url.render_as_string(hide_password=False))
    return _namespaces[kind, purpose][1]


@pytest.fixture(scope="session", autouse=True)
def drop_private_namespaces() -> Iterator[None]:
    yield
    for (kind, _), (name, _) in _namespaces.items():
        engine = sa.create_engine(SERVICES[kind])
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {name} CASCADE" if kind == "postgresql" else f"DROP DATABASE {name}"))
        engine.dispose()


def reset_tables(url: str, *names: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for name in names:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


def target_database(request: pytest.FixtureRequest, home: Path, monkeypatch, connection: str, *tables: str) -> str:
    """Point `connection` at a database of the requested dialect whose `tables` start empty."""
    if request.param == "sqlite":
        url = f"sqlite:///{home / f'{connection}.db'}"
    else:
        url = service_url(request.param)
        reset_tables(url, *tables, "interlink_watermarks")
        request.addfinalizer(lambda: reset_tables(url, *tables, "interlink_watermarks"))
    monkeypatch.setenv(f"INTERLINK_{connection.upper()}__URL", url)
    return url


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def billing_url(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The billing database, on each supported dialect; its tables start empty."""
    return target_database(request, home, monkeypatch, "billing", "customers")


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def erp_url(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ERP database, on each supported dialect; its tables start empty."""
    return target_database(request, home, monkeypatch, "erp", "erp_order_lines", "erp_orders")
