"""Pieces every demo API shares: request counting, injected faults, query parsing."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import UTC, datetime

from interlink.demo_systems.crm_data import format_ts
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class BadRequest(ValueError):
    """A query parameter the API cannot accept; the message is returned to the client."""


class HitCounter:
    """ASGI middleware counting every HTTP request by path."""

    def __init__(self, app: ASGIApp, hits: Counter[str]) -> None:
        self.app = app
        self.hits = hits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.hits[scope["path"]] += 1
        await self.app(scope, receive, send)


class Faults:
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


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def counted_app(routes: list[Route]) -> Starlette:
    """A Starlette app serving `routes` and GET /health, counting requests by path in `app.state.hits`."""
    hits: Counter[str] = Counter()
    app = Starlette(routes=[*routes, Route("/health", _health)], middleware=[Middleware(HitCounter, hits=hits)])
    app.state.hits = hits
    return app


def parse_positive(raw: str | None, name: str, default: int, maximum: int | None = None) -> int:
    """A positive integer query parameter, at most `maximum`."""
    if raw is None:
        return default
    if raw.isdecimal() and 1 <= int(raw) <= (maximum or math.inf):
        return int(raw)
    raise BadRequest(f"{name} must be an integer between 1 and {maximum}" if maximum else f"{name} must be an integer >= 1")


def parse_since(raw: str | None, name: str = "updated_since") -> str | None:
    """Normalise an ISO-8601 timestamp (naive means UTC) to the stored format; `name` is the parameter's."""
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an ISO-8601 timestamp") from exc
    return format_ts(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
