"""The REST connector against `httpx.MockTransport`: auth, pagination, error classification, retries."""

import threading

import httpx
import pytest
from interlink.connectors.auth import ApiKeyHeader
from interlink.connectors.errors import AuthError, ConfigError, FatalError, NotFound, PaginationLoop, RetriableError
from interlink.connectors.pagination import CursorPaginator, OffsetPaginator, from_config
from interlink.connectors.ratelimit import RateLimiter
from interlink.connectors.rest import RestClient
from interlink.tasks.ingest import RestSource, fetch_chunk
from pydantic import SecretStr

from interlink.settings import RestConnection

KEY = "sk-unit-5e1d"


def client(handler, sleeps=None, attempts=4) -> RestClient:
    """A client whose backoff is recorded in `sleeps` instead of slept."""
    return RestClient(
        "crm", "https://crm.test", auth=ApiKeyHeader(SecretStr(KEY)), max_attempts=attempts,
        transport=httpx.MockTransport(handler), secrets=(KEY,), sleep=(sleeps if sleeps is not None else []).append,
    )


def test_api_key_goes_in_the_header_only():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    connection = RestConnection(base_url="https://crm.test", auth={"kind": "api_key", "key": KEY})
    with RestClient.connect("crm", connection, transport=httpx.MockTransport(handler)) as rest:
        assert rest.get_json("/ping", {"a": 1}) == {"ok": True}
    assert seen[0].headers["X-API-Key"] == KEY
    assert KEY not in str(seen[0].url)


@pytest.mark.parametrize(
    ("body", "decoded"),
    [(b'{"name": "Ada \\ud800 Lovelace"}', {"name": "Ada \ud800 Lovelace"}), (b'{"name": "Ada"}', {"name": "Ada"})],
)
def test_an_answer_holding_a_lone_surrogate_escape_is_decoded_for_its_record_to_be_dead_lettered(body, decoded):
    with client(lambda request: httpx.Response(200, content=body)) as rest:
        assert rest.get_json("/customers/1") == decoded


def test_an_answer_that_is_not_json_is_fatal():
    with client(lambda request: httpx.Response(200, content=b'{"name": "Ada"')) as rest, pytest.raises(FatalError, match="not JSON"):
        rest.get_json("/customers/1")


def test_cursor_pagination_follows_the_cursor_until_it_is_null():
    pages = {None: ("c1", [1, 2]), "c1": ("c2", [3]), "c2": (None, [4])}

    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        assert request.url.params["limit"] == "2"
        nxt, data = pages[cursor]
        return httpx.Response(200, json={"data": data, "next_cursor": nxt})

    with client(handler) as rest:
        pages = list(rest.paginate("/customers", CursorPaginator(), {"limit": 2}, records_path="data"))
    assert pages == [[1, 2], [3], [4]]


def test_pagination_resumes_from_a_given_cursor():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["cursor"] == "c7"
        return httpx.Response(200, json={"data": [8], "next_cursor": None})

    paginator = CursorPaginator()
    paginator.resume("c7")
    with client(handler) as rest:
        assert list(rest.paginate("/x", paginator, records_path="data")) == [[8]]


def test_a_repeated_cursor_fails_instead_of_looping():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"data": [1], "next_cursor": "same"})

    with client(handler) as rest, pytest.raises(PaginationLoop, match="repeated cursor 'same'"):
        list(rest.paginate("/customers", CursorPaginator(), records_path="data"))
    assert len(calls) == 2


def test_429_honours_retry_after_then_succeeds():
    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json={"ok": 1})])
    sleeps: list[float] = []
    with client(lambda request: next(answers), sleeps) as rest:
        assert rest.get_json("/x") == {"ok": 1}
    assert sleeps == [7.0]


def test_5xx_and_timeouts_back_off_exponentially_and_give_up_after_max_attempts():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) % 2:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(503)

    sleeps: list[float] = []
    with client(handler, sleeps, attempts=4) as rest, pytest.raises(RetriableError, match="503"):
        rest.get_json("/x")
    assert len(calls) == 4
    assert len(sleeps) == 3 and all(0 < s <= 31 for s in sleeps)


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_fail_at_once_with_a_clear_message(status):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, json={"error": f"bad key {KEY}"})  # a server that echoes the key

    with client(handler, []) as rest, pytest.raises(AuthError) as info:
        rest.get_json("/customers")
    assert len(calls) == 1
    message = str(info.value)
    assert f"GET /customers answered {status}" in message and "credentials were rejected" in message
    assert KEY not in message


def test_other_4xx_are_fatal_and_404_is_not_found():
    answers = {"/a": httpx.Response(400, text="limit must be a number"), "/b": httpx.Response(404)}
    with client(lambda request: answers[request.url.path], []) as rest:
        with pytest.raises(FatalError, match="limit must be a number") as info:
            rest.get_json("/a")
        assert not isinstance(info.value, RetriableError)
        with pytest.raises(NotFound):
            rest.get_json("/b")


def test_connection_repr_never_shows_the_key():
    connection = RestConnection(base_url="https://crm.test", auth={"kind": "api_key", "key": KEY})
    assert KEY not in repr(connection) and KEY not in str(connection.model_dump())


# One budget and one breaker per connection, shared by its clients; transport and body errors classified.

import functools  # noqa: E402
import uuid  # noqa: E402

import interlink.connectors.rest as rest_module  # noqa: E402
from interlink.connectors.breaker import breaker_for, breakers  # noqa: E402
from interlink.connectors.errors import CircuitOpen  # noqa: E402
from interlink.connectors.rest import limiter_for  # noqa: E402


def unique(prefix: str) -> str:
    """A connection name no other test uses: limiters and breakers live in process-wide registries."""
    return f"{prefix}-{uuid.uuid4().hex}"


class FakeTime:
    """A clock that moves only when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_clients_of_one_connection_share_one_rate_limiter(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(rest_module, "RateLimiter", functools.partial(RateLimiter, clock=clock, sleep=clock.sleep))
    name, other = unique("paced"), unique("paced")
    connection = RestConnection(base_url="https://api.test", rate_per_s=2)  # a burst of 2, then one every 0.5 s
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))

    with RestClient.connect(name, connection, transport) as first, RestClient.connect(name, connection, transport) as second:
        first.get_json("/a")
        first.get_json("/a")
        assert clock.sleeps == []  # the burst
        second.get_json("/b")
        assert clock.sleeps == [0.5]  # the second client waits on the budget the first one spent
    with RestClient.connect(other, connection, transport) as third:
        third.get_json("/c")
    assert clock.sleeps == [0.5]  # another connection has a budget of its own

    limiter = limiter_for(name, 2, None, None)
    assert isinstance(limiter, RateLimiter) and (limiter.rate_per_s, limiter.burst) == (2, 2)
    assert limiter is limiter_for(name, 2.0, None, None)
    assert limiter is not limiter_for(other, 2, None, None)
    assert limiter_for(unique("unpaced"), None, None, None) is None


def test_clients_of_one_connection_share_one_breaker_which_the_registry_lists_with_its_openings():
    name = unique("breaker")
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(503)

    connection = RestConnection(base_url="https://api.test", max_attempts=1, breaker_threshold=2, breaker_cooldown_s=60)
    breaker = breaker_for(name, "https://api.test", 2, 60)
    assert breaker is breaker_for(name, "https://api.test", 2, 60.0)
    assert breaker is not breaker_for(name, "https://api.test", 3, 60)  # other parameters, another breaker
    assert breaker is not breaker_for(name, "https://other.test", 2, 60)  # another system, another breaker
    transport = httpx.MockTransport(handler)
    with RestClient.connect(name, connection, transport) as first, RestClient.connect(name, connection, transport) as second:
        with pytest.raises(RetriableError):
            first.get_json("/a")
        assert (breaker.state, breaker.opened_times) == ("closed", 0)
        with pytest.raises(RetriableError):
            second.get_json("/b")  # the second client's failure counts on the same breaker: the threshold is reached
        assert breaker.state == "open"
        with pytest.raises(CircuitOpen):
            first.get_json("/c")
    assert calls == ["/a", "/b"]
    listed = [b for b in breakers() if b.name == name and b.failure_threshold == 2]
    assert len(listed) == 2 and breaker in listed  # api.test's and other.test's
    assert (breaker.state, breaker.opened_times) == ("open", 1)


@pytest.mark.parametrize("retry_after", ["-5", "nan"])
def test_an_invalid_retry_after_is_ignored_for_our_own_backoff(retry_after):
    # a negative or NaN wait would make time.sleep raise ValueError instead of retrying
    answers = iter([httpx.Response(429, headers={"Retry-After": retry_after}), httpx.Response(200, json={"ok": 1})])
    sleeps: list[float] = []
    with client(lambda request: next(answers), sleeps) as rest:
        assert rest.get_json("/x") == {"ok": 1}
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 31


def test_a_connection_closed_without_a_response_is_retried():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json={"ok": 1})

    with client(handler, []) as rest:
        assert rest.get_json("/x") == {"ok": 1}
    assert len(calls) == 2


def test_a_page_without_its_records_path_is_a_fatal_error():
    answer = httpx.Response(200, json={"items": [1, 2], "next_cursor": None})
    with client(lambda request: answer, []) as rest, pytest.raises(FatalError, match="crm /customers: .*'data'"):
        list(rest.paginate("/customers", CursorPaginator(), records_path="data"))


class Inflight:
    """An offset-paged API of `total` records that counts the requests in flight at once.

    The first pages after the first wait for each other at a barrier, so they can only be
    answered if the client really sends `together` of them at once.
    """

    def __init__(self, total: int, limit: int, together: int):
        self.total, self.limit = total, limit
        self.offsets: list[int] = []
        self.now = self.most = 0
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(together, timeout=10)
        self._together = {limit * (i + 1) for i in range(together)}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        with self._lock:
            self.offsets.append(offset)
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            if offset in self._together:
                self._barrier.wait()
            data = list(range(offset, min(offset + self.limit, self.total)))
            return httpx.Response(200, json={"data": data, "total": self.total})
        finally:
            with self._lock:
                self.now -= 1


def test_offset_pages_are_fetched_several_at_once_yielded_in_order_and_never_past_the_total():
    api = Inflight(total=1050, limit=100, together=4)
    paginator = OffsetPaginator(limit=100, total_path="total")
    with client(api) as rest:
        pages = list(rest.paginate("/customers", paginator, records_path="data", concurrency=4))
    assert [r for page in pages for r in page] == list(range(1050))
    assert sorted(api.offsets) == list(range(0, 1100, 100))  # 11 pages, none fetched twice or past the total
    assert 2 <= api.most <= 4 and paginator.checkpoint() is None


def test_concurrent_pages_stay_within_the_connections_concurrency_budget():
    api = Inflight(total=1000, limit=100, together=2)
    limiter = RateLimiter(rate_per_s=10_000, burst=100, max_concurrency=2)
    rest = RestClient("crm", "https://crm.test", transport=httpx.MockTransport(api), limiter=limiter)
    with rest:
        pages = list(rest.paginate("/customers", OffsetPaginator(limit=100, total_path="total"), records_path="data", concurrency=6))
    assert sum(map(len, pages)) == 1000
    assert api.most == 2  # the pool had 6 threads; the budget let 2 through at a time


# Where the records are: found when no records_path is set; errors that name the connection and the fix -----------


def test_without_records_path_a_top_level_array_is_the_records():
    pages = {"1": [{"id": 1}, {"id": 2}], "2": [{"id": 3}]}

    def handler(request: httpx.Request) -> httpx.Response:
        page = request.url.params.get("page", "1")
        links = {"Link": '<https://crm.test/customers?page=2&per_page=2>; rel="next"'} if page == "1" else {}
        return httpx.Response(200, json=pages[page], headers=links)

    with client(handler) as rest:
        paginator = from_config({"type": "link_header", "page_size_param": "per_page", "page_size": 2})
        assert list(rest.paginate("/customers", paginator)) == [pages["1"], pages["2"]]


def test_without_records_path_an_objects_only_list_is_found_on_the_first_page_and_kept():
    answers = iter([
        {"items": [1, 2], "next_cursor": "c1"},
        {"items": [3], "warnings": [], "next_cursor": None},  # a second list: "items" still holds the records
    ])
    with client(lambda request: httpx.Response(200, json=next(answers))) as rest:
        assert list(rest.paginate("/customers", CursorPaginator())) == [[1, 2], [3]]


PERSONAL = "ada.lovelace@example.com"


@pytest.mark.parametrize(
    "body, records_path, found, fix",
    [
        ({"items": [], "errors": [], "owner": PERSONAL}, None, "an object with keys ['items', 'errors', 'owner']",
         "set records_path to one of ['items', 'errors'] on the RestSource"),
        ({"result": {"rows": []}, "owner": PERSONAL}, None, "an object with keys ['result', 'owner']",
         "set records_path=... on the RestSource to the dotted path of the list of records"),
        ({"items": [{"email": PERSONAL}], "count": 1}, "data", "an object with keys ['items', 'count']",
         "set records_path to one of ['items'] on the RestSource"),
        ([{"email": PERSONAL}], "data", "a top-level array",
         "set records_path=None on the RestSource, so the top-level array is taken"),
    ],
    ids=["two lists", "nested list", "wrong path", "array with a path"],
)
def test_records_not_found_name_the_connection_what_was_found_and_the_fix_but_no_value(body, records_path, found, fix):
    with client(lambda request: httpx.Response(200, json=body)) as rest, pytest.raises(FatalError) as raised:
        list(rest.paginate("/customers", CursorPaginator(), records_path=records_path))
    message = str(raised.value)
    assert message.startswith("crm /customers: ")
    assert f"the answer is {found}" in message and message.endswith(fix)
    assert PERSONAL not in message


def test_a_paginators_error_names_the_connection_and_hides_its_secrets():
    answer = httpx.Response(200, json={"data": [], "next_cursor": f"token-{KEY}"})
    with client(lambda request: answer) as rest, pytest.raises(PaginationLoop) as raised:
        list(rest.paginate("/customers", CursorPaginator(), records_path="data"))
    assert str(raised.value) == "crm /customers: the source repeated cursor 'token-***' after 2 pages"


# Link headers with a last page: the pages ahead fetched several at once -----------------------------------------


class LinkedPages(Inflight):
    """`Inflight`, paged by page number with GitHub-style Link headers (next and last)."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        offset_request = httpx.Request("GET", request.url.copy_set_param("offset", (page - 1) * self.limit))
        response = super().__call__(offset_request)
        pages = -(-self.total // self.limit)
        url = request.url.copy_remove_param("offset")
        links = [f'<{url.copy_set_param("page", pages)}>; rel="last"']
        if page < pages:
            links.append(f'<{url.copy_set_param("page", page + 1)}>; rel="next"')
        return httpx.Response(200, json=response.json()["data"], headers={"Link": ", ".join(links)})


def test_link_header_pages_up_to_the_last_are_fetched_several_at_once_in_order_each_once():
    api = LinkedPages(total=1050, limit=100, together=4)
    paginator = from_config({"type": "link_header", "page_size_param": "per_page", "page_size": 100})
    with client(api) as rest:
        pages = list(rest.paginate("/customers", paginator, {"page": 1}, concurrency=4))
    assert [r for page in pages for r in page] == list(range(1050))
    assert sorted(api.offsets) == list(range(0, 1100, 100))  # 11 pages, none fetched twice or past the last
    assert 2 <= api.most <= 4 and paginator.checkpoint() is None


def test_source_settings_name_the_connection_and_the_fix():
    source = RestSource("crm", "/customers", "updated_at", "since", paginator={"type": "link_header"})
    connection = RestConnection(base_url="https://crm.test")
    with pytest.raises(ConfigError) as raised:
        fetch_chunk.fn(source, connection, None, None, 100)
    assert str(raised.value).startswith("crm /customers: paginator 'link_header': missing a required argument: 'page_size_param'")
    assert str(raised.value).endswith("fix paginator={...} on the RestSource")
    with pytest.raises(ConfigError, match="the RestSource of crm /customers has both total_path and total_header: keep the one the API answers"):
        RestSource("crm", "/customers", "updated_at", "since", total_path="meta.total", total_header="X-Total-Count")
    with pytest.raises(ConfigError, match="crm /customers has no until_param.*set until_param on the RestSource"):
        source.before("2026-01-01")


# Errors that name the real cause; one failed request is one failure to the breaker ------------------------------

from interlink.connectors.breaker import CircuitBreaker  # noqa: E402


def refused(calls: list[str]):
    """A handler that refuses every connection, recording the host asked."""

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.netloc.decode())
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    return handler


@pytest.mark.parametrize(
    "exc, message",
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "cannot connect to crm.test:8443 (ConnectError: [Errno 111] Connection refused)"),
        (httpx.ConnectTimeout("timed out"), "cannot connect to crm.test:8443 (ConnectTimeout: timed out)"),
        (httpx.ReadTimeout(""), "no answer in time from crm.test:8443 (ReadTimeout)"),
        (httpx.ReadError(f"reset, key {KEY}"), "connection to crm.test:8443 lost (ReadError: reset, key ***)"),
    ],
    ids=["refused", "connect timeout", "read timeout", "reset"],
)
def test_a_transport_failure_names_the_host_the_cause_and_the_attempts_but_no_secret(exc, message):
    def handler(request: httpx.Request) -> httpx.Response:
        exc.request = request
        raise exc

    rest = RestClient(
        "crm", "https://svc:hunter2@crm.test:8443/api", max_attempts=3, transport=httpx.MockTransport(handler),
        secrets=(KEY,), sleep=[].append,
    )
    with rest, pytest.raises(RetriableError) as raised:
        rest.get_json("/customers", {"api_key": KEY})
    assert str(raised.value) == f"crm: GET /api/customers: {message} after 3 attempts"
    assert not raised.value.opened_circuit
    assert "hunter2" not in str(raised.value) and KEY not in str(raised.value)


def test_a_next_page_on_another_host_is_named_by_its_own_host():
    calls: list[str] = []
    with RestClient("crm", "https://crm.test", max_attempts=1, transport=httpx.MockTransport(refused(calls))) as rest:
        with pytest.raises(RetriableError, match=r"^crm: GET /page/2: cannot connect to cdn\.crm\.test \(ConnectError: .*\) after 1 attempt$"):
            rest.get_json("https://cdn.crm.test/page/2")
    assert calls == ["cdn.crm.test"]


def test_a_failed_request_counts_once_on_the_breaker_however_many_attempts_it_took():
    calls: list[str] = []
    breaker = CircuitBreaker("crm", failure_threshold=2, cooldown_s=60, counts=lambda exc: isinstance(exc, RetriableError))
    rest = RestClient("crm", "https://crm.test", max_attempts=3, breaker=breaker, transport=httpx.MockTransport(refused(calls)), sleep=[].append)
    cause = r"crm: GET /customers: cannot connect to crm\.test \(ConnectError: \[Errno 111\] Connection refused\) after 3 attempts"
    with rest:
        with pytest.raises(RetriableError, match=f"^{cause}$") as first:
            rest.get_json("/customers")
        assert (len(calls), breaker.state, first.value.opened_circuit) == (3, "closed", False)  # 3 attempts, one failure

        with pytest.raises(RetriableError, match=f"^{cause}; circuit now open for 60s$") as second:
            rest.get_json("/customers")  # the second failed request reaches the threshold of 2
        assert (len(calls), breaker.state, second.value.opened_circuit) == (6, "open", True)

        with pytest.raises(CircuitOpen, match=rf"^{cause}; circuit open, failing fast for another \d+\.\ds$") as third:
            rest.get_json("/customers")
    assert len(calls) == 6  # failing fast made no request
    assert str(third.value.cause) == str(first.value)


def test_a_request_stops_retrying_once_another_request_opened_the_circuit_and_says_why():
    breaker = CircuitBreaker("crm", failure_threshold=1, cooldown_s=60, counts=lambda exc: isinstance(exc, RetriableError))
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        # meanwhile, another thread's request fails for good and opens the circuit
        breaker.record_failure(RetriableError("crm: GET /countries: cannot connect to crm.test (ConnectError: refused) after 5 attempts"))
        return httpx.Response(503)

    rest = RestClient("crm", "https://crm.test", max_attempts=5, breaker=breaker, transport=httpx.MockTransport(handler), sleep=[].append)
    with rest, pytest.raises(CircuitOpen, match=r"^crm: GET /countries: cannot connect to crm\.test .*; circuit open, failing fast"):
        rest.get_json("/customers")
    assert calls == ["/customers"]  # its second attempt failed fast
    assert (breaker.state, breaker.opened_times) == ("open", 1)


def test_after_the_cool_down_the_probe_is_one_request_with_its_retries():
    now = [0.0]
    breaker = CircuitBreaker("crm", failure_threshold=1, cooldown_s=30, counts=lambda exc: isinstance(exc, RetriableError), clock=lambda: now[0])
    answers = iter([503, 503, 503, 503, 503, 200])
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(status := next(answers))
        return httpx.Response(status, json={"ok": True})

    rest = RestClient("crm", "https://crm.test", max_attempts=2, breaker=breaker, transport=httpx.MockTransport(handler), sleep=[].append)
    with rest:
        with pytest.raises(RetriableError, match="answered 503 after 2 attempts; circuit now open for 30s"):
            rest.get_json("/x")
        now[0] = 30.0
        with pytest.raises(RetriableError, match="answered 503 after 2 attempts; circuit now open for 30s") as probe:
            rest.get_json("/x")  # the probe, with its 2 attempts, fails: open again
        assert probe.value.opened_circuit and breaker.opened_times == 2
        now[0] = 60.0
        assert rest.get_json("/x") == {"ok": True}  # the probe's first attempt fails, its second succeeds
    assert calls == [503, 503, 503, 503, 503, 200]
    assert breaker.state == "closed"


def test_a_request_refused_with_a_4xx_does_not_touch_the_breaker_nor_the_probe():
    now = [0.0]
    breaker = CircuitBreaker("crm", failure_threshold=1, cooldown_s=30, counts=lambda exc: isinstance(exc, RetriableError), clock=lambda: now[0])
    answers = iter([503, 404, 200])
    rest = RestClient(
        "crm", "https://crm.test", max_attempts=1, breaker=breaker, sleep=[].append,
        transport=httpx.MockTransport(lambda request: httpx.Response(next(answers), json={})),
    )
    with rest:
        with pytest.raises(RetriableError):
            rest.get_json("/x")
        now[0] = 30.0
        with pytest.raises(NotFound):
            rest.get_json("/x")  # the probe answered 404: says nothing of the system's health
        assert breaker.state == "half_open"
        assert rest.get_json("/x") == {}  # so the next request probes, and closes the circuit
    assert breaker.state == "closed"


# Records, not pages, are refused: a value JSON does not allow costs its record alone

HOSTILE = (
    b'{"data": [{"id": 1, "name": "Ada", "score": 1.5},'
    b' {"id": 2, "name": "Zo\xff\xfe", "score": 2.0},'  # bytes that are not UTF-8
    b' {"id": 3, "name": "Cy", "score": NaN},'
    b' {"id": 4, "name": "Di", "score": 1e400},'  # beyond a double
    b' {"id": 5, "name": "Ed", "name": "Eddie", "score": 5.0},'
    b' {"id": 6, "name": "Fe", "score": 6.0, "geo": {"lat": -Infinity}},'
    b' {"id": 7, "name": "Gu", "score": 7.0}], "next_cursor": null}'
)


def served(monkeypatch: pytest.MonkeyPatch, handler) -> None:
    """`RestClient.connect` with `handler` as the server, as `fetch_chunk` connects."""
    connect = RestClient.connect.__func__
    monkeypatch.setattr(RestClient, "connect", classmethod(lambda cls, name, connection: connect(cls, name, connection, httpx.MockTransport(handler))))


def test_a_page_with_undecodable_records_delivers_the_rest_and_refuses_each_naming_its_field(monkeypatch):
    served(monkeypatch, lambda request: httpx.Response(200, content=HOSTILE))
    source = RestSource("crm", "/customers", "updated_at", "since", paginator={"type": "cursor"}, records_path="data")
    chunk, position = fetch_chunk(source, RestConnection(base_url="https://crm.test"), None, None, 100)
    assert chunk.records["id"].tolist() == [1, 7] and chunk.records["score"].tolist() == [1.5, 7.0] and position is None
    refused = {record["id"]: (record, why) for record, why in chunk.refused}
    assert {i: why for i, (_, why) in refused.items()} == {
        2: "name: holds a lone surrogate, which is not valid Unicode text",
        3: "score: NaN is no JSON number",
        4: "score: 1e400 is beyond the range of a double",
        5: "an object names 'name' twice",
        6: "geo.lat: -Infinity is no JSON number",
    }
    assert refused[3][0] == {"id": 3, "name": "Cy", "score": "NaN"}  # the dead letter keeps the value as the answer wrote it
    assert refused[2][0]["name"].encode("utf-8", "surrogateescape") == b"Zo\xff\xfe"  # and the bytes as they came


@pytest.mark.parametrize(
    "body, refused",
    [
        (b'{"data": [{"id": 1, "a": 1, "a": 2}, {"id": 2, "a": 3}]}', ["an object names 'a' twice"]),  # orjson takes it: counted
        (b'{"data" : [{"id" : 1, "a" : 1}, {"id" : 2, "a" : 3}]}', []),  # spaced before its colons
        (b'{"data": [{"id": 1, "a": "x\\":"}, {"id": 2, "a": {"b": 1}}]}', []),  # a key-like text, a nested object
        (b'{"data": [{"id": 1, "a": "x\\u003a"}, {"id": 2, "a": 3}]}', []),  # a colon escaped: counted short, read the slow way
    ],
    ids=["a key twice", "spaced colons", "nested and quoted", "escaped colon"],
)
def test_a_key_named_twice_is_found_however_the_answer_is_written(body, refused):
    with client(lambda request: httpx.Response(200, content=body)) as rest:
        records = next(rest.paginate("/customers", CursorPaginator(), records_path="data"))
    assert [r.why for r in records if not isinstance(r, dict)] == refused
    assert len(records) == 2


def test_a_single_answer_holding_what_json_does_not_allow_is_fatal_naming_the_field():
    with client(lambda request: httpx.Response(200, content=b'{"rates": {"SEK": NaN}}')) as rest:
        with pytest.raises(FatalError, match=r"crm: GET /rates: the answer holds what JSON does not allow: rates.SEK: NaN is no JSON number"):
            rest.get_json("/rates")
