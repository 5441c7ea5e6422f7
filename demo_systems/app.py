"""The demo CRM and finance reference API as a Starlette app."""

from __future__ import annotations

import base64
import json
import random
import sqlite3
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from demo_systems.crm_data import format_ts

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_FIELDS = ("id", "name", "email", "phone", "country", "updated_at")


class BadRequest(ValueError):
    """A query parameter the API cannot accept; the message is returned to the client."""


class _HitCounter:
    """ASGI middleware counting every HTTP request by path."""

    def __init__(self, app: ASGIApp, hits: Counter[str]) -> None:
        self.app = app
        self.hits = hits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.hits[scope["path"]] += 1
        await self.app(scope, receive, send)


class _Faults:
    """Injects 429 and 503 answers, alternating, with probability `rate` per request."""

    def __init__(self, rate: float, retry_after: int, seed: int | None) -> None:
        self.rate = rate
        self.retry_after = retry_after
        self.rng = random.Random(seed)
        self.count = 0

    def __call__(self) -> JSONResponse | None:
        if self.rng.random() >= self.rate:
            return None
        self.count += 1
        if self.count % 2:
            return JSONResponse(
                {"error": "rate limited"}, 429, headers={"Retry-After": str(self.retry_after)}
            )
        return JSONResponse({"error": "service unavailable"}, 503)


def encode_cursor(updated_at: str, row_id: int) -> str:
    """Opaque cursor pointing after the row (updated_at, row_id)."""
    return base64.urlsafe_b64encode(json.dumps([updated_at, row_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, int]:
    """Inverse of encode_cursor; raises BadRequest on anything else."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError as exc:  # includes binascii.Error and UnicodeDecodeError
        raise BadRequest("invalid cursor") from exc
    if not (
        isinstance(value, list) and len(value) == 2
        and isinstance(value[0], str) and type(value[1]) is int
    ):
        raise BadRequest("invalid cursor")
    return value[0], value[1]


def _parse_limit(raw: str | None) -> int:
    """Page size from the query string."""
    if raw is None:
        return DEFAULT_LIMIT
    if raw.isdecimal() and 1 <= int(raw) <= MAX_LIMIT:
        return int(raw)
    raise BadRequest(f"limit must be an integer between 1 and {MAX_LIMIT}")


def _parse_since(raw: str | None) -> str | None:
    """Normalise an ISO-8601 timestamp (naive means UTC) to the stored format."""
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest("updated_since must be an ISO-8601 timestamp") from exc
    return format_ts(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _connect(db_path: Path) -> closing[sqlite3.Connection]:
    """A fresh read-only connection, closed on exit."""
    return closing(sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True))


def _customer_page(
    db_path: Path, since: str | None, after: tuple[str, int] | None, limit: int
) -> dict[str, Any]:
    """One keyset page of customers ordered by (updated_at, row_id)."""
    conditions: list[str] = []
    params: list[str | int] = []
    if since is not None:
        conditions.append("updated_at >= ?")
        params.append(since)
    if after is not None:
        conditions.append("(updated_at, row_id) > (?, ?)")
        params.extend(after)
    sql = (
        f"SELECT row_id, {', '.join(_FIELDS)} FROM customers WHERE {' AND '.join(conditions) or 1}"
        " ORDER BY updated_at, row_id LIMIT ?"
    )
    with _connect(db_path) as conn:
        rows = conn.execute(sql, [*params, limit + 1]).fetchall()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1][-1], page[-1][0]) if len(rows) > limit else None
    return {"data": [dict(zip(_FIELDS, row[1:])) for row in page], "next_cursor": next_cursor}


def _country(db_path: Path, code: str) -> dict[str, Any] | None:
    """The finance reference row for an exact country code, if any."""
    with _connect(db_path) as conn:
        row = conn.execute("SELECT code, currency, tax_rate FROM countries WHERE code = ?", (code,)).fetchone()
    return dict(zip(("code", "currency", "tax_rate"), row)) if row else None


def create_app(
    db_path: Path,
    api_key: str,
    fault_rate: float = 0.0,
    retry_after: int = 1,
    fault_seed: int | None = None,
) -> Starlette:
    """Build the API over the SQLite file written by crm_data.seed."""
    fault = _Faults(fault_rate, retry_after, fault_seed)

    async def customers(request: Request) -> JSONResponse:
        if response := fault():
            return response
        if request.headers.get("X-API-Key") != api_key:
            return JSONResponse({"error": "invalid API key"}, 401)
        query = request.query_params
        try:
            limit = _parse_limit(query.get("limit"))
            since = _parse_since(query.get("updated_since"))
            after = decode_cursor(query["cursor"]) if "cursor" in query else None
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(await run_in_threadpool(_customer_page, db_path, since, after, limit))

    async def country(request: Request) -> JSONResponse:
        if response := fault():
            return response
        found = await run_in_threadpool(_country, db_path, request.path_params["code"])
        return JSONResponse(found) if found else JSONResponse({"error": "unknown country code"}, 404)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    hits: Counter[str] = Counter()
    app = Starlette(
        routes=[
            Route("/customers", customers),
            Route("/countries/{code}", country),
            Route("/health", health),
        ],
        middleware=[Middleware(_HitCounter, hits=hits)],
    )
    app.state.hits = hits
    return app
