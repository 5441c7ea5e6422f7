"""Every code block of the how-to guides on connecting systems (docs/how-to/), run against a real local system.

Python blocks are executed and what they declare is used: each REST source reads a local API answering in its
style (several pages, a stated total) through `RestSource.chunks`, and every record must arrive exactly once;
SQL sources read SQLite and PostgreSQL, folder sources a tmp folder, the RabbitMQ blocks the broker on 5672, the
webhook sender the receiver app. YAML blocks load through `declared_connections` and then serve a read; `export`
blocks are set in the environment and used; `interlink …` blocks run in-process against a project made in tmp, or,
for a long-running server, are checked to parse. Each page's last test asserts that every block of the page
is claimed by a test.
"""

from __future__ import annotations

import base64
import os
import re
import sqlite3
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.demo_systems.server import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from interlink import flows
from interlink.cli import main
from interlink.settings import Settings, declared_connections
from tests.conftest import reset_tables, service_url
from tests.docs_blocks import Block, blocks
from tests.json_server import json_server

CLAIMED: dict[str, list[int]] = {}  # page -> the lines of the blocks a test runs, as the tests take them (at import)


def claim(page: str, wanted: Callable[[Block], bool]) -> list[Block]:
    """The blocks of `docs/how-to/<page>` a test runs; each block may be claimed once."""
    found = [b for b in blocks(f"how-to/{page}") if wanted(b)]
    assert found, f"{page}: no block for a test"
    CLAIMED.setdefault(page, []).extend(b.line for b in found)
    return found


def declared(code: str, **names: object) -> dict:
    """The names a python block declares, run with `names` defined."""
    namespace: dict = dict(names)
    exec(compile(code, "<docs block>", "exec"), namespace)
    return namespace


def exports(block: Block) -> dict[str, str]:
    """The variables an `export NAME=value` block sets."""
    found = dict(re.findall(r"^export (\w+)=(\S+)$", block.code, re.M))
    assert found and len(found) == len(block.code.strip().splitlines()), block.code
    return found


def commands(block: Block) -> list[list[str]]:
    """The `interlink …` commands of a bash block, as argument lists."""
    lines = [line for line in block.code.strip().splitlines() if line and not line.startswith("#")]
    assert all(line.startswith("interlink ") for line in lines), block.code
    return [line.split()[1:] for line in lines]


def assert_all_claimed(page: str) -> None:
    """Every block of the page is run by exactly one test: a new block without a test fails here."""
    assert sorted(CLAIMED[page]) == [b.line for b in blocks(f"how-to/{page}")]


# ---------------------------------------------------------------------------------------------------------------
# rest-source.md: one local API answering in every style the page declares

RECORDS = [{"id": i, "name": f"Customer {i}", "updated_at": f"2026-01-01T{i // 60:02d}:{i % 60:02d}:00Z"} for i in range(1, 251)]
SINCE = RECORDS[199]["updated_at"]  # an incremental read from here gets ids 200..250
TOKEN = "tok-8f3a1c"  # the OAuth2 token the local API issues


def styles_api() -> Starlette:
    """Every API style of rest-source.md on one app; `app.state.seen` counts requests by path,
    `app.state.auth` (None, or ("X-API-Key", key) / ("Authorization", "Bearer …")) is required of every data request,
    `app.state.fail` answers that many 503s first, and `app.state.drop` has the next-URL API lose a record."""

    def since(request: Request, param: str, field: str = "updated_at") -> list[dict]:
        rows = [dict(r) for r in RECORDS]
        if field != "updated_at":
            rows = [{**{k: v for k, v in r.items() if k != "updated_at"}, field: r["updated_at"]} for r in rows]
        start = request.query_params.get(param)
        return [r for r in rows if start is None or r[field] >= start]

    def paged(request: Request) -> tuple[int, int]:
        return int(request.query_params.get("offset", 0)), int(request.query_params.get("limit", 100))

    async def cursor(request: Request) -> Response:
        rows, size = since(request, "updated_since"), int(request.query_params["limit"])
        start = int(base64.b64decode(request.query_params.get("cursor", "MA==")))
        more = start + size < len(rows)
        token = base64.b64encode(str(start + size).encode()).decode() if more else ""
        return JSONResponse({"ok": True, "members": rows[start : start + size], "response_metadata": {"next_cursor": token}})

    async def next_url(request: Request) -> Response:
        rows, number = since(request, "updated_after"), int(request.query_params.get("page", 1))
        more = number * 100 < len(rows)
        nxt = str(request.url.include_query_params(page=number + 1)) if more else None
        page = rows[(number - 1) * 100 : number * 100][1 if app.state.drop and number == 2 else 0 :]
        return JSONResponse({"count": len(rows), "next": nxt, "previous": None, "results": page})

    async def link(request: Request) -> Response:
        rows, size, number = since(request, "since"), int(request.query_params["per_page"]), int(request.query_params.get("page", 1))
        last = max(1, -(-len(rows) // size))
        response = JSONResponse(rows[(number - 1) * size : number * size])
        links = [f'<{request.url.include_query_params(page=number + 1)}>; rel="next"'] if number < last else []
        response.headers["Link"] = ", ".join([*links, f'<{request.url.include_query_params(page=last)}>; rel="last"'])
        return response

    async def directus(request: Request) -> Response:
        rows, (offset, limit) = since(request, "filter[date_updated][_gte]", "date_updated"), paged(request)
        return JSONResponse({"data": rows[offset : offset + limit], "meta": {"filter_count": len(rows)}})

    async def page_number(request: Request) -> Response:
        rows, size, number = since(request, "modified_since"), int(request.query_params["per_page"]), int(request.query_params["page"])
        meta = {"total": len(rows), "total_pages": -(-len(rows) // size)}
        return JSONResponse({"data": rows[(number - 1) * size : number * size], "meta": meta})

    async def keyset(request: Request) -> Response:
        rows = sorted(since(request, "updated_since"), key=lambda r: r["updated_at"])
        return JSONResponse({"entries": rows[: int(request.query_params["limit"])]})

    async def customers(request: Request) -> Response:
        rows, (offset, limit) = since(request, "updated_since"), paged(request)
        nxt = str(request.url.include_query_params(offset=offset + limit, limit=limit)) if offset + limit < len(rows) else None
        return JSONResponse({"data": rows[offset : offset + limit], "total": len(rows), "links": {"next": nxt}})

    async def changes(request: Request) -> Response:
        rows = [{"id": r["id"], "changed_ms": 1_767_225_600_000 + 1000 * r["id"]} for r in RECORDS]
        start = int(request.query_params.get("changed_ms_gte", 0))
        return JSONResponse([r for r in rows if r["changed_ms"] >= start])

    async def token(request: Request) -> Response:
        form, (user, password) = await request.form(), app.state.client
        basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()  # RFC 6749's client authentication
        ok = form.get("grant_type") == "client_credentials" and request.headers.get("Authorization") == basic
        return JSONResponse({"access_token": TOKEN, "token_type": "bearer", "expires_in": 3600} if ok else {"error": "invalid_client"}, 200 if ok else 401)

    def guarded(handler: Callable) -> Callable:
        async def endpoint(request: Request) -> Response:
            app.state.seen[request.url.path] += 1
            if app.state.fail:
                app.state.fail -= 1
                return JSONResponse({"error": "busy"}, 503, headers={"Retry-After": "0"})
            if app.state.auth and request.headers.get(app.state.auth[0]) != app.state.auth[1]:
                return JSONResponse({"error": "unauthorised"}, 401)
            return await handler(request)

        return endpoint

    routes = {"/users.list": cursor, "/customers/": next_url, "/repos/acme/shop/issues": link, "/items/customers": directus,
              "/orders": page_number, "/entries": keyset, "/customers": customers, "/changes": changes}
    app = Starlette(routes=[*(Route(p, guarded(h)) for p, h in routes.items()), Route("/oauth/token", token, methods=["POST"])])
    app.state.seen, app.state.auth, app.state.fail, app.state.client, app.state.drop = Counter(), None, 0, None, False
    return app


@pytest.fixture
def api(home: Path) -> Iterator[Starlette]:
    app = styles_api()
    with serve(app) as url:
        app.state.url = url
        yield app


def read(source, since: str | None = None) -> pd.DataFrame:
    """Everything `source` reads through its real code path, in chunks of 120 (so a read spans chunks)."""
    chunks = list(source.chunks(Settings.load(), since, 120))
    assert chunks[-1].last and not any(c.refused for c in chunks)
    return pd.concat([c.records for c in chunks], ignore_index=True)


def assert_once(records: pd.DataFrame, ids: range) -> None:
    assert sorted(records["id"].tolist()) == list(ids)  # every record, each exactly once


SOURCES = claim("rest-source.md", lambda b: b.lang == "python" and "SOURCE =" in b.code)
[REST_YAML] = claim("rest-source.md", lambda b: b.lang == "yaml")
REST_EXPORTS = claim("rest-source.md", lambda b: b.code.startswith("export "))
[REST_MODULE] = claim("rest-source.md", lambda b: b.title is not None and b.lang == "python")
[REST_RUN] = claim("rest-source.md", lambda b: b.code.startswith("interlink "))
AUTO = next(b for b in SOURCES if '"crm"' in b.code)


@pytest.mark.parametrize("block", SOURCES, ids=[re.search(r'RestSource\(\s*"(\w+)"', b.code)[1] for b in SOURCES])
def test_each_rest_source_reads_every_record_once_in_its_apis_style(block, api, tmp_path, monkeypatch):
    source = declared(block.code)["SOURCE"]
    if source.connection == "shop" and source.path == "/items":  # json-server 0.17 itself: _start, _limit, X-Total-Count
        with json_server({"items": RECORDS}, tmp_path) as url:
            monkeypatch.setenv("INTERLINK_SHOP__BASE_URL", url)
            assert_once(read(source), range(1, 251))
            assert_once(read(source, SINCE), range(200, 251))
        return
    monkeypatch.setenv(f"INTERLINK_{source.connection.upper()}__BASE_URL", api.state.url)
    if source.cursor_unit:  # one page of epoch milliseconds: the watermark stays the number as written
        chunk = next(source.chunks(Settings.load(), None, 1000))
        assert len(chunk.records) == 250 and chunk.watermark == str(1_767_225_600_000 + 250_000)
        assert_once(next(source.chunks(Settings.load(), "1767225800000", 1000)).records, range(200, 251))
        return
    assert_once(read(source), range(1, 251))
    assert api.state.seen[source.path] >= 3  # several pages
    assert_once(read(source, SINCE), range(200, 251))  # the since_param asks for the changes only


def test_a_read_short_of_the_stated_total_fails_before_its_last_chunk_is_handed_on(api, monkeypatch):
    """What "Completeness" promises, with the page's next-URL source: an API that loses a record is caught."""
    [block] = [b for b in SOURCES if '"next_url"' in b.code]
    source = declared(block.code)["SOURCE"]
    monkeypatch.setenv("INTERLINK_API__BASE_URL", api.state.url)
    api.state.drop = True
    with pytest.raises(Exception, match="read 249 records, but the source states 250"):
        list(source.chunks(Settings.load(), None, 1000))


def test_the_connection_entry_loads_and_its_retries_outlast_busy_answers(api, tmp_path, monkeypatch):
    path = tmp_path / "connections.yaml"
    path.write_text(REST_YAML.code)
    crm = declared_connections(path)["crm"]
    assert (crm["kind"], crm["max_attempts"], crm["rate_per_s"], crm["max_concurrency"]) == ("rest", 5, 20, 4)

    monkeypatch.setenv("INTERLINK_CONNECTIONS_FILE", str(path))
    monkeypatch.setenv("INTERLINK_CRM__BASE_URL", api.state.url)
    api.state.fail = 3  # three 503s with Retry-After: 0, then the API answers: within max_attempts 5
    auto = declared(AUTO.code)["SOURCE"]
    assert_once(read(auto), range(1, 251))
    assert api.state.fail == 0 and Settings.load().connection("crm").rate_per_s == 20


@pytest.mark.parametrize("kind", ["api_key", "bearer", "oauth2_client_credentials"])
def test_each_credentials_block_is_what_the_api_gets(kind, api, monkeypatch):
    [block] = [b for b in REST_EXPORTS if f"KIND={kind}\n" in b.code]
    for name, value in exports(block).items():
        monkeypatch.setenv(name, value.replace("https://crm.example.com", api.state.url))
    env = os.environ
    api.state.auth = {
        "api_key": ("X-API-Key", env.get("INTERLINK_CRM__AUTH__KEY")),
        "bearer": ("Authorization", f"Bearer {env.get('INTERLINK_CRM__AUTH__TOKEN')}"),
        "oauth2_client_credentials": ("Authorization", f"Bearer {TOKEN}"),
    }[kind]
    api.state.client = (env.get("INTERLINK_CRM__AUTH__CLIENT_ID"), env.get("INTERLINK_CRM__AUTH__CLIENT_SECRET"))
    auto = declared(AUTO.code)["SOURCE"]
    assert Settings.load().connection("crm").auth.kind == kind
    assert_once(read(auto), range(1, 251))
    monkeypatch.setenv(f"INTERLINK_CRM__AUTH__{'CLIENT_SECRET' if kind.startswith('oauth') else 'KEY' if kind == 'api_key' else 'TOKEN'}", "wrong")
    with pytest.raises(Exception, match="401|rejected|invalid"):
        read(auto)


@pytest.fixture
def project(home: Path, tmp_path: Path, monkeypatch) -> Callable[[Block, str], Path]:
    """A project in tmp holding a page's integration module; `INTERLINK_INTEGRATIONS` names only it."""

    def make(block: Block, connections: str) -> Path:
        module = tmp_path / "project" / block.title
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text(block.code)
        (tmp_path / "project" / "connections.yaml").write_text(connections)
        (tmp_path / "project" / "deployments.yaml").write_text(  # deployed, so `interlink connectors` lists its connections
            f"timezone: UTC\nintegrations:\n  {module.stem}:\n    owner: {{team: Data, contact: '#data'}}\n"
            f"deployments:\n  - {{integration: {module.stem}, flow: sync, cron: '0 2 * * *'}}\n"
        )
        monkeypatch.setenv("INTERLINK_DEPLOYMENTS_FILE", str(tmp_path / "project" / "deployments.yaml"))
        monkeypatch.syspath_prepend(str(module.parent))
        monkeypatch.setenv("INTERLINK_INTEGRATIONS", module.stem)
        monkeypatch.setenv("INTERLINK_CONNECTIONS_FILE", str(tmp_path / "project" / "connections.yaml"))
        monkeypatch.chdir(tmp_path / "project")
        flows.integrations.cache_clear()
        return module

    yield make
    flows.integrations.cache_clear()
    for name in [n for n, m in list(sys.modules.items()) if getattr(m, "__file__", None) and str(tmp_path) in m.__file__]:
        del sys.modules[name]


def test_the_pipeline_module_runs_and_a_second_run_reads_only_the_watermark(api, project, tmp_path, monkeypatch, capsys):
    project(REST_MODULE, REST_YAML.code + "warehouse: {kind: sql}\n")
    warehouse = tmp_path / "warehouse.db"
    monkeypatch.setenv("INTERLINK_CRM__BASE_URL", api.state.url)
    monkeypatch.setenv("INTERLINK_WAREHOUSE__URL", f"sqlite:///{warehouse}")
    outputs = []
    for argv in commands(REST_RUN):
        capsys.readouterr()
        assert main(argv) == 0, argv
        outputs.append(capsys.readouterr().out)
    assert "crm" in outputs[0] and "warehouse" in outputs[0]
    assert "read 250, inserted 250, updated 0" in outputs[1]
    with closing(sqlite3.connect(warehouse)) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT customer_id) FROM customers").fetchone() == (250, 250)
    capsys.readouterr()
    assert main(commands(REST_RUN)[1]) == 0
    assert "read 1, inserted 0, updated 0, unchanged 1" in capsys.readouterr().out


def test_rest_source_every_block_is_run():
    assert_all_claimed("rest-source.md")


# ---------------------------------------------------------------------------------------------------------------
# sql-source.md: the legacy database, on SQLite and on PostgreSQL

SQL_SOURCES = claim("sql-source.md", lambda b: b.lang == "python" and "SOURCE =" in b.code)
[SQL_YAML] = claim("sql-source.md", lambda b: b.lang == "yaml")
[SQL_EXPORTS] = claim("sql-source.md", lambda b: b.code.startswith("export "))
[SQL_MODULE] = claim("sql-source.md", lambda b: b.title is not None and b.lang == "python")
[SQL_RUN] = claim("sql-source.md", lambda b: b.code.startswith("interlink "))
LEGACY = [
    "CREATE TABLE suppliers (id INTEGER PRIMARY KEY, name VARCHAR(100), changed_at TIMESTAMP)",
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(100))",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total NUMERIC(10, 2), changed_at TIMESTAMP)",
    "CREATE TABLE order_lines (order_id INTEGER, line_no INTEGER, sku VARCHAR(20), quantity INTEGER, note VARCHAR(20),"
    " changed_at TIMESTAMP, PRIMARY KEY (order_id, line_no))",
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50), changed_at BIGINT)",
    *(f"INSERT INTO suppliers VALUES ({i}, 'Supplier {i}', '2026-03-{i:02d} 08:00:00')" for i in range(1, 11)),
    *(f"INSERT INTO customers VALUES ({i}, 'c{i}@example.com')" for i in range(1, 4)),
    *(f"INSERT INTO orders VALUES ({i}, {1 + i % 3}, {i}.50, '2026-03-{i:02d} 09:00:00')" for i in range(1, 11)),
    *(f"INSERT INTO order_lines VALUES ({i // 2 + 1}, {i % 2 + 1}, 'SKU-{i}', {i}, 'n', '2026-03-{i // 2 + 1:02d} 10:00:00')"
      for i in range(20)),
    *(f"INSERT INTO items VALUES ({i}, 'Item {i}', {1_767_225_600 + 86_400 * i})" for i in range(1, 11)),
]
SQL_SINCE = {"suppliers": "2026-03-07 08:00:00", "query": "2026-03-07 09:00:00", "order_lines": "2026-03-07 10:00:00",
             "items": str(1_767_225_600 + 86_400 * 7)}  # each from its 7th cursor value on


@pytest.fixture(params=["sqlite", "postgresql"])
def legacy(request, home: Path, tmp_path: Path, monkeypatch) -> str:
    """The legacy database of sql-source.md on each dialect, and INTERLINK_LEGACY__URL pointing at it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'legacy.db'}"
    else:
        url = service_url("postgresql", "docs_sql")
        reset_tables(url, "suppliers", "customers", "orders", "order_lines", "items")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in LEGACY:
            conn.execute(sa.text(statement))
    engine.dispose()
    monkeypatch.setenv("INTERLINK_LEGACY__URL", url)
    return url


@pytest.mark.parametrize("block", SQL_SOURCES, ids=[re.search(r'(table="\w+"|query)', b.code)[1] for b in SQL_SOURCES])
def test_each_sql_source_reads_every_row_once_in_chunks_then_from_the_watermark(block, legacy):
    source = declared(block.code)["SOURCE"]
    keys = list(source.keys)
    chunks = list(source.chunks(Settings.load(), None, 3))  # several chunks, each its own query
    rows = pd.concat([c.records for c in chunks], ignore_index=True)
    expected = 20 if source.table == "order_lines" else 10
    assert len(chunks) > 2 and chunks[-1].last and len(rows) == expected
    assert not rows.duplicated(keys).any()
    if source.columns:
        assert set(rows.columns) == {*source.columns, source.cursor, *keys}
    since = SQL_SINCE[source.table or "query"]
    later = pd.concat([c.records for c in source.chunks(Settings.load(), since, 3)], ignore_index=True)
    assert len(later) == (8 if source.table == "order_lines" else 4)  # the rows at the watermark again, and those after
    if source.cursor_unit:
        assert chunks[-1].watermark == str(1_767_225_600 + 86_400 * 10)  # the number as the database holds it


def test_the_sql_connections_load_from_the_file_and_the_environment(home, tmp_path, monkeypatch):
    path = tmp_path / "connections.yaml"
    path.write_text(SQL_YAML.code)
    for name, value in exports(SQL_EXPORTS).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INTERLINK_CONNECTIONS_FILE", str(path))
    found = declared_connections(path)
    assert {n: found[n]["kind"] for n in ("legacy", "warehouse")} == {"legacy": "sql", "warehouse": "sql"}
    settings = Settings.load()
    assert settings.connection("legacy").url.startswith("postgresql+psycopg://etl:")
    assert "replace-with-the-password" not in settings.connection("legacy").display  # masked when shown
    assert settings.connection("warehouse").url == "sqlite:////srv/interlink/warehouse.db"


def test_the_sql_pipeline_runs_from_the_legacy_database_into_the_warehouse(legacy, project, tmp_path, monkeypatch, capsys):
    project(SQL_MODULE, SQL_YAML.code)
    monkeypatch.setenv("INTERLINK_WAREHOUSE__URL", f"sqlite:///{tmp_path / 'warehouse.db'}")
    outputs = []
    for argv in commands(SQL_RUN):
        capsys.readouterr()
        assert main(argv) == 0, argv
        outputs.append(capsys.readouterr().out)
    assert "read 10, inserted 10, updated 0" in outputs[0]
    assert "read 1, inserted 0, updated 0, unchanged 1" in outputs[1]


def test_sql_source_every_block_is_run():
    assert_all_claimed("sql-source.md")


# ---------------------------------------------------------------------------------------------------------------
# files.md: a drop folder in tmp

FILE_SOURCES = claim("files.md", lambda b: b.lang == "python" and "SOURCE =" in b.code)
[FILES_YAML] = claim("files.md", lambda b: b.lang == "yaml")
[FILES_EXPORTS] = claim("files.md", lambda b: b.code.startswith("export "))
[FILES_WRITE] = claim("files.md", lambda b: b.lang == "python" and "write_csv(" in b.code)
[FILES_MODULE] = claim("files.md", lambda b: b.title is not None and b.lang == "python")
[FILES_RUN] = claim("files.md", lambda b: b.code.startswith("interlink "))


@pytest.fixture
def drop(home: Path, tmp_path: Path, monkeypatch) -> Path:
    """The page's folder connection, declared by its yaml and export blocks, at a tmp folder."""
    folder = tmp_path / "drop"
    folder.mkdir()
    (tmp_path / "connections.yaml").write_text(FILES_YAML.code)
    assert declared_connections(tmp_path / "connections.yaml")["drop"]["kind"] == "folder"
    monkeypatch.setenv("INTERLINK_CONNECTIONS_FILE", str(tmp_path / "connections.yaml"))
    [(name, value)] = exports(FILES_EXPORTS).items()
    monkeypatch.setenv(name, str(folder))
    assert value == "/srv/interlink/drop" and Settings.load().connection("drop").path == folder
    return folder


@pytest.mark.parametrize("block", FILE_SOURCES, ids=[re.search(r'suffix="(\.\w+)"', b.code)[1] for b in FILE_SOURCES])
def test_each_folder_source_reads_a_dropped_file_once_then_archives_it(block, drop):
    declared(FILES_WRITE.code)  # the producer drops its files
    (drop / ".stock-2026-03-02.csv.tmp").write_text("sku,on_hand\nZ-9,1\n")  # still being written: never read
    source = declared(block.code)["SOURCE"]
    with (drop / f"stock-2026-03-01{source.suffix}").open("a") as file:  # a line that holds no record
        file.write("D-4,1,too many\n" if source.suffix == ".csv" else "not json\n")
    settings = Settings.load()
    [chunk] = list(source.chunks(settings, None, 1000))
    assert chunk.records["sku"].tolist() == ["A-1", "B-2", "C-3"] and chunk.watermark == f"stock-2026-03-01{source.suffix}"
    [(line, why)] = chunk.refused  # a dead letter with where it is and why; the rest of the file is delivered
    assert why.startswith("line 5" if source.suffix == ".csv" else "line 4"), why
    assert chunk.records["on_hand"].tolist() == (["5", "0", "12"] if source.suffix == ".csv" else [5, 0, 12])  # CSV stays text
    source.done(settings, chunk)
    assert (drop / "archive" / chunk.file.name).exists() and list(source.chunks(settings, None, 1000)) == []
    declared(FILES_WRITE.code)  # the same names dropped again: moved aside, not read
    assert list(source.chunks(settings, None, 1000)) == []
    assert (drop / "archive" / f"{chunk.file.name}.duplicate").exists()


def test_the_files_pipeline_delivers_each_new_file_once(drop, project, tmp_path, monkeypatch, capsys):
    project(FILES_MODULE, FILES_YAML.code + "warehouse: {kind: sql}\n")
    monkeypatch.setenv("INTERLINK_WAREHOUSE__URL", f"sqlite:///{tmp_path / 'warehouse.db'}")
    declared(FILES_WRITE.code)
    [argv] = commands(FILES_RUN)
    capsys.readouterr()
    assert main(argv) == 0
    assert "read 3, inserted 3, updated 0" in capsys.readouterr().out
    assert main(argv) == 0  # no new file: nothing read
    assert "read 0, inserted 0" in capsys.readouterr().out
    with closing(sqlite3.connect(tmp_path / "warehouse.db")) as conn:
        assert dict(conn.execute("SELECT sku, on_hand FROM stock").fetchall()) == {"A-1": 5, "B-2": 0, "C-3": 12}


def test_files_every_block_is_run():
    assert_all_claimed("files.md")


# ---------------------------------------------------------------------------------------------------------------
# rest-target.md: each target shape against an API that answers that way

TARGETS = claim("rest-target.md", lambda b: b.lang == "python" and "TARGET =" in b.code)
[TARGET_YAML] = claim("rest-target.md", lambda b: b.lang == "yaml")
[TARGET_EXPORTS] = claim("rest-target.md", lambda b: b.code.startswith("export "))


def items_api(route: str, key_field: str, held: dict[str, dict]) -> Starlette:
    """Items at `route` ("/products/{key}"): GET, PATCH of one it holds (404 otherwise), PUT that creates (201) or replaces."""

    async def one(request: Request) -> Response:
        key = request.path_params["key"]
        if request.method == "GET":
            return JSONResponse(held[key]) if key in held else JSONResponse({"error": "not found"}, 404)
        body = await request.json()
        if request.method == "PATCH":
            if key not in held:
                return JSONResponse({"error": "not found"}, 404)
            held[key] = {**held[key], **body}
            return JSONResponse(held[key])
        status = 200 if key in held else 201
        held[key] = {key_field: key, **body}
        return JSONResponse(held[key], status)

    return Starlette(routes=[Route(route, one, methods=["GET", "PATCH", "PUT"])])


def send(connection, target, rows: pd.DataFrame):
    from interlink.tasks.send import send_changed

    return send_changed(connection, Settings.load().state_db, target, rows, "docs_target", "run-1")


def counted(delivery) -> tuple[int, int, int, int]:
    c = delivery.counts
    return c.rows_inserted, c.rows_updated, c.rows_unchanged, len(delivery.failures)


@pytest.mark.parametrize("block", TARGETS, ids=[re.search(r'RestTarget\("(\w+)"', b.code)[1] for b in TARGETS])
def test_each_rest_target_shape_counts_only_what_the_api_confirms(block, home, monkeypatch):
    from interlink.settings import RestConnection
    from tests.directus_like import directus_like

    target = declared(block.code)["TARGET"]
    if target.connection == "cms":
        held: dict = {"9": {"id": 9, "name": "Old Ida", "email": "ida@example.com"}}  # there before Interlink
        app = directus_like({"customers": held})
        rows = pd.DataFrame({"id": [1, 2, 9], "name": ["Ada", "Bo", "Ida"], "email": ["a@x.org", "b@x.org", "i@x.org"]})
        first, second_rows, second = (2, 1, 0, 0), rows.assign(name=["Ada", "Bob", "Ida"]), (0, 1, 2, 0)
    elif target.connection == "shopfront":
        held = {"A-1": {"sku": "A-1", "stock": 0}, "B-2": {"sku": "B-2", "stock": 0}}
        app = items_api("/products/{key}", "sku", held)
        rows = pd.DataFrame({"sku": ["A-1", "B-2", "Z-9"], "stock": [5, 0, 3]})  # Z-9 is not in the shop: no create declared
        first, second_rows, second = (0, 2, 0, 1), rows.assign(stock=[5, 1, 3]), (0, 1, 1, 1)
    else:
        held = {"2": {"id": "2", "name": "Old Bo"}}
        app = items_api("/things/{key}", "id", held)
        rows = pd.DataFrame({"id": [1, 2], "name": ["Ada", "Bo"]})
        first, second_rows, second = (1, 1, 0, 0), rows.assign(name=["Ada", "Bob"]), (0, 1, 1, 0)
    with serve(app) as url:
        connection = RestConnection(base_url=url)
        assert counted(send(connection, target, rows)) == first
        assert counted(send(connection, target, second_rows)) == second
    if target.connection == "shopfront":
        assert set(held) == {"A-1", "B-2"} and held["B-2"]["stock"] == 1
    else:
        assert {k: v["name"] for k, v in held.items() if k in {"1", "2"}} == {"1": "Ada", "2": "Bob"}


def test_the_target_connection_loads_and_delivers_with_its_bearer_token(home, tmp_path, monkeypatch):
    from tests.directus_like import directus_like

    path = tmp_path / "connections.yaml"
    path.write_text(TARGET_YAML.code)
    assert declared_connections(path)["cms"]["rate_per_s"] == 10
    monkeypatch.setenv("INTERLINK_CONNECTIONS_FILE", str(path))
    app = directus_like({"customers": {}})
    seen: list[str | None] = []

    async def bearer_required(scope, receive, send_):
        headers = dict(scope.get("headers") or [])
        seen.append(headers.get(b"authorization", b"").decode())
        await app(scope, receive, send_)

    target = declared(next(b for b in TARGETS if '"cms"' in b.code).code)["TARGET"]
    with serve(bearer_required) as url:
        for name, value in exports(TARGET_EXPORTS).items():
            monkeypatch.setenv(name, value.replace("https://cms.example.com", url))
        delivery = send(Settings.load().connection("cms"), target, pd.DataFrame({"id": [1], "name": ["Ada"], "email": ["a@x.org"]}))
    assert counted(delivery) == (1, 0, 0, 0) and app.state.items["customers"]["1"]["name"] == "Ada"
    assert seen and set(seen) == {"Bearer replace-with-the-token"}


def test_rest_target_every_block_is_run():
    assert_all_claimed("rest-target.md")


# ---------------------------------------------------------------------------------------------------------------
# rabbitmq.md: the real broker on 5672, the demo storefront (rates lookups), the ERP in SQLite

[QUEUE_YAML] = claim("rabbitmq.md", lambda b: b.lang == "yaml")
[QUEUE_EXPORTS] = claim("rabbitmq.md", lambda b: b.code.startswith("export "))
[PUBLISHER] = claim("rabbitmq.md", lambda b: b.lang == "python")
[CONSUME] = claim("rabbitmq.md", lambda b: b.code.startswith("interlink "))
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
ORDERS_TO_ERP_CONNECTIONS = (  # the integration's other connections, as the demo project declares them
    "storefront: {kind: rest, health_path: '/orders?per_page=1'}\nrates: {kind: rest, health_path: '/rates?base=EUR'}\nerp: {kind: sql}\n"
)


@pytest.fixture
def broker_queue(home: Path) -> Iterator[str]:
    """A fresh queue name on the real broker, deleted afterwards; skips (or fails under REQUIRE_SERVICES=1) without one."""
    import pika

    name = f"interlink-docs-{uuid.uuid4().hex[:12]}"
    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except pika.exceptions.AMQPConnectionError as exc:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL}: {exc!r}")
        pytest.skip(f"RabbitMQ is not reachable at {AMQP_URL}")
    yield name
    connection.channel().queue_delete(name)
    connection.close()


def test_published_orders_are_consumed_into_the_erp_once(broker_queue, storefront, storefront_db, tmp_path, monkeypatch, capsys):
    from tests.test_order_events import clean_orders, delivered

    path = tmp_path / "connections.yaml"
    path.write_text(QUEUE_YAML.code + ORDERS_TO_ERP_CONNECTIONS)
    assert declared_connections(path)["order_events"]["kind"] == "queue"
    monkeypatch.setenv("INTERLINK_CONNECTIONS_FILE", str(path))
    [(name, value)] = exports(QUEUE_EXPORTS).items()
    local = re.sub(r"^amqp://[^/]+", AMQP_URL.split("/%2F")[0], value)  # the local broker, the page's vhost and heartbeat
    assert local.endswith("/%2F?heartbeat=60")
    monkeypatch.setenv(name, local)
    erp = f"sqlite:///{tmp_path / 'erp.db'}"
    monkeypatch.setenv("INTERLINK_ERP__URL", erp)

    orders = clean_orders(storefront_db, 12)
    publish = declared(PUBLISHER.code)["publish"]
    publish(local, broker_queue, orders)
    publish(local, broker_queue, orders[:4])  # published twice: changes nothing
    [argv] = commands(CONSUME)
    with storefront():
        capsys.readouterr()
        assert main([*argv, "--queue", broker_queue, "--idle-s", "0.5"]) == 0
    assert "order events: read 16, inserted 12, updated 0, quarantined 0" in capsys.readouterr().out
    assert delivered(erp) == {order["id"] for order in orders}


def test_rabbitmq_every_block_is_run():
    assert_all_claimed("rabbitmq.md")


# ---------------------------------------------------------------------------------------------------------------
# webhooks.md: the receiver as `interlink webhooks serve` builds it, triggering a deployment on the test's Prefect server

[WEBHOOK_EXPORTS] = claim("webhooks.md", lambda b: b.code.startswith("export "))
[WEBHOOK_SERVE] = claim("webhooks.md", lambda b: "webhooks serve" in b.code)
[SENDER] = claim("webhooks.md", lambda b: b.lang == "python")
[RERUN] = claim("webhooks.md", lambda b: "webhooks rerun" in b.code)


def test_the_receiver_command_and_its_options_parse(capsys):
    """`interlink webhooks serve` runs until stopped and needs a Prefect server of its own: its command line is
    checked here, the app it serves in the next test."""
    [argv] = commands(WEBHOOK_SERVE)
    capsys.readouterr()
    assert main([*argv, "--help"]) == 0
    shown = capsys.readouterr().out
    assert all(option in shown for option in argv if option.startswith("--"))


def test_a_signed_event_triggers_a_run_of_the_deployment_and_is_rerun_as_a_new_one(home, monkeypatch, capsys):
    from interlink.webhooks import from_settings
    from tests.test_webhooks import deploy, settled

    for name, value in exports(WEBHOOK_EXPORTS).items():
        monkeypatch.setenv(name, value)
    settings = Settings.load()
    assert list(settings.webhook_secrets) == ["orders_to_erp"]
    deploy("orders_to_erp")
    app = from_settings(settings)  # as `interlink webhooks serve` makes it: the settings' secrets, the Prefect trigger
    with serve(app) as url, app.state.dispatcher:
        sent = declared(SENDER.code.replace("http://127.0.0.1:8000", url))
        assert (sent["answer"].status_code, sent["answer"].json()) == (202, {"event": 1, "status": "received"})
        [row] = settled(settings.state_db)
    assert (row.status, row.error) == ("triggered", None) and row.flow_run_id
    [argv] = commands(RERUN)
    capsys.readouterr()
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("event 1: triggered ") and row.flow_run_id not in shown  # a new run


def test_webhooks_every_block_is_run():
    assert_all_claimed("webhooks.md")
