"""Pagination strategies behind one small protocol.

The client prepares the first page (`init_request`), then for each page sends the request,
hands the response, its decoded body and its records to `update_state`, and, while `has_next_page`, lets
`update_request` point the request at the next page. `checkpoint()` is where the next page
starts; `resume(checkpoint)` on a fresh paginator starts a later run there.
Page-number and offset paginators also know the pages ahead (`ahead`), so the client may
fetch several at once; so does the `Link`-header paginator when the server links the last page.
Other reference paginators learn each next page only from the last.
A paginator carries state, so each run makes its own (`from_config` builds a fresh one).

`auto` finds the paginator from the first answer's link to the next page (`AutoPaginator`), or stops the read
naming one to declare. `Checked` holds any paginator to what the answers say: a next page it does not follow, or
fewer records than a stated total, fail the read.
"""

import inspect
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from interlink.connectors.errors import ConfigError, FatalError, PaginationLoop

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
    """How an API splits a collection into pages: one small class per style, a fresh copy per read (state never
    crosses runs), each with a stop condition. `RestSource` asks `init_request` for the first page, then, after each
    page, `update_state`, and sends the next request while `has_next_page`."""

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


class AutoPaginator:
    """No paginator declared: the first answer shows how the API pages, or the read stops before anything is delivered.

    A `Link` header with rel="next" is followed as `link_header`, a URL at one of `NEXT_PATHS` in the body as `next_url`
    (see `next_link`). An answer that links no next page is the only page, unless it shows there are more (a next-page
    token that is no URL, `has_more: true`, a stated total above its records, as many records as a page-size
    parameter asked for): then the read fails with one line naming a paginator to declare. The paginator found is part
    of the checkpoint, so a later chunk of the run follows it too. Pages are read one at a time.
    """

    def __init__(self) -> None:
        self.has_next_page = True
        self._found: dict[str, Any] | None = None
        self._paginator: Paginator | None = None

    def init_request(self, request: PageRequest) -> None:
        if self._paginator:
            self._paginator.init_request(request)

    def update_state(self, response: httpx.Response, body: Any, records: list[Any]) -> None:
        if self._paginator is None:
            link = next_link(response, body)
            if link is None or link[1]["type"] == "cursor":  # no link, or a token without the parameter that takes it
                if more := link or _more_pages(response, body, records):
                    what, config = more
                    raise FatalError(
                        f"the first answer holds {what}, but no paginator is declared and Interlink cannot tell how to ask "
                        f"for the next page: declare it on the RestSource, e.g. paginator={literal(config)}"
                    )
                self.has_next_page = False  # nothing says there is more: the only page
                return
            what, self._found = link
            log.info("no paginator declared: the answer has %s, so it is followed as paginator=%s", what, literal(self._found))
            self._paginator = from_config(self._found)
        self._paginator.update_state(response, body, records)
        self.has_next_page = self._paginator.has_next_page

    def update_request(self, request: PageRequest) -> None:
        self._paginator.update_request(request)

    def checkpoint(self) -> Any:
        at = self._paginator.checkpoint() if self._paginator else None
        return None if at is None else {"paginator": self._found, "at": at}

    def resume(self, checkpoint: Any) -> None:
        self._found = checkpoint["paginator"]
        self._paginator = from_config(self._found)
        self._paginator.resume(checkpoint["at"])


PAGINATORS: dict[str, Callable[..., Paginator]] = {
    "page_number": PageNumberPaginator,
    "offset": OffsetPaginator,
    "cursor": CursorPaginator,
    "next_url": NextUrlPaginator,
    "link_header": LinkHeaderPaginator,
    "keyset": KeysetPaginator,
    "auto": AutoPaginator,
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


class Checked:
    """The paginator of `config`, held to what the answers say.

    Where it finds no next page but the answer links one (`next_link`), or the read ends with fewer records than
    the total the source states (`total_path` in the body, or else the header `total_header`, read from the run's first
    page), the read fails before that page's records are handed on. The checkpoint carries the records read and
    the total, so a read split in chunks is checked whole. Records read are those the source returned, refused
    ones included; a keyset page's repeated boundary records count once.
    """

    def __init__(self, config: dict[str, Any], total_path: str | None = None, total_header: str | None = None):
        self.has_next_page = True
        self._config = config
        self._inner = from_config(config)
        self._total_path, self._total_header = total_path, total_header
        self._setting = "total_path" if total_path else "total_header" if total_header else None  # the one declared
        self._read = 0
        self._total: int | None = None

    def __getattr__(self, name: str) -> Any:  # `ahead` and `unseen`, where the paginator has them
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def init_request(self, request: PageRequest) -> None:
        self._inner.init_request(request)

    def update_state(self, response: httpx.Response, body: Any, records: list[Any]) -> None:
        self._inner.update_state(response, body, records)
        self.has_next_page = self._inner.has_next_page
        self._read += len(self._inner.unseen(records)) if hasattr(self._inner, "unseen") else len(records)
        if self._total is None and self._setting:
            self._total = self._stated_total(response, body)
        if self.has_next_page:
            return
        if link := next_link(response, body):
            what, config = link
            raise FatalError(
                f"paginator={literal(self._config)} sees no next page, but the answer has {what}: the pages after it would "
                f"go unread; declare the paginator that follows it on the RestSource, e.g. paginator={literal(config)}"
            )
        if self._total is not None and self._read < self._total:
            raise FatalError(
                f"read {self._read} records, but the source states {self._total} ({self._setting} "
                f"{self._total_path or self._total_header!r}): {self._total - self._read} would go unread; fix "
                f"paginator={literal(self._config)} on the RestSource (is a page size above the API's maximum?), "
                f"or remove {self._setting} if it counts other records"
            )

    def update_request(self, request: PageRequest) -> None:
        self._inner.update_request(request)

    def checkpoint(self) -> Any:
        at = self._inner.checkpoint()
        return None if at is None else {"at": at, "read": self._read, "total": self._total}

    def resume(self, checkpoint: Any) -> None:
        self._inner.resume(checkpoint["at"])
        self._read, self._total = checkpoint["read"], checkpoint["total"]

    def _stated_total(self, response: httpx.Response, body: Any) -> int:
        if self._total_path:
            total, where = _integer(_lookup(body, self._total_path)), f"integer at {self._total_path!r}"
        else:
            total, where = _integer(response.headers.get(self._total_header)), f"header {self._total_header}"
        if total is None:
            raise FatalError(f"the first answer has no {where}: fix {self._setting} on the RestSource, or remove it")
        return total


# Where answers commonly link their next page in the body, say there are more, and state their total.
NEXT_PATHS = ("next_url", "next", "links.next", "paging.next")
MORE_PATHS = ("has_more", "hasMore", "has_next_page", "meta.has_more")
TOTAL_HEADERS = ("X-Total-Count", "X-Total")
TOTAL_PATHS = ("total", "total_count", "totalCount", "count", "meta.total", "meta.total_count", "meta.filter_count",
               "filtered_table_rows_count")
SIZE_PARAMS = ("limit", "per_page", "page_size", "pageSize", "size", "_size", "_limit", "$top")


def next_link(response: httpx.Response, body: Any) -> tuple[str, dict[str, Any]] | None:
    """The answer's link to a next page, described, and a paginator that follows it; None when it links none.

    A `Link` header with rel="next" first, then a URL at one of `NEXT_PATHS`, then a token there (whose query
    parameter the answer does not name).
    """
    if "next" in response.links:
        return 'a Link header with rel="next"', {"type": "link_header", "page_size_param": None}
    found = [(path, value) for path in NEXT_PATHS if _token(value := _lookup(body, path))]
    for path, value in found:
        if isinstance(value, str) and (value.startswith(("http://", "https://", "/")) or "?" in value):
            return f"a next-page URL at {path!r}", {"type": "next_url", "next_url_path": path}
    for path, _ in found:
        return f"a next-page token at {path!r}", {"type": "cursor", "cursor_path": path, "cursor_param": "<the query parameter that takes it>"}
    return None


def _more_pages(response: httpx.Response, body: Any, records: list[Any]) -> tuple[str, dict[str, Any]] | None:
    """A sign that more pages follow an answer that links none, and a paginator to declare for them; None if none."""
    for path in MORE_PATHS:
        if _lookup(body, path) is True:
            return f"{path}: true", {"type": "cursor", "cursor_path": "<where the answer gives the next cursor>", "cursor_param": "<its query parameter>"}
    count = len(records)
    for header in TOTAL_HEADERS:
        if (total := _integer(response.headers.get(header))) is not None and total > count:
            return f"a total of {total} in its {header} header but {count} records", {"type": "offset", "limit": count or 1, "total_header": header}
    for path in TOTAL_PATHS:
        if (total := _integer(_lookup(body, path))) is not None and total > count:
            return f"a total of {total} at {path!r} but {count} records", {"type": "offset", "limit": count or 1, "total_path": path}
    params = response.request.url.params
    for name in SIZE_PARAMS:
        if count and params.get(name) == str(count):
            return f"{count} records, as many as {name}={count} asks for", {"type": "offset", "limit": count, "limit_param": name}
    return None


def _token(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and value != ""


def _integer(value: Any) -> int | None:
    """`value` as a whole number of records (a header's text or a JSON integer), or None."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def literal(config: dict[str, Any]) -> str:
    """A paginator's config as it is written on a RestSource: `{"type": "cursor", "cursor_path": "next"}`."""
    return "{" + ", ".join(f"{json.dumps(k)}: {'None' if v is None else json.dumps(v)}" for k, v in config.items()) + "}"


def _json_text(record: Any) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def _lookup(body: Any, path: str) -> Any:
    """The value at a dotted path like `meta.total_pages` in a JSON body, or None."""
    for key in path.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body
