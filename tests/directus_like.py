"""A stand-in for Directus 12's items API, answering as Directus 12.4 was seen to (its install takes about 20 min,
too slow for CI), served over real HTTP by `interlink.demo_systems.server.serve`:

- `GET /items/{collection}`: `{"data": [...]}`;
- `GET /items/{collection}/{id}`: `{"data": item}`, or 403 FORBIDDEN when there is no such item;
- `PATCH /items/{collection}/{id}`: `{"data": item}` when it exists; **204 when it does not, creating nothing**;
- `POST /items/{collection}`: creates the item (its `id` from the body), `{"data": item}`; 400 RECORD_NOT_UNIQUE when it exists.

`app.state.items` holds the collections (items by id as text), `app.state.requests` counts requests by method.
"""

from __future__ import annotations

import json
from collections import Counter

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FORBIDDEN = {"errors": [{"message": "You don't have permission to access this.", "extensions": {"code": "FORBIDDEN"}}]}


def directus_like(items: dict[str, dict[str, dict]]) -> Starlette:
    requests: Counter[str] = Counter()

    async def collection(request: Request) -> Response:
        requests[request.method] += 1
        stored = items.setdefault(request.path_params["collection"], {})
        if request.method == "GET":
            return JSONResponse({"data": list(stored.values())})
        item = json.loads(await request.body())
        if str(item.get("id")) in stored:
            return JSONResponse({"errors": [{"message": 'Value for field "id" has to be unique.',
                                             "extensions": {"code": "RECORD_NOT_UNIQUE"}}]}, 400)
        stored[str(item["id"])] = item
        return JSONResponse({"data": item})

    async def one(request: Request) -> Response:
        requests[request.method] += 1
        stored = items.setdefault(request.path_params["collection"], {})
        key = request.path_params["id"]
        if request.method == "GET":
            return JSONResponse({"data": stored[key]}) if key in stored else JSONResponse(FORBIDDEN, 403)
        if key not in stored:
            return Response(status_code=204)  # Directus: no such item, nothing changed, nothing said
        stored[key] = {**stored[key], **json.loads(await request.body())}
        return JSONResponse({"data": stored[key]})

    app = Starlette(routes=[
        Route("/items/{collection}", collection, methods=["GET", "POST"]),
        Route("/items/{collection}/{id}", one, methods=["GET", "PATCH"]),
    ])
    app.state.items, app.state.requests = items, requests
    return app
