"""Pagination strategies behind one small protocol.

The client prepares the first page (`init_request`), then for each page sends the request,
hands the response, its decoded body and its records to `update_state`, and, while `has_next_page`, lets
`update_request` point the request at the next page. `checkpoint()` is where the next page
starts; `resume(checkpoint)` on a fresh paginator starts a later run there.
Page-number and offset paginators also know the pages ahead (`ahead`), so the client may
fetch several at once; reference paginators learn each next page only from the last.
A paginator carries state, so each run makes its own (`from_config` builds a fresh one).
"""

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from connectors.errors import FatalError, PaginationLoop


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

    The pages ahead are known in advance, so `ahead` can hand several out to fetch at once.
    """

    def __init__(
        self,
        param: str,
        start: int,
        step: int,
        total_path: str | None,
        stop_after_empty_page: bool,
        page_size: int | None,
    ):
        self.has_next_page = True
        self._param = param
        self._start = start
        self._step = step
        self._total_path = total_path
        self._stop_after_empty_page = stop_after_empty_page
        self._page_size = page_size
        self._value = start
        self._known_total: int | None = None

    def init_request(self, request: PageRequest) -> None:
        self.update_request(request)

    def update_state(self, response: httpx.Response, body: Any, records: list[Any]) -> None:
        if self._total_path is not None:
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
        total = _lookup(body, self._total_path)
        if not isinstance(total, int):
            raise FatalError(f"{type(self).__name__}: the answer from {response.url.path} has no integer at {self._total_path!r}")
        return total


class PageNumberPaginator(_RangePaginator):
    """Pages numbered from `start_page` in the `page` parameter.

    Stops when the page number reaches the total at `total_pages_path` (a dotted path like
    `meta.total_pages`), on an empty page, or on a page shorter than `page_size`.
    """

    def __init__(
        self,
        page_param: str = "page",
        start_page: int = 1,
        total_pages_path: str | None = None,
        stop_after_empty_page: bool = True,
        page_size: int | None = None,
    ):
        if total_pages_path is None and not stop_after_empty_page and page_size is None:
            raise ValueError("PageNumberPaginator never stops: set total_pages_path, stop_after_empty_page or page_size")
        super().__init__(page_param, start_page, 1, total_pages_path, stop_after_empty_page, page_size)


class OffsetPaginator(_RangePaginator):
    """`limit` records from `offset`, moving on by `limit`.

    Stops at the total at `total_path`, or, with `stop_after_empty_page`, on a page shorter
    than `limit`: so `limit` must not exceed the API's maximum page size. For an API that caps
    it, turn `stop_after_empty_page` off and rely on `total_path`.
    """

    def __init__(
        self,
        limit: int,
        offset_param: str = "offset",
        limit_param: str = "limit",
        total_path: str | None = None,
        stop_after_empty_page: bool = True,
    ):
        if limit < 1:
            raise ValueError(f"OffsetPaginator needs a positive limit, got {limit}")
        if total_path is None and not stop_after_empty_page:
            raise ValueError("OffsetPaginator never stops: set total_path or stop_after_empty_page")
        super().__init__(offset_param, 0, limit, total_path, stop_after_empty_page, limit if stop_after_empty_page else None)
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
            raise ValueError("CursorPaginator needs a cursor_path to find the next cursor, and so the end")
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


class NextUrlPaginator(_UrlPaginator):
    """The answer gives the next page's URL at `next_url_path` (dotted)."""

    def __init__(self, next_url_path: str = "next"):
        if not next_url_path:
            raise ValueError("NextUrlPaginator needs a next_url_path to find the next URL, and so the end")
        super().__init__()
        self._next_url_path = next_url_path

    def _url(self, response: httpx.Response, body: Any) -> str | None:
        return _lookup(body, self._next_url_path)


class LinkHeaderPaginator(_UrlPaginator):
    """The next page's URL is the `Link` header's entry with relation `rel` (RFC 8288), as GitHub sends."""

    def __init__(self, rel: str = "next"):
        super().__init__()
        self._rel = rel

    def _url(self, response: httpx.Response, body: Any) -> str | None:
        return response.links.get(self._rel, {}).get("url")


PAGINATORS: dict[str, Callable[..., Paginator]] = {
    "page_number": PageNumberPaginator,
    "offset": OffsetPaginator,
    "cursor": CursorPaginator,
    "next_url": NextUrlPaginator,
    "link_header": LinkHeaderPaginator,
}


def from_config(config: dict[str, Any]) -> Paginator:
    """A fresh paginator: `type` names the strategy, the other keys are its arguments."""
    options = dict(config)
    kind = options.pop("type", None)
    if kind not in PAGINATORS:
        raise ValueError(f"unknown paginator type {kind!r}; known: {', '.join(PAGINATORS)}")
    return PAGINATORS[kind](**options)


def _lookup(body: Any, path: str) -> Any:
    """The value at a dotted path like `meta.total_pages` in a JSON body, or None."""
    for key in path.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body
