"""Pagination strategies, each against a small mock API, driven the way `RestClient` drives them."""

import json
from collections.abc import Callable

import httpx
import pytest

from connectors.errors import FatalError, PaginationLoop
from connectors.pagination import (
    PAGINATORS,
    CursorPaginator,
    LinkHeaderPaginator,
    NextUrlPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    PageRequest,
    Paginator,
    from_config,
)

BASE = "https://api.test/v1"
RECORDS = list(range(1, 9))  # three pages of three: [1, 2, 3], [4, 5, 6], [7, 8]
SIZE = 3
Handler = Callable[[httpx.Request], httpx.Response]


def page(start: int, **extra) -> httpx.Response:
    return httpx.Response(200, json={"data": RECORDS[start : start + SIZE], **extra})


def page_number_api(request: httpx.Request) -> httpx.Response:
    number = int(request.url.params["page"])
    return page((number - 1) * SIZE, meta={"total_pages": 3})


def offset_api(request: httpx.Request) -> httpx.Response:
    assert request.url.params["limit"] == str(SIZE)
    return page(int(request.url.params["offset"]), total=len(RECORDS))


def cursor_api(request: httpx.Request) -> httpx.Response:
    start = int(request.url.params.get("cursor", 0))
    return page(start, paging={"next": str(start + SIZE) if start + SIZE < len(RECORDS) else None})


def next_url_api(request: httpx.Request) -> httpx.Response:
    start = int(request.url.params.get("after", 0))
    return page(start, next=f"/v1/items?after={start + SIZE}" if start + SIZE < len(RECORDS) else None)


def link_header_api(request: httpx.Request) -> httpx.Response:
    start = int(request.url.params.get("after", 0))
    response = page(start)
    if start + SIZE < len(RECORDS):
        response.headers["Link"] = f'<{BASE}/items?after={start + SIZE}>; rel="next", <{BASE}/items>; rel="first"'
    return response


CASES = {
    "page_number": ({"type": "page_number", "total_pages_path": "meta.total_pages"}, page_number_api),
    "offset": ({"type": "offset", "limit": SIZE}, offset_api),
    "cursor": ({"type": "cursor", "cursor_path": "paging.next"}, cursor_api),
    "next_url": ({"type": "next_url"}, next_url_api),
    "link_header": ({"type": "link_header"}, link_header_api),
}


class Run:
    """A paginated read, as `RestClient` drives it; it records every request sent."""

    def __init__(self, paginator: Paginator, handler: Handler):
        self.paginator = paginator
        self.requests: list[httpx.Request] = []
        self._transport = httpx.MockTransport(lambda request: self.requests.append(request) or handler(request))

    def read(self, pages: int = 20, params: dict | None = None) -> list[int]:
        """The records of at most `pages` pages."""
        records: list[int] = []
        request = PageRequest("/items", dict(params or {}))
        self.paginator.init_request(request)
        with httpx.Client(base_url=BASE, transport=self._transport) as client:
            for _ in range(pages):
                response = client.get(request.url, params=request.params or None)  # `{}` would drop the URL's query
                body = response.json()
                page = body["data"]
                self.paginator.update_state(response, body, page)
                records += page
                if not self.paginator.has_next_page:
                    break
                self.paginator.update_request(request)
        return records


@pytest.mark.parametrize("config, handler", CASES.values(), ids=CASES)
def test_every_record_once_then_stop(config, handler):
    run = Run(from_config(config), handler)
    assert run.read() == RECORDS
    assert len(run.requests) == 3 and not run.paginator.has_next_page and run.paginator.checkpoint() is None


@pytest.mark.parametrize("config, handler", CASES.values(), ids=CASES)
def test_a_checkpoint_after_page_two_resumes_at_page_three(config, handler):
    first = Run(from_config(config), handler)
    assert first.read(pages=2) == RECORDS[:6]
    checkpoint = json.loads(json.dumps(first.paginator.checkpoint()))

    resumed = from_config(config)
    resumed.resume(checkpoint)
    second = Run(resumed, handler)
    assert second.read() == RECORDS[6:]
    assert len(second.requests) == 1


@pytest.mark.parametrize(
    "paginator, requests",
    [
        (PageNumberPaginator(total_pages_path="meta.total_pages", stop_after_empty_page=False), 3),
        (PageNumberPaginator(), 4),  # the fourth page is empty
        (PageNumberPaginator(stop_after_empty_page=False, page_size=SIZE), 3),  # the third page is short
    ],
    ids=["total pages", "empty page", "short page"],
)
def test_page_numbers_stop_at_each_stop_condition(paginator, requests):
    run = Run(paginator, page_number_api)
    assert run.read() == RECORDS and len(run.requests) == requests


def test_page_numbers_from_zero_and_other_parameters_are_kept():
    def zero_based_api(request: httpx.Request) -> httpx.Response:
        assert request.url.params["per_page"] == str(SIZE)
        return page(int(request.url.params["p"]) * SIZE, pages=3)

    run = Run(PageNumberPaginator("p", start_page=0, total_pages_path="pages", stop_after_empty_page=False), zero_based_api)
    params = {"per_page": SIZE}
    assert run.read(params=params) == RECORDS and len(run.requests) == 3
    assert params == {"per_page": SIZE}  # the caller's parameters are not changed


@pytest.mark.parametrize(
    "paginator, records, requests",
    [
        (OffsetPaginator(SIZE, total_path="total", stop_after_empty_page=False), RECORDS, 3),
        (OffsetPaginator(SIZE), RECORDS, 3),  # the third page is short
        (OffsetPaginator(SIZE), RECORDS[:6], 3),  # the third page is empty
    ],
    ids=["total", "short page", "empty page"],
)
def test_offsets_stop_at_each_stop_condition(paginator, records, requests):
    def api(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        return httpx.Response(200, json={"data": records[offset : offset + limit], "total": len(records)})

    run = Run(paginator, api)
    assert run.read() == records and len(run.requests) == requests


def test_a_missing_total_is_a_broken_protocol():
    run = Run(PageNumberPaginator(total_pages_path="meta.pages"), page_number_api)
    with pytest.raises(FatalError, match="no integer at 'meta.pages'"):
        run.read()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PageNumberPaginator(stop_after_empty_page=False), "never stops"),
        (lambda: OffsetPaginator(100, stop_after_empty_page=False), "never stops"),
        (lambda: OffsetPaginator(0), "positive limit"),
        (lambda: CursorPaginator(cursor_path=""), "cursor_path"),
        (lambda: NextUrlPaginator(next_url_path=""), "next_url_path"),
    ],
)
def test_a_paginator_without_a_stop_condition_is_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "paginator, answers",
    [
        (CursorPaginator(), [{"next_cursor": "a"}, {"next_cursor": "b"}, {"next_cursor": "a"}]),
        (NextUrlPaginator(), [{"next": "/v1/items?p=2"}, {"next": f"{BASE}/items?p=2"}]),  # one URL, spelt two ways
        (LinkHeaderPaginator(), [{}, {}]),  # every page links to itself
    ],
    ids=["cursor", "next_url", "link_header"],
)
def test_a_repeated_reference_is_a_loop(paginator, answers):
    def looping_api(request: httpx.Request) -> httpx.Response:
        body = answers[len(run.requests) - 1]
        return httpx.Response(200, json={"data": [1], **body}, headers={"Link": f'<{request.url}>; rel="next"'})

    run = Run(paginator, looping_api)
    with pytest.raises(PaginationLoop, match=f"the source repeated .* after {len(answers)} pages"):
        run.read(pages=10)
    assert len(run.requests) == len(answers)


def test_the_loop_names_the_cursor():
    run = Run(CursorPaginator(), lambda request: httpx.Response(200, json={"data": [], "next_cursor": "c7"}))
    with pytest.raises(PaginationLoop, match="repeated cursor 'c7' after 2 pages"):
        run.read()


def test_a_resumed_cursor_counts_as_seen():
    paginator = CursorPaginator()
    paginator.resume("c7")
    run = Run(paginator, lambda request: httpx.Response(200, json={"data": [], "next_cursor": "c7"}))
    with pytest.raises(PaginationLoop):
        run.read()
    assert run.requests[0].url.params["cursor"] == "c7"


@pytest.mark.parametrize("next_value", [None, ""], ids=["null", "empty"])
def test_a_null_or_empty_reference_ends_the_run(next_value):
    run = Run(CursorPaginator(), lambda request: httpx.Response(200, json={"data": [1], "next_cursor": next_value}))
    assert run.read() == [1] and len(run.requests) == 1


def test_a_next_url_carries_its_own_query_and_replaces_the_parameters():
    def api(request: httpx.Request) -> httpx.Response:
        if "after" in request.url.params:
            return httpx.Response(200, json={"data": [2], "next": None})
        return httpx.Response(200, json={"data": [1], "next": "items?after=1&since=2026"})  # relative to the page

    run = Run(NextUrlPaginator(), api)
    assert run.read(params={"since": "2026"}) == [1, 2]
    assert [str(r.url) for r in run.requests] == [f"{BASE}/items?since=2026", f"{BASE}/items?after=1&since=2026"]


def test_from_config_builds_each_type_and_rejects_unknown_ones():
    assert {name: type(from_config(config)) for name, (config, _) in CASES.items()} == PAGINATORS
    with pytest.raises(
        ValueError, match="unknown paginator type 'seek'; known: page_number, offset, cursor, next_url, link_header"
    ):
        from_config({"type": "seek"})
    with pytest.raises(ValueError, match="unknown paginator type None"):
        from_config({"limit": 10})


@pytest.mark.parametrize("config, handler", CASES.values(), ids=CASES)
def test_two_runs_from_one_config_share_no_state(config, handler):
    before = dict(config)
    first, second = Run(from_config(config), handler), Run(from_config(config), handler)
    assert first.read() == RECORDS and second.read() == RECORDS
    assert [str(r.url) for r in first.requests] == [str(r.url) for r in second.requests]
    assert config == before
