"""The benchmark's REST source: N customer rows of 10 fields, generated once from a seed and served pre-serialized.

- `GET /customers?limit=&offset=&updated_since=&updated_before=` → `{"total": …, "data": [...]}`; rows sorted by
  (updated_at, id), `updated_since` inclusive, `updated_before` exclusive, `total` counting the rows between them.
- `GET /countries/{code}`: the finance terms of `interlink.demo_systems.crm_data.COUNTRIES`, 404 for any other code.
- `POST /admin/mutate?share=0.01`: that share of the rows (valid ones only) gets a new name and a later `updated_at`;
  `Customers.reset()` brings back the generated rows.

Each row is serialized to JSON once, so a page is a join of byte strings: the source is not the bottleneck.
Rows whose number is 7 modulo 200 (0.5 %) carry a malformed email or phone, for the gate to quarantine.
Every request but `/health` needs the `X-API-Key` header.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_left
from datetime import timedelta

import numpy as np
import orjson
from interlink.demo_systems.crm_data import BASE_TIME, COUNTRIES, FIRST_NAMES, HISTORY, LAST_NAMES, TS_FORMAT
from interlink.demo_systems.http import BadRequest, counted_app, parse_positive, parse_since
from interlink.tasks.transform import CALLING_CODES
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FIELDS = ("id", "name", "email", "phone", "country", "updated_at", "company", "city", "plan", "created_at")
DEFAULT_LIMIT, MAX_LIMIT = 1000, 10_000
INVALID_EVERY, INVALID_AT = 200, 7
CITIES = ["Berlin", "London", "Paris", "Madrid", "Rome", "Amsterdam", "Stockholm", "Warsaw", "Zurich", "Toronto", "Sydney"]
PLANS = ["free", "starter", "pro", "enterprise"]
SUFFIXES = ["GmbH", "Ltd", "SA", "BV", "AB", "Inc", "Group", "& Co"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "example.co.uk", "shop.example.de"]


def _ascii(names: list[str]) -> np.ndarray:
    return np.array([unicodedata.normalize("NFKD", n).encode("ascii", "ignore").decode().replace(" ", "").lower() for n in names])


def _stamps(micros: np.ndarray) -> list[str]:
    """Microseconds since BASE_TIME as canonical UTC timestamps (`TS_FORMAT`)."""
    base = np.datetime64(BASE_TIME.replace(tzinfo=None), "us")
    return [s + "Z" for s in np.datetime_as_string(base + micros.astype("timedelta64[us]"), unit="us").tolist()]


def generate(n: int, seed: int) -> tuple[list[str], list[bytes]]:
    """N customers sorted by (updated_at, id): their `updated_at` values and their JSON, both in that order."""
    rng = np.random.default_rng(seed)

    def pick(values: list[str]) -> np.ndarray:
        return np.asarray(values)[rng.integers(0, len(values), n)]

    number = np.arange(1, n + 1)
    first_i, last_i = rng.integers(0, len(FIRST_NAMES), n), rng.integers(0, len(LAST_NAMES), n)
    first, last = np.array(FIRST_NAMES)[first_i], np.array(LAST_NAMES)[last_i]
    local = np.char.add(np.char.add(_ascii(FIRST_NAMES)[first_i], "."), _ascii(LAST_NAMES)[last_i])
    email = np.char.add(np.char.add(np.char.add(local, number.astype(str)), "@"), pick(DOMAINS))
    country_i = rng.integers(0, len(COUNTRIES), n)
    country = np.array(list(COUNTRIES))[country_i]
    calling = np.array([CALLING_CODES[c] for c in COUNTRIES])[country_i]
    phone = np.char.add(np.char.add(np.char.add("+", calling), " "), rng.integers(10**8, 10**9, n).astype(str))
    invalid = number % INVALID_EVERY == INVALID_AT
    bad_email = invalid & (number // INVALID_EVERY % 2 == 0)
    email = np.where(bad_email, np.char.replace(email, "@", " at "), email)
    phone = np.where(invalid & ~bad_email, "call me", phone)
    history_us = HISTORY // timedelta(microseconds=1)
    updated_us = -rng.integers(1, history_us, n)
    created_us = updated_us - rng.integers(0, 3 * 365 * 86_400, n) * 1_000_000
    order = np.lexsort((number, updated_us))
    columns = {
        "id": np.char.add("C", np.char.zfill(number.astype(str), 7)),
        "name": np.char.add(np.char.add(first, " "), last),
        "email": email,
        "phone": phone,
        "country": country,
        "updated_at": np.array(_stamps(updated_us)),
        "company": np.char.add(np.char.add(last, " "), pick(SUFFIXES)),
        "city": pick(CITIES),
        "plan": pick(PLANS),
        "created_at": np.array([s[:19] + "Z" for s in _stamps(created_us)]),
    }
    values = [columns[f][order].tolist() for f in FIELDS]
    rows = [orjson.dumps(dict(zip(FIELDS, row))) for row in zip(*values)]
    return values[FIELDS.index("updated_at")], rows


class Customers:
    """The served rows: the generated ones, or those after `mutate`."""

    def __init__(self, n: int, seed: int = 7):
        self.seed = seed
        self._generated = generate(n, seed)
        self.reset()

    def reset(self) -> None:
        self.updated, self.rows = list(self._generated[0]), list(self._generated[1])

    def page(self, since: str | None, before: str | None, offset: int, limit: int) -> bytes:
        start = bisect_left(self.updated, since) if since else 0
        end = bisect_left(self.updated, before) if before else len(self.rows)
        first = start + offset
        return b'{"total":%d,"data":[%b]}' % (max(end - start, 0), b",".join(self.rows[first : min(first + limit, end)]))

    def mutate(self, share: float) -> int:
        """Give `share` of all rows (valid ones only) a new name and an `updated_at` after every other row's."""
        count = round(share * len(self.rows))
        later = BASE_TIME + timedelta(days=1)
        moved = np.zeros(len(self.rows), dtype=bool)
        changed: list[dict] = []
        for i in np.random.default_rng(self.seed + 1).permutation(len(self.rows)).tolist():
            if len(changed) == count:
                break
            record = orjson.loads(self.rows[i])
            if int(record["id"][1:]) % INVALID_EVERY != INVALID_AT:
                stamp = (later + timedelta(milliseconds=len(changed))).strftime(TS_FORMAT)
                changed.append({**record, "name": record["name"] + " Jr.", "updated_at": stamp})
                moved[i] = True
        kept = np.flatnonzero(~moved).tolist()
        self.updated = [self.updated[i] for i in kept] + [r["updated_at"] for r in changed]
        self.rows = [self.rows[i] for i in kept] + [orjson.dumps(r) for r in changed]
        return count


def create_app(customers: Customers, api_key: str) -> Starlette:
    """The source's HTTP API over `customers`."""

    def authorised(endpoint):
        async def checked(request: Request) -> Response:
            if request.headers.get("X-API-Key") != api_key:
                return JSONResponse({"error": "invalid API key"}, 401)
            try:
                return endpoint(request)
            except BadRequest as exc:
                return JSONResponse({"error": str(exc)}, 400)

        return checked

    def list_customers(request: Request) -> Response:
        query = request.query_params
        limit = parse_positive(query.get("limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT)
        offset = query.get("offset", "0")
        if not offset.isdecimal():
            raise BadRequest("offset must be an integer >= 0")
        since, before = parse_since(query.get("updated_since")), parse_since(query.get("updated_before"), "updated_before")
        body = customers.page(since, before, int(offset), limit)
        return Response(body, media_type="application/json")

    def country(request: Request) -> Response:
        code = request.path_params["code"]
        if code not in COUNTRIES:
            return JSONResponse({"error": "unknown country code"}, 404)
        currency, tax_rate = COUNTRIES[code]
        return JSONResponse({"code": code, "currency": currency, "tax_rate": tax_rate})

    def mutate(request: Request) -> Response:
        return JSONResponse({"changed": customers.mutate(float(request.query_params.get("share", "0.01")))})

    return counted_app(
        [
            Route("/customers", authorised(list_customers)),
            Route("/countries/{code}", authorised(country)),
            Route("/admin/mutate", authorised(mutate), methods=["POST"]),
        ]
    )
