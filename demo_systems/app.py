"""The demo CRM and finance reference API as a Starlette app."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from interlink.demo_systems.http import BadRequest, Faults, counted_app, parse_positive, parse_since
from interlink.demo_systems.sqlite import read_only
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_FIELDS = ("id", "name", "email", "phone", "country", "updated_at")


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


def _customer_page(
    db_path: Path, since: str | None, after: tuple[str, int] | None, limit: int, before: str | None = None
) -> dict[str, Any]:
    """One keyset page of customers ordered by (updated_at, row_id), updated at or after `since` and before `before`."""
    conditions: list[str] = []
    params: list[str | int] = []
    if since is not None:
        conditions.append("updated_at >= ?")
        params.append(since)
    if before is not None:
        conditions.append("updated_at < ?")
        params.append(before)
    if after is not None:
        conditions.append("(updated_at, row_id) > (?, ?)")
        params.extend(after)
    sql = (
        f"SELECT row_id, {', '.join(_FIELDS)} FROM customers WHERE {' AND '.join(conditions) or 1}"
        " ORDER BY updated_at, row_id LIMIT ?"
    )
    with read_only(db_path) as conn:
        rows = conn.execute(sql, [*params, limit + 1]).fetchall()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1][-1], page[-1][0]) if len(rows) > limit else None
    return {"data": [dict(zip(_FIELDS, row[1:])) for row in page], "next_cursor": next_cursor}


def _country(db_path: Path, code: str) -> dict[str, Any] | None:
    """The finance reference row for an exact country code, if any."""
    with read_only(db_path) as conn:
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
    fault = Faults(fault_rate, retry_after, fault_seed)

    async def customers(request: Request) -> JSONResponse:
        if response := fault():
            return response
        if request.headers.get("X-API-Key") != api_key:
            return JSONResponse({"error": "invalid API key"}, 401)
        query = request.query_params
        try:
            limit = parse_positive(query.get("limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT)
            since = parse_since(query.get("updated_since"))
            before = parse_since(query.get("updated_before"), "updated_before")
            after = decode_cursor(query["cursor"]) if "cursor" in query else None
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(await run_in_threadpool(_customer_page, db_path, since, after, limit, before))

    async def country(request: Request) -> JSONResponse:
        if response := fault():
            return response
        found = await run_in_threadpool(_country, db_path, request.path_params["code"])
        return JSONResponse(found) if found else JSONResponse({"error": "unknown country code"}, 404)

    return counted_app([Route("/customers", customers), Route("/countries/{code}", country)])
