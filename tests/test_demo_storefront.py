"""Tests for the embedded demo storefront, exchange-rate API and ERP stock files, over real HTTP."""

from __future__ import annotations

import base64
import csv
import math
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from interlink.demo_systems.erp_files import stock_changes, write_stock_export
from interlink.demo_systems.server import serve
from interlink.demo_systems.storefront import create_app
from interlink.demo_systems.storefront_data import mutate_orders, product_stock, seed
from starlette.applications import Starlette

from tests.demo_helpers import db_rows, query

CLIENT_ID = "storefront-test-client"
CLIENT_SECRET = "cs-test+7f/2e:9a"  # '+', '/' and ':' need care in HTTP Basic
ORDER_FIELDS = ("id", "customer_email", "currency", "status", "placed_at", "updated_at")
TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"


def _db_orders(db: Path, since: str = "") -> list[dict[str, Any]]:
    return db_rows(db, "orders", ORDER_FIELDS, since)


def _token(client: httpx.Client) -> str:
    response = client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _app(db: Path, **app_options: Any) -> Starlette:
    return create_app(db, CLIENT_ID, CLIENT_SECRET, **app_options)


@contextmanager
def _connect(app: Starlette, authenticate: bool = True) -> Iterator[httpx.Client]:
    """Serve app; the client holds a bearer token unless authenticate is False."""
    with serve(app) as url, httpx.Client(base_url=url) as client:
        if authenticate:
            client.headers["Authorization"] = f"Bearer {_token(client)}"
        yield client


@contextmanager
def _client(db: Path, authenticate: bool = True, **app_options: Any) -> Iterator[httpx.Client]:
    with _connect(_app(db, **app_options), authenticate) as client:
        yield client


def _fetch_all(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    orders: list[dict[str, Any]] = []
    page = 1
    while True:
        response = client.get("/orders", params={**params, "page": page})
        response.raise_for_status()
        body = response.json()
        orders.extend(body["orders"])
        if page >= body["total_pages"]:
            return orders
        page += 1


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("storefront") / "storefront.db"
    seed(db)
    return db


@pytest.fixture(scope="module")
def client(seeded: Path) -> Iterator[httpx.Client]:
    with _client(seeded) as client:
        yield client


@pytest.fixture
def fresh_db(tmp_path: Path) -> Path:
    db = tmp_path / "nested" / "storefront.db"
    seed(db, orders=300, products=40)
    return db


def test_seed_is_idempotent_deterministic_and_dirty(seeded: Path, tmp_path: Path) -> None:
    orders = _db_orders(seeded)
    lines = query(seeded, "SELECT * FROM order_lines ORDER BY order_id, line_no")
    seed(seeded)
    assert _db_orders(seeded) == orders
    other = tmp_path / "other.db"
    seed(other)
    assert _db_orders(other) == orders
    assert query(other, "SELECT * FROM order_lines ORDER BY order_id, line_no") == lines

    assert len(orders) == 2000
    assert len(product_stock(seeded)) == 300
    assert all(re.fullmatch(r"SKU-\d{5}", sku) for sku in product_stock(seeded))
    assert all(re.fullmatch(TS, order["updated_at"]) for order in orders)
    assert all(order["placed_at"] <= order["updated_at"] for order in orders)
    per_order = Counter(order_id for order_id, *_ in lines)
    assert set(per_order) == {order["id"] for order in orders}
    assert set(per_order.values()) == {1, 2, 3, 4, 5}
    assert all(re.fullmatch(r"\d+\.\d\d", price) for *_, price in lines)

    currencies = Counter(order["currency"] for order in orders)
    assert set(currencies) == {"USD", "EUR", "GBP", "SEK", "CHF", "JPY", "XYZ"}
    assert 10 <= currencies["XYZ"] <= 80
    statuses = Counter(order["status"] for order in orders)
    assert 5 <= sum(n for status, n in statuses.items() if status not in {"pending", "paid", "shipped", "cancelled"}) <= 50
    assert 1 <= sum(order["customer_email"] is None for order in orders) <= 40
    assert 10 <= sum(quantity <= 0 for _, _, _, quantity, _ in lines) <= 150


def test_token_flow(seeded: Path) -> None:
    with _client(seeded, authenticate=False) as client:
        assert client.get("/orders").json() == {"error": "invalid_token"}
        token = _token(client)
        assert client.get("/orders", headers={"Authorization": f"Bearer {token}"}).status_code == 200

        granted = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "orders:read"},
                              auth=(CLIENT_ID, CLIENT_SECRET)).json()
        assert set(granted) == {"access_token", "token_type", "expires_in"}
        assert (granted["token_type"], granted["expires_in"]) == ("bearer", 3600)
        assert granted["access_token"] != token

        encoded = base64.b64encode(f"{quote_plus(CLIENT_ID)}:{quote_plus(CLIENT_SECRET)}".encode()).decode()
        rfc_basic = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                headers={"Authorization": f"Basic {encoded}"})
        in_form = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                                    "client_secret": CLIENT_SECRET})
        assert rfc_basic.status_code == in_form.status_code == 200

        for credentials in [(CLIENT_ID, "wrong"), ("someone-else", CLIENT_SECRET)]:
            rejected = client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=credentials)
            assert (rejected.status_code, rejected.json()) == (401, {"error": "invalid_client"})
            assert CLIENT_SECRET not in rejected.text
        missing = client.post("/oauth/token", data={"grant_type": "client_credentials"})
        assert (missing.status_code, missing.json()) == (401, {"error": "invalid_client"})
        wrong_grant = client.post("/oauth/token", data={"grant_type": "password"}, auth=(CLIENT_ID, CLIENT_SECRET))
        assert (wrong_grant.status_code, wrong_grant.json()) == (400, {"error": "unsupported_grant_type"})

        for authorization in ["Bearer not-a-token", token, f"Basic {token}"]:
            response = client.get("/orders", headers={"Authorization": authorization})
            assert (response.status_code, response.json()) == (401, {"error": "invalid_token"})


def test_expired_token_is_rejected(seeded: Path) -> None:
    with _client(seeded, token_ttl_s=0) as client:
        response = client.get("/orders")
        assert (response.status_code, response.json()) == (401, {"error": "invalid_token"})
        assert client.get("/products/SKU-00001").status_code == 401
        assert client.patch("/products/SKU-00001", json={"stock": 1}).status_code == 401


def test_page_pagination_returns_every_order_once(client: httpx.Client, seeded: Path) -> None:
    first = client.get("/orders", params={"per_page": 150}).json()
    assert (first["page"], first["per_page"], first["total"]) == (1, 150, 2000)
    assert first["total_pages"] == math.ceil(2000 / 150) == 14

    orders = _fetch_all(client, per_page=150)
    assert [{field: order[field] for field in ORDER_FIELDS} for order in orders] == _db_orders(seeded)
    assert len({order["id"] for order in orders}) == 2000

    last = client.get("/orders", params={"per_page": 150, "page": 14}).json()
    assert len(last["orders"]) == 2000 - 13 * 150
    beyond = client.get("/orders", params={"per_page": 150, "page": 15}).json()
    assert (beyond["orders"], beyond["total_pages"]) == ([], 14)
    assert len(client.get("/orders").json()["orders"]) == 100


def test_orders_carry_their_lines(client: httpx.Client, seeded: Path) -> None:
    orders = _fetch_all(client, per_page=500)
    lines = {(order["id"], line["line_no"], line["sku"], line["quantity"], line["unit_price"])
             for order in orders for line in order["lines"]}
    assert lines == set(query(seeded, "SELECT * FROM order_lines"))
    assert all([line["line_no"] for line in order["lines"]] == list(range(1, len(order["lines"]) + 1)) for order in orders)


def test_updated_since_is_inclusive(client: httpx.Client, seeded: Path) -> None:
    middle = _db_orders(seeded)[1000]["updated_at"]
    orders = _fetch_all(client, updated_since=middle, per_page=500)
    assert [order["id"] for order in orders] == [order["id"] for order in _db_orders(seeded, since=middle)]
    assert orders[0]["updated_at"] == middle
    assert client.get("/orders", params={"updated_since": middle}).json()["total"] == 1000

    offset_form = _fetch_all(client, updated_since="2026-09-01T02:00:00+02:00", per_page=500)
    assert [order["id"] for order in offset_form] == [
        order["id"] for order in _db_orders(seeded, since="2026-09-01T00:00:00.000000Z")
    ]


@pytest.mark.parametrize(
    "params",
    [{"page": "0"}, {"page": "-1"}, {"page": "one"}, {"per_page": "0"}, {"per_page": "501"}, {"per_page": "ten"},
     {"updated_since": "yesterday"}],
)
def test_bad_parameters_give_400(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get("/orders", params=params)
    assert response.status_code == 400
    assert response.json()["error"]


def test_mutate_orders_are_picked_up_incrementally(fresh_db: Path) -> None:
    before = {order["id"]: order for order in _db_orders(fresh_db)}
    previous_max = max(order["updated_at"] for order in before.values())

    changed = mutate_orders(fresh_db, 25, seed=3)

    assert len(changed) == 25
    assert changed == sorted(set(changed))
    with _client(fresh_db) as client:
        orders = _fetch_all(client, updated_since=previous_max, per_page=10)
    newer = [order for order in orders if order["updated_at"] > previous_max]
    assert [order["updated_at"] for order in orders if order not in newer] == [previous_max]
    assert sorted(order["id"] for order in newer) == changed
    assert len({order["updated_at"] for order in newer}) == 25
    transitions = {(before[order["id"]]["status"], order["status"]) for order in newer}
    assert transitions <= {("pending", "paid"), ("paid", "shipped")}
    with pytest.raises(ValueError, match="clean open orders"):
        mutate_orders(fresh_db, 10_000)


def test_get_product(client: httpx.Client, seeded: Path) -> None:
    product = client.get("/products/SKU-00042").json()
    assert set(product) == {"sku", "name", "stock", "updated_at"}
    assert (product["sku"], product["stock"]) == ("SKU-00042", product_stock(seeded)["SKU-00042"])
    missing = client.get("/products/SKU-99999")
    assert (missing.status_code, missing.json()) == (404, {"error": "unknown sku"})


def test_patch_with_idempotency_key_applies_once(fresh_db: Path) -> None:
    sku = "SKU-00007"
    old = query(fresh_db, "SELECT stock, updated_at FROM products WHERE sku = ?", (sku,))[0]
    new_stock = old[0] + 13
    app = _app(fresh_db)
    with _connect(app) as client:
        first = client.patch(f"/products/{sku}", json={"stock": new_stock}, headers={"Idempotency-Key": "k-1"})
        retried = client.patch(f"/products/{sku}", json={"stock": new_stock}, headers={"Idempotency-Key": "k-1"})
        applied = app.state.patches_applied.copy()
        again = client.patch(f"/products/{sku}", json={"stock": new_stock}, headers={"Idempotency-Key": "k-2"})
        unkeyed = client.patch(f"/products/{sku}", json={"stock": new_stock})
        current = client.get(f"/products/{sku}").json()

    assert first.status_code == retried.status_code == 200
    assert first.json()["stock"] == new_stock
    assert first.json()["updated_at"] > old[1]
    assert retried.content == first.content
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert applied == {sku: 1}

    assert again.status_code == unkeyed.status_code == 200
    assert first.json()["updated_at"] < again.json()["updated_at"] < unkeyed.json()["updated_at"]
    assert app.state.patches_applied == {sku: 3}
    assert current == unkeyed.json()
    assert product_stock(fresh_db)[sku] == new_stock


def test_faulted_patch_is_not_applied_and_its_retry_applies_once(fresh_db: Path) -> None:
    faulty = _app(fresh_db, fault_rate=1.0)
    with _connect(faulty) as client:
        faulted = client.patch("/products/SKU-00001", json={"stock": 5}, headers={"Idempotency-Key": "k"})
    assert faulted.status_code == 429
    assert faulty.state.patches_applied == {}
    assert query(fresh_db, "SELECT count(*) FROM idempotency") == [(0,)]

    app = _app(fresh_db)
    with _connect(app) as client:
        for _ in range(2):
            assert client.patch("/products/SKU-00001", json={"stock": 5}, headers={"Idempotency-Key": "k"}).status_code == 200
    assert app.state.patches_applied == {"SKU-00001": 1}
    assert product_stock(fresh_db)["SKU-00001"] == 5


@pytest.mark.parametrize(
    "body",
    [{"stock": -1}, {"stock": 1.5}, {"stock": "7"}, {"stock": True}, {"stock": None}, {}, [3],
     {"stock": 3, "name": "renamed"}, "not json"],
)
def test_patch_rejects_bad_bodies_with_422(fresh_db: Path, body: Any) -> None:
    before = product_stock(fresh_db)
    app = _app(fresh_db)
    with _connect(app) as client:
        content = body if isinstance(body, str) else None
        response = client.patch("/products/SKU-00001", json=None if content else body, content=content,
                                headers={"Idempotency-Key": "bad-1"})
    assert app.state.patches_applied == {}
    assert response.status_code == 422
    assert response.json()["error"]
    assert product_stock(fresh_db) == before


def test_patch_unknown_sku_is_404(fresh_db: Path) -> None:
    app = _app(fresh_db)
    with _connect(app) as client:
        response = client.patch("/products/SKU-99999", json={"stock": 1}, headers={"Idempotency-Key": "k-404"})
    assert app.state.patches_applied == {}
    assert (response.status_code, response.json()) == (404, {"error": "unknown sku"})
    assert query(fresh_db, "SELECT count(*) FROM idempotency") == [(0,)]


def test_rates_need_no_token(seeded: Path) -> None:
    with _client(seeded, authenticate=False) as client:
        rates = client.get("/rates", params={"base": "EUR"}).json()
        other = client.get("/rates", params={"base": "USD"})
    assert rates == {
        "base": "EUR",
        "rates": {"CHF": 0.95, "EUR": 1.0, "GBP": 0.85, "JPY": 160.0, "SEK": 11.5, "USD": 1.08},
    }
    assert other.status_code == 400
    assert other.json()["error"]


def test_faults_alternate_429_and_503(seeded: Path) -> None:
    app = _app(seeded, fault_rate=1.0, retry_after=3)
    with _connect(app) as client:
        first, second, third = (client.get("/orders") for _ in range(3))
        product = client.get("/products/SKU-00001")
        rates = client.get("/rates")
        token = client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET))
        health = client.get("/health")
    assert (first.status_code, first.headers["Retry-After"]) == (429, "3")
    assert second.status_code == 503
    assert third.status_code == 429
    assert product.status_code == 503
    assert rates.status_code == 429
    assert token.status_code == 200
    assert health.json() == {"status": "ok"}
    assert app.state.hits == {"/oauth/token": 2, "/orders": 3, "/products/SKU-00001": 1, "/rates": 1, "/health": 1}


def _read_export(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_stock_export_sums_back_to_the_stock(tmp_path: Path, seeded: Path) -> None:
    stock = product_stock(seeded)
    folder = tmp_path / "drop"
    path = write_stock_export(folder, stock)

    assert path.parent == folder
    assert re.fullmatch(r"stock_\d{8}T\d{12}Z\.csv", path.name)
    rows = _read_export(path)
    assert list(rows[0]) == ["sku", "warehouse", "on_hand", "exported_at"]
    totals: Counter[str] = Counter()
    for row in rows:
        totals[row["sku"]] += int(row["on_hand"])
    assert dict(totals) == stock
    assert {row["warehouse"] for row in rows} == {"W1", "W2"}
    assert len(rows) > len(stock)  # some skus are split over both warehouses
    assert len({row["exported_at"] for row in rows}) == 1
    assert re.fullmatch(TS, rows[0]["exported_at"])

    second = write_stock_export(folder, {"SKU-00001": 0})
    named = write_stock_export(folder, {"SKU-00002": 4}, name="manual.csv")
    assert path.name < second.name
    assert sorted(p.name for p in folder.iterdir()) == sorted([path.name, second.name, "manual.csv"])
    assert sum(int(row["on_hand"]) for row in _read_export(named)) == 4
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*"))


def test_stock_export_rejects_negative_stock_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SKU-1"):
        write_stock_export(tmp_path, {"SKU-1": -2})
    assert list(tmp_path.iterdir()) == []


def test_stock_changes(seeded: Path) -> None:
    stock = product_stock(seeded)
    original = dict(stock)
    changed = stock_changes(stock, 25, seed=5)
    assert stock == original
    assert set(changed) == set(stock)
    different = {sku for sku in stock if changed[sku] != stock[sku]}
    assert len(different) == 25
    assert all(isinstance(changed[sku], int) and changed[sku] >= 0 for sku in different)
    assert stock_changes(stock, 25, seed=5) == changed
    with pytest.raises(ValueError):
        stock_changes(stock, len(stock) + 1)
