"""Pagination against json-server 0.17 (npm), a REST server we did not write: `Link` headers with first, prev,
next and last; `X-Total-Count`; top-level arrays. `make tools` installs it under .interlink/tools; without it
these tests skip, or fail under REQUIRE_SERVICES=1."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from interlink.connectors.errors import FatalError
from interlink.connectors.pagination import from_config
from interlink.connectors.rest import RestClient
from interlink.tasks.ingest import RestSource, fetch_chunk

from interlink.settings import RestConnection
from tests.json_server import json_server as start_json_server

TOTAL = 2503  # 26 pages of 100, the last one short
LINK = {"type": "link_header", "page_size_param": "_limit", "page_size": 100}


def record(i: int) -> dict:
    """Records with hostile values: nulls, unicode, long strings, nested objects, query-like text."""
    return {
        "id": i,
        "name": [f"Kund {i}", "Zoë Ångström", "مرحبا", "名前 🎉", None, "a&_page=9&b=\"'<>", "x" * 5000][i % 7],
        "nested": {"tags": ["a", None, {"deep": [i, "ü"]}], "empty": {}} if i % 3 else None,
        "updated_at": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
    }


RECORDS = [record(i) for i in range(1, TOTAL + 1)]


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """json-server serving the records and a singular `profile` object; its base URL."""
    data = {"records": RECORDS, "profile": {"owner": "ada@example.com", "plan": "pro"}}
    with start_json_server(data, tmp_path_factory.mktemp("json-server")) as url:
        yield url


def read(url: str, path: str, config: dict, params: dict, concurrency: int = 1) -> tuple[list[dict], list[int]]:
    """Every page's records, and the sizes of the batches of pages the client asked for at once."""
    paginator = from_config(config)
    batches: list[int] = []
    if hasattr(paginator, "ahead"):
        ahead = paginator.ahead
        paginator.ahead = lambda request, pages: batches.append(len(found := ahead(request, pages))) or found
    with RestClient("jsonserver", url) as rest:
        pages = list(rest.paginate(path, paginator, params, concurrency=concurrency))
    assert paginator.checkpoint() is None
    return pages, batches


def test_json_server_pages_by_link_header_and_counts_in_x_total_count(json_server):
    response = httpx.get(f"{json_server}/records", params={"_page": 1, "_limit": 100})
    assert set(response.links) == {"first", "next", "last"} and response.headers["X-Total-Count"] == str(TOTAL)
    assert response.json() == RECORDS[:100]  # the hostile values survive the server's round trip


@pytest.mark.parametrize("concurrency, batches", [(1, []), (4, [4] * 6 + [1])], ids=["sequential", "4 at once"])
def test_link_header_pagination_reads_every_record_exactly_once(json_server, concurrency, batches):
    pages, asked = read(json_server, "/records", LINK, {"_page": 1}, concurrency)
    assert [r for page in pages for r in page] == RECORDS  # every record, once, in order, without records_path
    assert len(pages) == 26
    assert asked == batches  # after the first page: pages 2-5, ..., 22-25, then 26 alone, the last linked page


@pytest.mark.parametrize("concurrency", [1, 4])
def test_offset_pagination_stops_at_x_total_count(json_server, concurrency):
    config = {
        "type": "offset", "limit": 100, "offset_param": "_start", "limit_param": "_limit",
        "total_header": "X-Total-Count", "stop_after_empty_page": False,  # the header is the only stop condition
    }
    pages, asked = read(json_server, "/records", config, {}, concurrency)
    assert [r for page in pages for r in page] == RECORDS and len(pages) == 26  # no page past the total
    assert all(size <= 4 for size in asked) and (concurrency == 1 or max(asked) == 4)


def test_page_number_pagination_stops_at_x_total_count(json_server):
    config = {
        "type": "page_number", "page_param": "_page", "page_size": 100,
        "total_header": "X-Total-Count", "stop_after_empty_page": False,
    }
    pages, _ = read(json_server, "/records", config, {"_limit": 100}, concurrency=3)
    assert [r for page in pages for r in page] == RECORDS and len(pages) == 26


def test_an_object_where_records_were_expected_names_its_keys_and_the_fix_but_no_value(json_server):
    with pytest.raises(FatalError) as raised:
        read(json_server, "/profile", {"type": "cursor"}, {})
    message = str(raised.value)
    assert message.startswith("jsonserver /profile: no records_path is set and the answer is an object with keys ['owner', 'plan']")
    assert message.endswith("set records_path=... on the RestSource to the dotted path of the list of records")
    assert "ada@example.com" not in message


def test_a_rest_source_reads_top_level_arrays_in_chunks_that_resume_where_the_last_one_stopped(json_server):
    source = RestSource(
        "jsonserver", "/records", "updated_at", "updated_since", paginator=LINK, params={"_page": 1}, concurrent_pages=4,
    )
    connection = RestConnection(base_url=json_server)
    ids, position, chunks = [], None, 0
    while True:
        chunk, position = fetch_chunk(source, connection, None, position, 700)
        ids += chunk.records["id"].tolist()
        chunks += 1
        if position is None:
            break
        assert json.loads(json.dumps(position)) == position  # a checkpoint Prefect can store
    assert ids == [r["id"] for r in RECORDS] and chunks == 4  # 700 rows a chunk: pages of 100, 7 to a chunk, then 5
    assert chunk.last


@pytest.mark.parametrize(
    ("paginator", "loses_a_record"),
    [
        ({"type": "page_number", "page_param": "_page", "page_size": 10}, True),
        ({"type": "keyset", "key_field": "updated_at", "key_param": "updated_at_gte", "page_size": 10}, False),
    ],
)
def test_a_record_changed_during_the_read_shifts_numbered_pages_but_not_keyset_pages(tmp_path, paginator, loses_a_record):
    items = [{"id": i, "updated_at": f"2026-01-01T00:{i:02d}:00Z"} for i in range(45)]
    params = {"_sort": "updated_at,id", "_order": "asc,asc", "_limit": 10, "updated_at_gte": "2026-01-01T00:00:00Z"}
    seen: list[int] = []
    with start_json_server({"items": items}, tmp_path) as url, httpx.Client(base_url=url) as admin:
        with RestClient.connect("items", RestConnection(base_url=url)) as client:
            for number, page in enumerate(client.paginate("/items", from_config(paginator), params)):
                seen += [r["id"] for r in page]
                if number == 0:  # the first record changes while the rest is read: it moves to the end
                    admin.patch("/items/0", json={"updated_at": "2026-01-02T00:00:00Z"}).raise_for_status()
    missing = {r["id"] for r in items} - set(seen)
    assert (missing == {10}) if loses_a_record else not missing  # page 2 now starts one record later
