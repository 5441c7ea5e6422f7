"""Pagination strategies, each against a small mock API, driven the way `RestClient` drives them."""

import json
import logging
import re
from collections.abc import Callable

import httpx
import pytest
from interlink.connectors.errors import ConfigError, FatalError, PaginationLoop
from interlink.connectors.pagination import (
    PAGINATORS,
    Checked,
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
    "link_header": ({"type": "link_header", "page_size_param": "per_page", "page_size": SIZE}, link_header_api),
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
        (LinkHeaderPaginator("per_page"), [{}, {}]),  # every page links to itself
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
    built = {name: type(from_config(config)) for name, (config, _) in CASES.items()}
    built["keyset"] = type(from_config({"type": "keyset", "key_field": "k", "key_param": "since", "page_size": 3}))
    built["auto"] = type(from_config({"type": "auto"}))
    assert built == PAGINATORS
    with pytest.raises(
        ValueError, match="unknown paginator type 'seek'; known: page_number, offset, cursor, next_url, link_header, keyset, auto"
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


# Totals from a response header, such as X-Total-Count -------------------------------------------------------


def counted_api(total: int, header: str = "X-Total-Count") -> Handler:
    """Records 0..total-1 by offset/limit or page/per_page, the total records only in a header."""

    def api(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        if "page" in params:
            start, size = (int(params["page"]) - 1) * int(params["per_page"]), int(params["per_page"])
        else:
            start, size = int(params["offset"]), int(params["limit"])
        return httpx.Response(200, json={"data": list(range(start, min(start + size, total)))}, headers={header: str(total)})

    return api


@pytest.mark.parametrize("total, requests", [(9, 3), (10, 4)], ids=["full last page", "short last page"])
def test_offsets_stop_at_the_total_in_a_header(total, requests):
    run = Run(OffsetPaginator(SIZE, total_header="X-Total-Count", stop_after_empty_page=False), counted_api(total))
    assert run.read() == list(range(total)) and len(run.requests) == requests  # no empty page asked for


@pytest.mark.parametrize("total, requests", [(9, 3), (10, 4)], ids=["full last page", "short last page"])
def test_page_numbers_stop_at_the_total_records_in_a_header(total, requests):
    paginator = PageNumberPaginator(page_size=SIZE, total_header="X-Total-Count", stop_after_empty_page=False)
    run = Run(paginator, counted_api(total))
    assert run.read(params={"per_page": SIZE}) == list(range(total)) and len(run.requests) == requests


def test_pages_ahead_stop_at_the_total_in_a_header():
    paginator = OffsetPaginator(SIZE, total_header="X-Total-Count")
    request = PageRequest("/items", {})
    paginator.init_request(request)
    assert [r.params["offset"] for r in paginator.ahead(request, 5)] == [0, 3, 6, 9, 12]  # the total is not known yet
    first = httpx.Response(200, headers={"X-Total-Count": "8"}, request=httpx.Request("GET", f"{BASE}/items"))
    paginator.update_state(first, {}, [0, 1, 2])
    paginator.update_request(request)
    assert [r.params["offset"] for r in paginator.ahead(request, 5)] == [3, 6]


def test_a_missing_total_header_is_a_broken_protocol_that_names_the_setting():
    run = Run(OffsetPaginator(SIZE, total_header="X-Total"), counted_api(9))
    with pytest.raises(FatalError, match="no integer X-Total header; fix total_header"):
        run.read()


# Configuration errors name the setting and the fix ------------------------------------------------------------


@pytest.mark.parametrize(
    "config, message",
    [
        ({"type": "offset", "limit": 10, "total_path": "total", "total_header": "X-Total-Count"}, "both total_path and total_header"),
        ({"type": "page_number", "total_header": "X-Total-Count"}, "counts records, not pages: set page_size"),
        ({"type": "page_number", "page_size": 0}, "positive page_size"),
        ({"type": "link_header"}, "missing a required argument: 'page_size_param'; its settings: page_size_param, page_size, rel"),
        ({"type": "link_header", "page_size_param": None, "page_size": 50}, "never sent without page_size_param"),
        ({"type": "link_header", "page_size_param": "", "page_size": 50}, "page_size_param is empty"),
        ({"type": "link_header", "page_size_param": "per_page", "page_size": 0}, "positive page_size"),
        ({"type": "offset", "limit": 10, "per_page": 10}, "unexpected keyword argument 'per_page'; its settings: limit, offset_param"),
    ],
)
def test_an_inconsistent_config_is_a_config_error_naming_the_setting(config, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_config(config)


# Link headers: an explicit page size, and the pages ahead when the last page is linked -----------------------


def link_api(total: int, page_param: str = "page", step: int = 1, first: int = 1, last: bool = True) -> Handler:
    """`total` records, `per_page` a page, numbered by `page_param` from `first` in steps of `step` (an offset
    when `step` is the page size); Link headers give next and, with `last`, the last page."""

    def api(request: httpx.Request) -> httpx.Response:
        size = int(request.url.params["per_page"])
        value = int(request.url.params.get(page_param, first))
        start = (value - first) // step * size
        pages = -(-total // size)
        links = []
        if start + size < total:
            links.append(f'<{request.url.copy_set_param(page_param, value + step)}>; rel="next"')
        if last:
            links.append(f'<{request.url.copy_set_param(page_param, first + (pages - 1) * step)}>; rel="last"')
        return httpx.Response(200, json={"data": list(range(start, min(start + size, total)))}, headers={"Link": ", ".join(links)})

    return api


def read_ahead(paginator: LinkHeaderPaginator, api: Handler, pages: int, params: dict | None = None) -> tuple[list, list]:
    """Read as `RestClient.paginate(concurrency=pages)` does, sequentially: the records and the batch sizes."""
    request = PageRequest("/items", dict(params or {}))
    paginator.init_request(request)
    records, batches, batch = [], [], [request]
    with httpx.Client(base_url=BASE, transport=httpx.MockTransport(api)) as client:
        for _ in range(50):
            batches.append(len(batch))
            for each in batch:
                response = client.get(each.url, params=each.params or None)
                paginator.update_state(response, response.json(), response.json()["data"])
                records += response.json()["data"]
                if not paginator.has_next_page:
                    return records, batches
            paginator.update_request(request)
            batch = paginator.ahead(request, pages)
    raise AssertionError("no last page after 50 batches")


def test_the_link_paginator_asks_for_its_page_size_on_the_first_request_only():
    run = Run(LinkHeaderPaginator("per_page", 4), link_api(10))
    assert run.read() == list(range(10))
    assert [dict(r.url.params) for r in run.requests] == [
        {"per_page": "4"}, {"per_page": "4", "page": "2"}, {"per_page": "4", "page": "3"}  # later pages: the links' own query
    ]
    assert Run(LinkHeaderPaginator("per_page"), link_api(250)).read() == list(range(250))  # 100 a page by default


def test_a_link_paginator_for_a_server_that_pages_by_itself_sends_no_page_size():
    run = Run(LinkHeaderPaginator(page_size_param=None), link_api(6))
    assert run.read(params={"per_page": 3}) == list(range(6))
    assert dict(run.requests[0].url.params) == {"per_page": "3"}  # only the caller's own parameters


@pytest.mark.parametrize(
    "api, params, batches",
    [
        (link_api(23), {"page": 1}, [1, 4, 4, 3]),  # pages 1 | 2-5 | 6-9 | 10-12: none past the last
        (link_api(23), {}, [1, 1, 4, 4, 2]),  # the first request names no page: the step is known from the second
        (link_api(23, "offset", step=2, first=0), {"offset": 0}, [1, 4, 4, 3]),  # offsets, in steps of the page size
    ],
    ids=["page numbers", "first page unnumbered", "offsets"],
)
def test_link_pages_up_to_the_last_are_handed_out_ahead_in_order(api, params, batches):
    records, seen = read_ahead(LinkHeaderPaginator("per_page", 2), api, 4, params)
    assert records == list(range(23)) and seen == batches


def test_without_a_last_link_the_pages_are_read_one_at_a_time_and_it_is_said_once(caplog):
    caplog.set_level(logging.DEBUG, logger="interlink.connectors.pagination")
    records, batches = read_ahead(LinkHeaderPaginator("per_page", 2), link_api(9, last=False), 4, {"page": 1})
    assert records == list(range(9)) and batches == [1, 1, 1, 1, 1]
    said = [r.getMessage() for r in caplog.records if "one at a time" in r.getMessage()]
    assert said == ['LinkHeaderPaginator: reading pages one at a time: the server gives no rel="last" link']


def test_link_pages_that_do_not_follow_their_links_fail_instead_of_losing_records():
    def skipping_api(request: httpx.Request) -> httpx.Response:  # 1 links to 2, but 2 to 4, skipping 3
        page = int(request.url.params.get("page", 1))
        following = page + 1 if page == 1 else page + 2
        links = f'<{BASE}/items?page={following}>; rel="next", <{BASE}/items?page=9>; rel="last"'
        return httpx.Response(200, json={"data": [page]}, headers={"Link": links if page < 9 else ""})

    with pytest.raises(FatalError, match=r"a page fetched ahead \(page=3\) is not the one the page before linked to \(page=4\)"):
        read_ahead(LinkHeaderPaginator("per_page"), skipping_api, 4, {"page": 1})


def test_a_full_first_page_without_a_link_header_fails_instead_of_losing_the_rest():
    def unpaged_api(request: httpx.Request) -> httpx.Response:  # like json-server given _limit without _page
        return httpx.Response(200, json={"data": list(range(int(request.url.params["_limit"])))})

    with pytest.raises(FatalError, match=r"first page of /v1/items is full \(5 records\) but has no Link header.*_page=1"):
        Run(LinkHeaderPaginator("_limit", 5), unpaged_api).read()


def test_a_short_first_page_without_a_link_header_is_the_only_page():
    def small_api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [1, 2, 3]})

    assert Run(LinkHeaderPaginator("_limit", 5), small_api).read() == [1, 2, 3]


def keyset_api(keys: list[int]) -> Handler:
    """Records `{"k": …}` in key order, from `since` on (inclusive), `per_page` at a time."""

    def answer(request: httpx.Request) -> httpx.Response:
        since = int(request.url.params.get("since", 0))
        chosen = [{"k": k} for k in keys if k >= since][: int(request.url.params["per_page"])]
        return httpx.Response(200, json={"data": chosen})

    return answer


def test_keyset_pages_ask_from_the_last_key_read_and_stop_at_a_short_page():
    config = {"type": "keyset", "key_field": "k", "key_param": "since", "page_size": 3, "page_size_param": "per_page"}
    paginator = from_config(config)
    run = Run(paginator, keyset_api([1, 2, 3, 4, 5, 5, 6, 7]))
    assert [r["k"] for r in run.read()] == [1, 2, 3, 3, 4, 5, 5, 5, 6, 6, 7]  # each boundary asked for again
    assert [r.url.params.get("since") for r in run.requests] == [None, "3", "5", "6"]
    assert paginator.unseen([{"k": 6}, {"k": 7}]) == [{"k": 7}]  # what the client yields of the last page


def test_a_full_keyset_page_of_one_key_cannot_advance():
    config = {"type": "keyset", "key_field": "k", "key_param": "since", "page_size": 3, "page_size_param": "per_page"}
    with pytest.raises(PaginationLoop, match="all at k 2: keyset reads cannot advance; raise page_size"):
        Run(from_config(config), keyset_api([1, 2, 2, 2, 2, 3])).read()


# No paginator declared: found from the first answer, or the read stops at once naming the one to declare


@pytest.mark.parametrize("handler", [next_url_api, link_header_api], ids=["next URL in the body", "Link header"])
def test_an_undeclared_paginator_is_found_from_the_first_answers_link_to_the_next_page(handler):
    run = Run(Checked({"type": "auto"}), handler)
    assert run.read() == RECORDS and len(run.requests) == 3


def test_a_found_paginator_is_part_of_the_checkpoint_so_a_later_chunk_follows_it():
    first = Run(Checked({"type": "auto"}), next_url_api)
    assert first.read(pages=2) == RECORDS[:6]
    checkpoint = json.loads(json.dumps(first.paginator.checkpoint()))
    assert checkpoint["at"] == {"paginator": {"type": "next_url", "next_url_path": "next"}, "at": f"{BASE}/items?after=6"}
    resumed = Checked({"type": "auto"})
    resumed.resume(checkpoint)
    assert Run(resumed, next_url_api).read() == [7, 8]


def test_one_answer_that_shows_no_more_pages_is_the_only_page():
    run = Run(Checked({"type": "auto"}), lambda request: httpx.Response(200, json={"data": [1, 2], "next": None, "total": 2}))
    assert run.read() == [1, 2] and len(run.requests) == 1 and run.paginator.checkpoint() is None


def limited_api(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"data": RECORDS[: int(request.url.params["limit"])]})


@pytest.mark.parametrize(
    "handler, params, shows, declare",
    [
        (cursor_api, {}, "a next-page token at 'paging.next'",
         '{"type": "cursor", "cursor_path": "paging.next", "cursor_param": "<the query parameter that takes it>"}'),
        (lambda request: page(0, has_more=True), {}, "has_more: true", '{"type": "cursor", "cursor_path": "<where'),
        (lambda request: page(0, total=len(RECORDS)), {}, "a total of 8 at 'total' but 3 records", '{"type": "offset", "limit": 3, "total_path": "total"}'),
        (lambda request: httpx.Response(200, json={"data": [1, 2]}, headers={"X-Total-Count": "8"}), {},
         "a total of 8 in its X-Total-Count header but 2 records", '{"type": "offset", "limit": 2, "total_header": "X-Total-Count"}'),
        (limited_api, {"limit": 3}, "3 records, as many as limit=3 asks for", '{"type": "offset", "limit": 3, "limit_param": "limit"}'),
    ],
    ids=["token", "has_more", "total in the body", "total in a header", "a full page"],
)
def test_an_answer_that_shows_more_pages_it_does_not_link_stops_the_read_naming_the_paginator_to_declare(handler, params, shows, declare):
    run = Run(Checked({"type": "auto"}), handler)
    with pytest.raises(FatalError) as raised:
        run.read(params=params)
    message = str(raised.value)
    assert message.startswith(f"the first answer holds {shows}, but no paginator is declared")
    assert f"declare it on the RestSource, e.g. paginator={declare}" in message and "\n" not in message
    assert len(run.requests) == 1


# Whatever the paginator: a next page it does not follow, or fewer records than the stated total, fail the read


@pytest.mark.parametrize("config, handler", CASES.values(), ids=CASES)
def test_each_paginator_against_the_api_it_follows_reads_to_the_end_without_complaint(config, handler):
    run = Run(Checked(config), handler)
    assert run.read() == RECORDS and run.paginator.checkpoint() is None


def links_next_api(request: httpx.Request) -> httpx.Response:
    return page(0, links={"next": f"{BASE}/items?page[offset]=3"})


@pytest.mark.parametrize(
    "handler, has, declare",
    [
        (link_header_api, 'a Link header with rel="next"', '{"type": "link_header", "page_size_param": None}'),
        (next_url_api, "a next-page URL at 'next'", '{"type": "next_url", "next_url_path": "next"}'),
        (links_next_api, "a next-page URL at 'links.next'", '{"type": "next_url", "next_url_path": "links.next"}'),
        (cursor_api, "a next-page token at 'paging.next'", '{"type": "cursor", "cursor_path": "paging.next", "cursor_param": '),
        (lambda request: page(0, next_url="https://api.test/v1/items?_next=3", next="3"), "a next-page URL at 'next_url'",
         '{"type": "next_url", "next_url_path": "next_url"}'),
    ],
    ids=["Link header", "next", "links.next", "paging.next", "Datasette's next_url and next"],
)
def test_a_next_page_the_declared_paginator_does_not_follow_fails_the_read_naming_the_one_that_does(handler, has, declare):
    run = Run(Checked({"type": "cursor"}), handler)  # it looks for `next_cursor`, which none of these answers has
    with pytest.raises(FatalError) as raised:
        run.read()
    assert str(raised.value).startswith(f'paginator={{"type": "cursor"}} sees no next page, but the answer has {has}: ')
    assert f"e.g. paginator={declare}" in str(raised.value)


def test_a_full_last_page_without_a_next_page_is_a_normal_end():
    def api(request: httpx.Request) -> httpx.Response:  # six records in two full pages, then nothing more said
        return httpx.Response(200, json={"data": RECORDS[:6][int(request.url.params["offset"]):][:SIZE], "next": None})

    run = Run(Checked({"type": "offset", "limit": SIZE, "stop_after_empty_page": True}), api)
    assert run.read() == RECORDS[:6] and len(run.requests) == 3  # the third page is empty


def capped_api(request: httpx.Request) -> httpx.Response:
    """Answers at most two records a page, whatever the limit asked, and states the total as Directus and json-server do."""
    start = int(request.url.params["offset"])
    return httpx.Response(200, json={"data": RECORDS[start : start + 2], "meta": {"filter_count": 8}}, headers={"X-Total-Count": "8"})


@pytest.mark.parametrize("total", [{"total_path": "meta.filter_count"}, {"total_header": "X-Total-Count"}], ids=["body", "header"])
def test_a_read_short_of_the_stated_total_fails(total):
    offset = {"type": "offset", "limit": SIZE}  # above the API's cap of two, so its first page looks like the last
    assert Run(Checked(offset), capped_api).read() == [1, 2]  # what a read without the total takes for everything
    with pytest.raises(FatalError) as raised:
        Run(Checked(offset, **total), capped_api).read()
    setting = f"{next(iter(total))} {next(iter(total.values()))!r}"
    assert str(raised.value).startswith(f"read 2 records, but the source states 8 ({setting}): 6 would go unread; ")


def test_the_records_read_are_counted_across_chunks():
    config = {"type": "offset", "limit": 2, "stop_after_empty_page": True}
    first = Checked(config, total_path="meta.filter_count")
    assert Run(first, capped_api).read(pages=3) == RECORDS[:6]
    checkpoint = json.loads(json.dumps(first.checkpoint()))
    assert checkpoint == {"at": 6, "read": 6, "total": 8}
    resumed = Checked(config, total_path="meta.filter_count")
    resumed.resume(checkpoint)
    assert Run(resumed, capped_api).read() == [7, 8]  # 8 of 8 over both chunks: no complaint
    short = Checked(config, total_path="meta.filter_count")
    short.resume({**checkpoint, "read": 5})
    with pytest.raises(FatalError, match="read 7 records, but the source states 8"):
        Run(short, capped_api).read()


def test_a_stated_total_missing_from_the_first_answer_names_the_setting():
    with pytest.raises(FatalError, match="the first answer has no integer at 'meta.total': fix total_path on the RestSource, or remove it"):
        Run(Checked({"type": "offset", "limit": SIZE}, total_path="meta.total"), capped_api).read()
