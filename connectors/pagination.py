"""Pagination strategies behind one small protocol.

The client prepares the first page (`init_request`), then for each page sends the request,
hands the response, its decoded body and its records to `update_state`, and, while `has_next_page`, lets
`update_request` point the request at the next page. `checkpoint()` is where the next page
starts; `resume(checkpoint)` on a fresh paginator starts a later run there.
Page-number and offset paginators also know the pages ahead (`ahead`), so the client may
fetch several at once; so does the `Link`-header paginator when the server links the last page.
Other reference paginators learn each next page only from the last.
A paginator carries state, so each run makes its own (`from_config` builds a fresh one).
"""

import inspect
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from connectors.errors import ConfigError, FatalError, PaginationLoop

log = logging.getLogger(__name__)


@dataclass
class PageRequest:
    """The request being paged: `url` is a path relative to the client's base URL, or an absolute URL.

    Send it as `client.get(url, params=params or None)`: httpx 0.28 replaces the query of `url`
    with `params`, even an empty dict, and a next-page URL carries its query in `url`.
    """

    url: str
    params: dict[str, Any]


class Paginator(Protocol):
    has_next_page: bool

    def init_request(self, request: PageRequest) -> None:
        """Point `request` at the first page, or at the resumed position."""

    def update_state(self, response: httpx.Response, body: Any, records: list[Any]) -> None:
        """Read a page's answer (`body` is its decoded JSON) and its records: is there a next page, and where?"""

    def update_request(self, request: PageRequest) -> None:
        """Point `request` at the next page."""

    def checkpoint(self) -> Any:
        """Where the next page starts, JSON-able; None when there is no next page."""

    def resume(self, checkpoint: Any) -> None:
        """Make `init_request` start at a `checkpoint` of an earlier run."""


class _RangePaginator:
    """Steps a number in a query parameter until the total, an empty page or a short page ends the run.

    The total, in units of that number, is read from the body at `total_path`, or from the response header
    `total_header` as a count of records, `records_per_unit` to a unit (1 for offsets, the page size for page
    numbers). The pages ahead are known in advance, so `ahead` can hand several out to fetch at once.
    """

    _total_path_setting = "total_path"

    def __init__(
        self,
        param: str,
        start: int,
        step: int,
        total_path: str | None,
        total_header: str | None,
        records_per_unit: int,
        stop_after_empty_page: bool,
        page_size: int | None,
    ):
        if total_path and total_header:
            raise ConfigError(
                f"{type(self).__name__} has both {self._total_path_setting} and total_header: keep the one the API answers"
            )
        self.has_next_page = True
        self._param = param
        self._start = start
        self._step = step
        self._total_path = total_path
        self._total_header = total_header
        self._records_per_unit = records_per_unit
        self._stop_after_empty_page = stop_after_empty_page
        self._page_size = page_size
        self._value = start
        self._known_total: int | None = None

    def init_request(self, request: PageRequest) -> None:
        self.update_request(request)

    def update_state(self, response: httpx.Response, body: Any, records: list[Any]) -> None:
        if self._total_path or self._total_header:
            self._known_total = self._total(response, body)
        if self._is_last(records):
            self.has_next_page = False
        else:
            self._value += self._step

    def update_request(self, request: PageRequest) -> None:
        request.params = {**request.params, **self._params(self._value)}

    def ahead(self, request: PageRequest, pages: int) -> list[PageRequest]:
        """Requests for the next `pages` pages, from the current one; none past a known total."""
        values = [self._value + i * self._step for i in range(pages)]
        if self._known_total is not None:
            values = values[:1] + [v for v in values[1:] if v - self._start < self._known_total]
        return [PageRequest(request.url, {**request.params, **self._params(v)}) for v in values]

    def checkpoint(self) -> int | None:
        return self._value if self.has_next_page else None

    def resume(self, checkpoint: int) -> None:
        self._value = checkpoint

    def _params(self, value: int) -> dict[str, Any]:
        return {self._param: value}

    def _is_last(self, records: list[Any]) -> bool:
        if self._stop_after_empty_page and not records:
            return True
        if self._page_size is not None and len(records) < self._page_size:
            return True
        return self._known_total is not None and self._value + self._step - self._start >= self._known_total

    def _total(self, response: httpx.Response, body: Any) -> int:
        name = type(self).__name__
        if self._total_header:
            try:
                records = int(response.headers[self._total_header])
            except (KeyError, ValueError):
                raise FatalError(
                    f"{name}: the answer from {response.url.path} has no integer {self._total_header} header; "
                    f"fix total_header or take the total from the body with {self._total_path_setting}"
                ) from None
            return -(-records // self._records_per_unit)
        total = _lookup(body, self._total_path)
        if not isinstance(total, int):
            raise FatalError(
                f"{name}: the answer from {response.url.path} has no integer at {self._total_path!r}; "
                f"fix {self._total_path_setting} (a dotted path in the body) or remove it"
            )
        return total


class PageNumberPaginator(_RangePaginator):
    """Pages numbered from `start_page` in the `page` parameter.

    Stops when the page number reaches the total pages at `total_pages_path` (a dotted path like
    `meta.total_pages`) or the total records in the header `total_header` (like `X-Total-Count`, with
    `page_size`), on an empty page, or on a page shorter than `page_size`.
    """

    _total_path_setting = "total_pages_path"

    def __init__(
        self,
        page_param: str = "page",
        start_page: int = 1,
        total_pages_path: str | None = None,
        stop_after_empty_page: bool = True,
        page_size: int | None = None,
        total_header: str | None = None,
    ):
        if not (total_pages_path or total_header or stop_after_empty_page or page_size):
            raise ConfigError(
                "PageNumberPaginator never stops: set total_pages_path, total_header, stop_after_empty_page or page_size"
            )
        if total_header and not page_size:
            raise ConfigError(
                f"PageNumberPaginator: total_header {total_header!r} counts records, not pages: "
                "set page_size, the records per page (and send it in params)"
            )
        if page_size is not None and page_size < 1:
            raise ConfigError(f"PageNumberPaginator needs a positive page_size, got {page_size}")
        super().__init__(
            page_param, start_page, 1, total_pages_path, total_header, page_size or 1, stop_after_empty_page, page_size
        )


class OffsetPaginator(_RangePaginator):
    """`limit` records from `offset`, moving on by `limit`.

    Stops at the total at `total_path` in the body or in the header `total_header` (like
    `X-Total-Count`), or, with `stop_after_empty_page`, on a page shorter than `limit`: so `limit`
    must not exceed the API's maximum page size. For an API that caps it, turn
    `stop_after_empty_page` off and rely on the total.
    """

    def __init__(
        self,
        limit: int,
        offset_param: str = "offset",
        limit_param: str = "limit",
        total_path: str | None = None,
        stop_after_empty_page: bool = True,
        total_header: str | None = None,
    ):
        if limit < 1:
            raise ConfigError(f"OffsetPaginator needs a positive limit, got {limit}")
        if not (total_path or total_header or stop_after_empty_page):
            raise ConfigError("OffsetPaginator never stops: set total_path, total_header or stop_after_empty_page")
        super().__init__(
            offset_param, 0, limit, total_path, total_header, 1, stop_after_empty_page,
            limit if stop_after_empty_page else None,
        )
        self._limit_param = limit_param

    def _params(self, value: int) -> dict[str, Any]:
        return {**super()._params(value), self._limit_param: self._step}


class _ReferencePaginator(ABC):
    """Follows the reference to the next page that each answer gives; stops when it is null, missing or empty.

    A reference seen before would loop forever, so it raises `PaginationLoop`.
    """

    _noun = "reference"

    def __init__(self) -> None:
        self.has_next_page = True
        self._next: Any = None
        self._seen: set[Any] = set()
        self._pages = 0

    def init_request(self, request: PageRequest) -> None:
        if self._next is not None:
            self.update_request(request)

    def update_state(self, response: httpx.Response, body: Any, records: list[Any]) -> None:
        self._pages += 1
        reference = self._reference(response, body) or None
        if reference is not None and reference in self._seen:
            raise PaginationLoop(f"the source repeated {self._noun} {reference!r} after {self._pages} pages")
        self._seen.add(reference)
        self._next = reference
        self.has_next_page = reference is not None

    def checkpoint(self) -> Any:
        return self._next

    def resume(self, checkpoint: Any) -> None:
        self._next = checkpoint
        self._seen.add(checkpoint)

    @abstractmethod
    def update_request(self, request: PageRequest) -> None: ...

    @abstractmethod
    def _reference(self, response: httpx.Response, body: Any) -> Any: ...


class CursorPaginator(_ReferencePaginator):
    """The answer names the next page's cursor at `cursor_path` (dotted); it goes back in `cursor_param`."""

    _noun = "cursor"

    def __init__(self, cursor_path: str = "next_cursor", cursor_param: str = "cursor"):
        if not cursor_path:
            raise ConfigError("CursorPaginator needs a cursor_path to find the next cursor, and so the end")
        super().__init__()
        self._cursor_path = cursor_path
        self._cursor_param = cursor_param

    def update_request(self, request: PageRequest) -> None:
        request.params = {**request.params, self._cursor_param: self._next}

    def _reference(self, response: httpx.Response, body: Any) -> Any:
        return _lookup(body, self._cursor_path)


class _UrlPaginator(_ReferencePaginator):
    """Follows next-page URLs, resolved against the page's own URL; each carries its query, so params are dropped."""

    _noun = "next URL"

    def update_request(self, request: PageRequest) -> None:
        request.url = self._next
        request.params = {}

    def _reference(self, response: httpx.Response, body: Any) -> str | None:
        url = self._url(response, body)
        return str(response.url.join(url)) if url else None

    @abstractmethod
    def _url(self, response: httpx.Response, body: Any) -> str | None: ...


class KeysetPaginator(_ReferencePaginator):
    """Pages by the records' own sort key: each next page asks for the records from the last one's
    `key_field` on (in `key_param`, inclusive), the first page of that query. A record that changes
    during the read cannot shift later records onto a page already read, as it can with page numbers.

    The API must return records in `key_field` order and filter on `key_param` (at or after); the
    records at a boundary come twice, and `unseen` drops the second copy. A full page whose records
    all share the key value it asked for cannot advance: it fails, asking for a larger `page_size`.
    """

    _noun = "key"

    def __init__(self, key_field: str, key_param: str, page_size: int, page_size_param: str | None = None):
        if not key_field or not key_param or not page_size or page_size < 2:
            raise ConfigError("KeysetPaginator needs key_field, key_param and a page_size of at least 2 (a short page is the end)")
        super().__init__()
        self._field, self._param, self._size, self._size_param = key_field, key_param, page_size, page_size_param
        self._tail: list[str] = []  # the records at the last key of the latest page, as JSON
        self._repeated: list[str] = []  # those of the page before: this page's first records again

    def init_request(self, request: PageRequest) -> None:
        if self._size_param:
            request.params = {**request.params, self._size_param: self._size}
        super().init_request(request)

    def update_state(self, response: httpx.Response, body: Any, records: list[Any]) -> None:
        self._pages += 1
        last = records[-1].get(self._field) if records and isinstance(records[-1], dict) else None
        self._repeated, self._tail = self._tail, [_json_text(r) for r in records if isinstance(r, dict) and r.get(self._field) == last]
        if len(records) < self._size or last is None:
            self._next, self.has_next_page = None, False
            return
        if str(last) == response.request.url.params.get(self._param):
            raise PaginationLoop(
                f"a full page of {len(records)} records all at {self._field} {last!r}: keyset reads cannot advance; raise page_size"
            )
        self._next, self.has_next_page = last, True

    def checkpoint(self) -> Any:
        return None if self._next is None else [self._next, self._tail]

    def resume(self, checkpoint: Any) -> None:
        super().resume(checkpoint[0])
        self._tail = checkpoint[1]

    def unseen(self, records: list[Any]) -> list[Any]:
        """The latest page's records without those the page before ended with (the boundary, asked for again)."""
        return [r for r in records if _json_text(r) not in self._repeated] if self._repeated else records

    def update_request(self, request: PageRequest) -> None:
        request.params = {**request.params, self._param: self._next}

    def _reference(self, response: httpx.Response, body: Any) -> Any:
        raise NotImplementedError  # the reference is the last record's key, read in update_state


class NextUrlPaginator(_UrlPaginator):
    """The answer gives the next page's URL at `next_url_path` (dotted)."""

    def __init__(self, next_url_path: str = "next"):
        if not next_url_path:
            raise ConfigError("NextUrlPaginator needs a next_url_path to find the next URL, and so the end")
        super().__init__()
        self._next_url_path = next_url_path

    def _url(self, response: httpx.Response, body: Any) -> str | None:
        return _lookup(body, self._next_url_path)


class LinkHeaderPaginator(_UrlPaginator):
    """The next page's URL is the `Link` header's entry with relation `rel` (RFC 8288), as GitHub sends.

    Without a page size most such servers answer one giant page, or their own small default, so the first
    request asks for `page_size` records (default 100) in the query parameter `page_size_param` (`per_page`
    on GitHub, `_limit` on json-server, which also wants `_page=1` in the source's params). Only for a server
    that pages by itself, set `page_size_param` to None, explicitly.

    When the links also give `rel="last"` and the next and last URLs differ in one integer parameter (a page
    number or an offset, stepping as from this page to the next), the pages up to the last are known, so
    `ahead` hands several out to fetch at once; each page must then be the one its predecessor linked to.
    """

    def __init__(self, page_size_param: str | None, page_size: int | None = None, rel: str = "next"):
        if page_size_param == "":
            raise ConfigError("LinkHeaderPaginator: page_size_param is empty: name the page-size query parameter, e.g. per_page")
        if page_size_param is None and page_size is not None:
            raise ConfigError(
                f"LinkHeaderPaginator: page_size={page_size} is never sent without page_size_param: "
                "name its query parameter (per_page on GitHub, _limit on json-server)"
            )
        if page_size is not None and page_size < 1:
            raise ConfigError(f"LinkHeaderPaginator needs a positive page_size, got {page_size}")
        super().__init__()
        self._page_size_param = page_size_param
        self._page_size = (page_size or 100) if page_size_param else None
        self._rel = rel
        self._plan: tuple[str, int, int] | None = None  # the page parameter, its step, its value in the last page's URL
        self._sequential_because: str | None = None
        self._said_sequential = False

    def init_request(self, request: PageRequest) -> None:
        if self._next is None and self._page_size_param:
            request.params = {**request.params, self._page_size_param: self._page_size}
        super().init_request(request)

    def update_state(self, response: httpx.Response, body: Any, records: list[Any]) -> None:
        if self._plan and response.request.url != httpx.URL(self._next):
            key = self._plan[0]
            raise FatalError(
                f"LinkHeaderPaginator: a page fetched ahead ({key}={response.url.params.get(key)}) is not the one "
                f"the page before linked to ({key}={httpx.URL(self._next).params.get(key)}); "
                "read these pages one at a time (concurrent_pages=1)"
            )
        super().update_state(response, body, records)
        if self._pages == 1 and not response.links and self._page_size and len(records) >= self._page_size:
            raise FatalError(  # taken as the only page, the rest would be lost without a word
                f"LinkHeaderPaginator: the first page of {response.url.path} is full ({len(records)} records) but has no "
                "Link header, so the server is not paging as asked: if it pages only when asked for a page, add that to "
                "the source's params (json-server: _page=1); if this really is every record, raise page_size"
            )
        self._plan = self._plan_ahead(response)

    def ahead(self, request: PageRequest, pages: int) -> list[PageRequest]:
        """Requests for the next `pages` pages, from the current one; none past the last page's link."""
        if self._plan is None:
            if self._sequential_because and not self._said_sequential:
                log.debug("LinkHeaderPaginator: reading pages one at a time: %s", self._sequential_because)
                self._said_sequential = True
            return [request]
        key, step, last = self._plan
        url = httpx.URL(request.url)
        first = int(url.params[key])
        return [request] + [
            PageRequest(str(url.copy_set_param(key, value)), {})
            for value in range(first + step, min(first + pages * step, last + 1), step)
        ]

    def _url(self, response: httpx.Response, body: Any) -> str | None:
        return response.links.get(self._rel, {}).get("url")

    def _plan_ahead(self, response: httpx.Response) -> tuple[str, int, int] | None:
        """The parameter that numbers the pages, its step and its last value; None if they are not known."""
        if self._next is None:
            return None
        last_url = response.links.get("last", {}).get("url")
        if not last_url:
            self._sequential_because = 'the server gives no rel="last" link'
            return None
        following, last = httpx.URL(self._next).params, response.url.join(last_url).params
        keys = sorted(key for key in {*following, *last} if following.get_list(key) != last.get_list(key))
        if len(keys) != 1:
            if keys:
                self._sequential_because = f"the next and last links differ in more than one parameter ({', '.join(keys)})"
            return None  # no difference: the next page is the last
        key = keys[0]
        current = response.url.params.get(key)
        if current is None:
            return None  # a first page may not name its number; the next one will
        try:
            value, last_value, step = int(following[key]), int(last[key]), int(following[key]) - int(current)
        except (KeyError, ValueError):
            self._sequential_because = f"{key} in the next and last links is not an integer"
            return None
        if step < 1 or last_value < value:
            self._sequential_because = f"{key} does not step up from this page through the next to the last"
            return None
        return key, step, last_value


PAGINATORS: dict[str, Callable[..., Paginator]] = {
    "page_number": PageNumberPaginator,
    "offset": OffsetPaginator,
    "cursor": CursorPaginator,
    "next_url": NextUrlPaginator,
    "link_header": LinkHeaderPaginator,
    "keyset": KeysetPaginator,
}


def from_config(config: dict[str, Any]) -> Paginator:
    """A fresh paginator: `type` names the strategy, the other keys are its arguments."""
    options = dict(config)
    kind = options.pop("type", None)
    if kind not in PAGINATORS:
        raise ConfigError(f"unknown paginator type {kind!r}; known: {', '.join(PAGINATORS)}")
    signature = inspect.signature(PAGINATORS[kind])
    try:
        signature.bind(**options)
    except TypeError as exc:
        raise ConfigError(f"paginator {kind!r}: {exc}; its settings: {', '.join(signature.parameters)}") from None
    return PAGINATORS[kind](**options)


def _json_text(record: Any) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def _lookup(body: Any, path: str) -> Any:
    """The value at a dotted path like `meta.total_pages` in a JSON body, or None."""
    for key in path.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body
