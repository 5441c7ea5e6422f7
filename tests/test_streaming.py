"""A large sync streams: the flow holds a bounded number of source rows at any time, whatever the total."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from interlink.connectors.gauge import ROWS_HELD
from interlink.connectors.sql import create_engine
from interlink.demo_systems.server import serve
from interlink.flows.crm_to_billing import PIPELINE as crm_to_billing
from interlink.flows.pipeline import sync_flow
from interlink.tasks.ingest import RestSource
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TOTAL = 200_000
CHUNK = 20_000
COUNTRIES = ("DE", "FR", "NL", "GB", "US")
START = datetime(2026, 1, 1, tzinfo=UTC)


def customer(i: int) -> dict:
    return {
        "id": f"C{i:07d}",
        "name": f"Customer {i}",
        "email": f"user{i}@example.com",
        "phone": f"+4930{i:07d}",
        "country": COUNTRIES[i % len(COUNTRIES)],
        "updated_at": (START + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
    }


def generated_crm() -> Starlette:
    """A CRM of TOTAL customers made on the fly, paged by offset with a total, and its finance lookup."""

    async def customers(request: Request) -> JSONResponse:
        offset, limit = int(request.query_params["offset"]), int(request.query_params["limit"])
        rows = [customer(i) for i in range(offset, min(offset + limit, TOTAL))]
        return JSONResponse({"data": rows, "total": TOTAL})

    async def country(request: Request) -> JSONResponse:
        return JSONResponse({"code": request.path_params["code"], "currency": "EUR", "tax_rate": 0.2})

    return Starlette(routes=[Route("/customers", customers), Route("/countries/{code}", country)])


@pytest.mark.parametrize("billing_url", ["postgresql"], indirect=True)
def test_a_200k_row_sync_holds_at_most_three_chunks_of_source_rows_at_once(billing_url, monkeypatch):
    source = RestSource(
        connection="crm", path="/customers", cursor_field="updated_at", since_param="updated_since",
        paginator={"type": "offset", "limit": 1000, "total_path": "total"}, concurrent_pages=4,
    )
    sync = sync_flow(replace(crm_to_billing, source=source))
    with serve(generated_crm()) as url:
        monkeypatch.setenv("INTERLINK_CRM__BASE_URL", url)
        monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", url)
        ROWS_HELD.reset_peak()
        before = ROWS_HELD.held
        summary = sync(chunk_size=CHUNK)

    assert summary["rows_read"] == summary["rows_inserted"] == TOTAL
    engine = create_engine(billing_url)
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(DISTINCT crm_id) FROM customers")) == TOTAL
    engine.dispose()
    # The chunk being delivered, the one being checked and the one being read; never the run's 10 chunks.
    assert CHUNK <= ROWS_HELD.peak - before <= 3 * CHUNK
