"""Tests for the embedded demo CRM and finance API, over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from interlink.demo_systems.app import create_app
from interlink.demo_systems.crm_data import add_country, mutate, seed
from interlink.demo_systems.server import serve

from tests.demo_helpers import db_rows, query

API_KEY = "demo-key-9f3b2c"
FIELDS = ("id", "name", "email", "phone", "country", "updated_at")


def _db_rows(db: Path, since: str = "") -> list[dict[str, Any]]:
    return db_rows(db, "customers", FIELDS, since)


@contextmanager
def _client(db: Path, api_key: str | None = API_KEY, **app_options: Any) -> Iterator[httpx.Client]:
    headers = {"X-API-Key": api_key} if api_key else {}
    with serve(create_app(db, API_KEY, **app_options)) as url, httpx.Client(base_url=url, headers=headers) as client:
        yield client


def _fetch_all(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = client.get("/customers", params={**params, **({"cursor": cursor} if cursor else {})})
        response.raise_for_status()
        body = response.json()
        rows.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("crm") / "crm.db"
    seed(db)
    return db


@pytest.fixture(scope="module")
def client(seeded: Path) -> Iterator[httpx.Client]:
    with _client(seeded) as client:
        yield client


@pytest.fixture
def fresh_db(tmp_path: Path) -> Path:
    db = tmp_path / "nested" / "crm.db"
    seed(db)
    return db


def test_seed_is_idempotent_deterministic_and_dirty(fresh_db: Path, tmp_path: Path) -> None:
    rows = _db_rows(fresh_db)
    seed(fresh_db)
    assert _db_rows(fresh_db) == rows
    other = tmp_path / "other.db"
    seed(other)
    assert _db_rows(other) == rows

    assert len(rows) >= 5000
    assert len({row["id"] for row in rows}) == 5000
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", row["updated_at"]) for row in rows)
    assert sum(row["email"] is None for row in rows) > 50
    assert any(row["email"] and row["email"] != row["email"].strip() for row in rows)
    assert any(row["email"] and row["email"].count("@") != 1 for row in rows)
    assert {"XX", "ZZ", "QQ"} & {row["country"] for row in rows}
    assert sum(row["phone"] is None for row in rows) > 400

    duplicates = query(
        fresh_db,
        "SELECT a.updated_at < b.updated_at FROM customers a JOIN customers b"
        " ON a.id = b.id AND a.row_id < b.row_id",
    )
    assert len(duplicates) > 20
    assert all(later for (later,) in duplicates)


def test_pagination_returns_every_row_once(client: httpx.Client, seeded: Path) -> None:
    rows = _fetch_all(client, limit=700)
    assert rows == _db_rows(seeded)


def test_last_full_page_has_no_next_cursor(tmp_path: Path) -> None:
    db = tmp_path / "small.db"
    seed(db, customers=10)
    count = len(_db_rows(db))
    with _client(db) as client:
        assert client.get("/customers", params={"limit": count}).json()["next_cursor"] is None
        assert client.get("/customers", params={"limit": count - 1}).json()["next_cursor"]


def test_updated_since_is_inclusive(client: httpx.Client, seeded: Path) -> None:
    middle = _db_rows(seeded)[2500]["updated_at"]
    rows = _fetch_all(client, updated_since=middle, limit=1000)
    assert rows == _db_rows(seeded, since=middle)
    assert rows[0]["updated_at"] == middle

    offset_form = _fetch_all(client, updated_since="2026-09-01T02:00:00+02:00", limit=1000)
    assert offset_form == _db_rows(seeded, since="2026-09-01T00:00:00.000000Z")


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_customers_require_api_key(seeded: Path, key: str | None) -> None:
    with _client(seeded, api_key=key) as client:
        response = client.get("/customers")
    assert response.status_code == 401
    assert response.json() == {"error": "invalid API key"}
    assert API_KEY not in response.text


@pytest.mark.parametrize(
    "params",
    [{"cursor": "not-a-cursor!!"}, {"cursor": "WzEsMl0="}, {"limit": "0"}, {"limit": "1001"},
     {"limit": "ten"}, {"updated_since": "yesterday"}],
)
def test_bad_parameters_give_400(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get("/customers", params=params)
    assert response.status_code == 400
    assert response.json()["error"]


def test_countries(client: httpx.Client) -> None:
    assert client.get("/countries/DE").json() == {"code": "DE", "currency": "EUR", "tax_rate": 0.19}
    missing = client.get("/countries/XX")
    assert missing.status_code == 404
    assert missing.json() == {"error": "unknown country code"}


def test_faults_alternate_429_and_503(seeded: Path) -> None:
    with _client(seeded, fault_rate=1.0, retry_after=3) as client:
        first, second, third = (client.get("/customers") for _ in range(3))
        country = client.get("/countries/DE")
        health = client.get("/health")
    assert (first.status_code, first.headers["Retry-After"]) == (429, "3")
    assert second.status_code == 503
    assert third.status_code == 429
    assert country.status_code == 503
    assert health.json() == {"status": "ok"}


def test_hits_count_every_request(seeded: Path) -> None:
    app = create_app(seeded, API_KEY, fault_rate=1.0)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for _ in range(3):
            client.get("/customers")
        client.get("/countries/DE")
        client.get("/health")
    assert app.state.hits == {"/customers": 3, "/countries/DE": 1, "/health": 1}


def test_mutate_changes_are_picked_up_incrementally(fresh_db: Path) -> None:
    before = {row["id"]: row for row in _db_rows(fresh_db)}
    previous_max = max(row["updated_at"] for row in before.values())

    changed = mutate(fresh_db, 25, seed=3)

    assert len(changed) == 25
    assert changed == sorted(set(changed))
    with _client(fresh_db) as client:
        rows = _fetch_all(client, updated_since=previous_max)
    newer = [row for row in rows if row["updated_at"] > previous_max]
    assert all(row["updated_at"] == previous_max for row in rows if row not in newer)
    assert sorted(row["id"] for row in newer) == changed
    assert len({row["updated_at"] for row in newer}) == 25
    assert all(row["name"] != before[row["id"]]["name"] for row in newer)


def test_add_country_fixes_reference_data(fresh_db: Path) -> None:
    with _client(fresh_db) as client:
        assert client.get("/countries/XX").status_code == 404
        add_country(fresh_db, "XX", "XXD", 0.15)
        assert client.get("/countries/XX").json() == {"code": "XX", "currency": "XXD", "tax_rate": 0.15}
