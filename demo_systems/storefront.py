"""The demo storefront and exchange-rate API as a Starlette app.

OAuth2 client credentials guard the storefront: `POST /oauth/token` hands out bearer
tokens that expire. Orders are read page by page (page numbers, not cursors), and
stock levels are written with `PATCH /products/{sku}`, made safe to retry by an
`Idempotency-Key` header.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from interlink.demo_systems.crm_data import format_ts
from interlink.demo_systems.http import BadRequest, Faults, counted_app, parse_positive, parse_since
from interlink.demo_systems.sqlite import newer_than, read_only, write_transaction
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DEFAULT_PER_PAGE = 100
MAX_PER_PAGE = 500
_ORDER_FIELDS = ("id", "customer_email", "currency", "status", "placed_at", "updated_at")
_LINE_FIELDS = ("line_no", "sku", "quantity", "unit_price")
_PRODUCT_FIELDS = ("sku", "name", "stock", "updated_at")


class _Tokens:
    """Bearer tokens issued by /oauth/token, kept in memory until they expire."""

    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self.expiry: dict[str, float] = {}

    def issue(self) -> str:
        now = time.monotonic()
        self.expiry = {token: until for token, until in self.expiry.items() if until > now}
        token = secrets.token_urlsafe(32)
        self.expiry[token] = now + self.ttl_s
        return token

    def valid(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.expiry.get(token.strip(), -math.inf) > time.monotonic()


def _client_credentials(authorization: str | None, form: dict[str, list[str]]) -> list[tuple[str, str]]:
    """The (client id, secret) pairs a token request may mean, from HTTP Basic or else the form.

    RFC 6749 §2.3.1 form-encodes id and secret before Basic encoding, but many clients do not,
    so Basic credentials are tried both as sent and decoded.
    """
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, colon, client_secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return []
        return [(client_id, client_secret), (unquote_plus(client_id), unquote_plus(client_secret))] if colon else []
    if "client_id" in form and "client_secret" in form:
        return [(form["client_id"][0], form["client_secret"][0])]
    return []


def _stock_error(body: Any) -> str | None:
    """What is wrong with a PATCH /products body, if anything."""
    if not isinstance(body, dict) or "stock" not in body:
        return "the body must be a JSON object with a stock field"
    if unknown := sorted(set(body) - {"stock"}):
        return f"only stock can be changed, not {', '.join(unknown)}"
    stock = body["stock"]
    if type(stock) is not int or stock < 0:
        return "stock must be an integer >= 0"
    return None


def _order_page(db_path: Path, since: str | None, page: int, per_page: int) -> dict[str, Any]:
    """One numbered page of orders, with their lines, ordered by (updated_at, row_id)."""
    where, params = ("updated_at >= ?", [since]) if since is not None else ("1", [])
    with read_only(db_path) as conn:
        conn.execute("BEGIN")  # one snapshot for the count and the page
        total = conn.execute(f"SELECT count(*) FROM orders WHERE {where}", params).fetchone()[0]
        orders = [
            dict(zip(_ORDER_FIELDS, row))
            for row in conn.execute(
                f"SELECT {', '.join(_ORDER_FIELDS)} FROM orders WHERE {where}"
                " ORDER BY updated_at, row_id LIMIT ? OFFSET ?",
                [*params, per_page, (page - 1) * per_page],
            )
        ]
        lines: dict[str, list[dict[str, Any]]] = {order["id"]: [] for order in orders}
        if orders:
            for order_id, *line in conn.execute(
                f"SELECT order_id, {', '.join(_LINE_FIELDS)} FROM order_lines"
                f" WHERE order_id IN ({', '.join('?' * len(orders))}) ORDER BY order_id, line_no",
                list(lines),
            ):
                lines[order_id].append(dict(zip(_LINE_FIELDS, line)))
        conn.execute("COMMIT")
    return {
        "orders": [{**order, "lines": lines[order["id"]]} for order in orders],
        "page": page,
        "per_page": per_page,
        "total_pages": math.ceil(total / per_page),
        "total": total,
    }


def _product(conn: sqlite3.Connection, sku: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {', '.join(_PRODUCT_FIELDS)} FROM products WHERE sku = ?", (sku,)).fetchone()
    return dict(zip(_PRODUCT_FIELDS, row)) if row else None


def _read_product(db_path: Path, sku: str) -> dict[str, Any] | None:
    with read_only(db_path) as conn:
        return _product(conn, sku)


def _patch_stock(db_path: Path, sku: str, stock: int, key: str | None) -> tuple[int, str, bool]:
    """Set a product's stock unless `key` was used before, in one transaction.

    Returns the status, the JSON body and whether the change was applied (False for a replay).
    """
    with write_transaction(db_path) as conn:
        if key is not None:
            stored = conn.execute("SELECT status, body FROM idempotency WHERE key = ?", (key,)).fetchone()
            if stored:
                return stored[0], stored[1], False
        product = _product(conn, sku)
        if product is None:
            return 404, json.dumps({"error": "unknown sku"}), False
        updated_at = format_ts(newer_than(product["updated_at"]))
        conn.execute("UPDATE products SET stock = ?, updated_at = ? WHERE sku = ?", (stock, updated_at, sku))
        body = json.dumps({**product, "stock": stock, "updated_at": updated_at})
        if key is not None:
            conn.execute("INSERT INTO idempotency VALUES (?, ?, ?)", (key, 200, body))
    return 200, body, True


def _rates(db_path: Path) -> dict[str, float]:
    with read_only(db_path) as conn:
        return dict(conn.execute("SELECT currency, per_eur FROM rates ORDER BY currency").fetchall())


def create_app(
    db_path: Path,
    client_id: str,
    client_secret: str,
    fault_rate: float = 0.0,
    retry_after: int = 1,
    fault_seed: int | None = None,
    token_ttl_s: int = 3600,
) -> Starlette:
    """Build the storefront and exchange-rate API over the SQLite file written by storefront_data.seed."""
    fault = Faults(fault_rate, retry_after, fault_seed)
    tokens = _Tokens(token_ttl_s)

    def invalid_token() -> JSONResponse:
        return JSONResponse({"error": "invalid_token"}, 401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    async def token(request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            return JSONResponse({"error": "invalid_request"}, 400)
        try:
            form = parse_qs((await request.body()).decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            return JSONResponse({"error": "invalid_request"}, 400)
        if not any(
            secrets.compare_digest(given_id.encode(), client_id.encode())
            and secrets.compare_digest(given_secret.encode(), client_secret.encode())
            for given_id, given_secret in _client_credentials(request.headers.get("Authorization"), form)
        ):
            return JSONResponse({"error": "invalid_client"}, 401, headers={"WWW-Authenticate": "Basic"})
        if form.get("grant_type") != ["client_credentials"]:
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        return JSONResponse(
            {"access_token": tokens.issue(), "token_type": "bearer", "expires_in": token_ttl_s},
            headers={"Cache-Control": "no-store"},
        )

    async def orders(request: Request) -> JSONResponse:
        if response := fault():
            return response
        if not tokens.valid(request.headers.get("Authorization")):
            return invalid_token()
        query = request.query_params
        try:
            page = parse_positive(query.get("page"), "page", 1)
            per_page = parse_positive(query.get("per_page"), "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)
            since = parse_since(query.get("updated_since"))
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(await run_in_threadpool(_order_page, db_path, since, page, per_page))

    async def product(request: Request) -> Response:
        if response := fault():
            return response
        if not tokens.valid(request.headers.get("Authorization")):
            return invalid_token()
        sku = request.path_params["sku"]
        if request.method != "PATCH":  # GET, or the HEAD Starlette adds for it
            found = await run_in_threadpool(_read_product, db_path, sku)
            return JSONResponse(found) if found else JSONResponse({"error": "unknown sku"}, 404)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not key.strip():
            return JSONResponse({"error": "Idempotency-Key must not be empty"}, 400)
        try:
            body = json.loads(await request.body())
        except ValueError:  # includes UnicodeDecodeError
            body = None
        if error := _stock_error(body):
            return JSONResponse({"error": error}, 422)
        status, content, applied = await run_in_threadpool(_patch_stock, db_path, sku, body["stock"], key)
        if applied:
            patches_applied[sku] += 1
        replayed = status == 200 and not applied  # only applied changes are stored under a key
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return Response(content, status, headers=headers, media_type="application/json")

    async def rates(request: Request) -> JSONResponse:
        if response := fault():
            return response
        base = request.query_params.get("base", "EUR")
        if base != "EUR":
            return JSONResponse({"error": "only base=EUR is supported"}, 400)
        return JSONResponse({"base": base, "rates": await run_in_threadpool(_rates, db_path)})

    patches_applied: Counter[str] = Counter()
    app = counted_app([
        Route("/oauth/token", token, methods=["POST"]),
        Route("/orders", orders),
        Route("/products/{sku}", product, methods=["GET", "PATCH"]),
        Route("/rates", rates),
    ])
    app.state.patches_applied = patches_applied
    return app
