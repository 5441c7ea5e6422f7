"""REST APIs over one pooled `httpx.Client`: auth, timeouts, pacing, circuit breaking, retries.

Every request is classified once, here: 429, 5xx, timeouts and connection errors are
retried with exponential backoff and jitter (honouring `Retry-After`) up to
`max_attempts`; 401/403 raise `AuthError`, 404 `NotFound` and other 4xx `FatalError`
at once. A request that still fails raises its last error, which names the cause, the host for
a transport error, and the attempts made: `crm: GET /customers: cannot connect to
10.0.0.5:8080 (ConnectError: [Errno 111] Connection refused) after 5 attempts`.

Requests are paced by the connection's rate budget. To the connection's circuit breaker a
request is one call, whatever its attempts: `breaker_threshold` consecutive failed requests
open the circuit (so the default 5 exceeds the 3 attempts of a task that retries twice, and
those retries are all made). The request whose failure opens the circuit raises its own error,
marked `opened_circuit` and ending `; circuit now open for 30s`; later requests fail fast with
`CircuitOpen`, whose message leads with that error, until a probe request succeeds.

Each attempt is measured per connection (`interlink.connectors.telemetry`): its duration, its answer's status class, and each retry.
"""

from __future__ import annotations

import functools
import html
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Any

import httpx
from interlink.connectors.auth import AuthConfig
from interlink.connectors.breaker import CircuitBreaker, breaker_for
from interlink.connectors.connections import RestConnection
from interlink.connectors.decoding import decode, reasons, undecodable
from interlink.connectors.errors import AuthError, CircuitOpen, FatalError, NotFound, RetriableError
from interlink.connectors.masking import SECRET_NAME, cut, mask_secrets
from interlink.connectors.pagination import PageRequest, Paginator
from interlink.connectors.ratelimit import Limiter, RateLimiter, SharedRateLimit
from interlink.connectors.telemetry import HttpMetrics
from interlink.connectors.threads import mapped
from pydantic import SecretStr
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 60.0
SUMMARY_CHARS, SUMMARY_WINDOW = 100, 20_000  # an answer's summary in a message, and how much of the body it reads
TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
TAG = re.compile(r"<!--.*?-->|<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default certificate check, made once per process: loading the CA bundle costs ~40 ms per client."""
    return httpx.create_ssl_context()


class RestClient:
    """A client for one HTTP API. Use it as a context manager; it closes its pool on exit."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        limiter: Limiter | None = None,
        breaker: CircuitBreaker | None = None,
        transport: httpx.BaseTransport | None = None,
        secrets: tuple[str, ...] = (),
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.name = name
        self._secrets = secrets
        self._limiter = limiter
        self._breaker = breaker
        self._metrics = HttpMetrics(name)
        self._client = httpx.Client(
            base_url=base_url,
            auth=auth,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            transport=transport,
            verify=_tls(),
        )
        self._retrying = Retrying(
            retry=retry_if_exception_type(RetriableError),
            stop=stop_after_attempt(max_attempts),
            wait=_wait,
            before_sleep=self._log_retry,
            sleep=sleep,
            reraise=True,
        )

    @classmethod
    def connect(cls, name: str, connection: RestConnection, transport: httpx.BaseTransport | None = None) -> RestClient:
        """A client for a configured connection, with the budget and breaker its process shares."""
        return cls(
            name,
            connection.base_url or "",
            auth=auth_for(name, connection.auth) if connection.auth else None,
            timeout_s=connection.timeout_s,
            max_attempts=connection.max_attempts,
            limiter=limiter_for(name, connection.rate_per_s, connection.max_concurrency, connection.shared_rate_limit),
            breaker=breaker_for(name, connection.base_url or "", connection.breaker_threshold, connection.breaker_cooldown_s),
            transport=transport,
            secrets=(
                *(v.get_secret_value() for _, v in connection.auth or () if isinstance(v, SecretStr)),
                *([password] if (password := httpx.URL(connection.base_url or "").password) else []),
            ),
        )

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET `path` and decode its JSON body, which must hold only values JSON allows."""
        response = self.request("GET", path, params=params)
        body, strict = self._json(response)
        if not strict and (why := reasons(body)):
            raise FatalError(f"{self.name}: GET {response.request.url.path}: the answer holds what JSON does not allow: {'; '.join(why)}")
        return body

    def send(self, method: str, path: str, body: Any, idempotency_key: str | None = None) -> httpx.Response:
        """Deliver `body` as JSON; with `idempotency_key`, a receiver that honours it applies a retry once."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request(method, path, json=body, headers=headers)

    def paginate(
        self,
        path: str,
        paginator: Paginator,
        params: dict[str, Any] | None = None,
        records_path: str | None = None,
        concurrency: int = 1,
    ) -> Iterator[list[Any]]:
        """Yield the records of each page of `path` until the last page.

        The records are at the dotted `records_path`; without one, a top-level array is the records, or else the
        body's only list-valued key, found on the first page and kept for the rest. With `concurrency` > 1 and a
        paginator that knows the pages `ahead`, that many pages are fetched at once (each still within the rate
        budget) and yielded in order. A record holding what JSON does not allow comes as a
        `interlink.connectors.decoding.Undecodable`, naming its fields, for that record alone to be refused.
        """
        where = f"{self.name} {path}"
        request = PageRequest(path, dict(params or {}))
        paginator.init_request(request)
        ahead = getattr(paginator, "ahead", None) if concurrency > 1 else None
        with ThreadPoolExecutor(concurrency, thread_name_prefix=self.name) if ahead else nullcontext() as pool:
            batch = [request]
            while True:
                for response, (body, strict) in mapped(pool, self._get, batch) if len(batch) > 1 else [self._get(batch[0])]:
                    if records_path is None:
                        records_path = _find_records(where, body)
                    records = _at(where, body, records_path) if strict else undecodable(_at(where, body, records_path))
                    with self._naming(where):
                        paginator.update_state(response, body, records)
                    yield paginator.unseen(records) if hasattr(paginator, "unseen") else records
                    if not paginator.has_next_page:
                        return
                paginator.update_request(request)
                batch = ahead(request, concurrency) if ahead else [request]

    @contextmanager
    def _naming(self, where: str) -> Iterator[None]:
        """A paginator's error, naming the connection and path, without the connection's secrets."""
        try:
            yield
        except FatalError as exc:
            raise type(exc)(f"{where}: {mask_secrets(str(exc), self._secrets)}").with_traceback(exc.__traceback__) from None

    def _get(self, request: PageRequest) -> tuple[httpx.Response, tuple[Any, bool]]:
        response = self.request("GET", request.url, params=request.params or None)  # {} would drop a URL's query
        return response, self._json(response)

    def _json(self, response: httpx.Response) -> tuple[Any, bool]:
        """The answer decoded, and whether it is strict JSON (`interlink.connectors.decoding.decode`): a lone surrogate escape
        (`"\\ud800"`, as JavaScript's `JSON.stringify` writes one), bytes that are not UTF-8, NaN, 1e400 or a key named
        twice cost their record, not the page. An answer that is no JSON at all (a login page, a web site where the API
        was meant) names the setting to check."""
        try:
            return decode(response.content)
        except ValueError:
            kind = response.headers.get("content-type", "").split(";")[0].strip()
            said = f"{kind} that is not valid JSON" if "json" in kind else f"{kind or 'an undeclared type'}, not JSON"
            base = mask_secrets(str(self._client.base_url).rstrip("/"), self._secrets)
            raise FatalError(
                f"{self.name}: {response.request.method} {response.request.url.path} answered {said} "
                f"({summary(response, self._secrets) or 'empty'}): check the {self.name} connection's base_url ({base}) and the path"
            ) from None

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, paced, retried while retriable; to the breaker it is one call, however many attempts it took.

        A request that fails after all its attempts raises its last error, saying how many attempts were made, and,
        if this failure opened the circuit, for how long (`opened_circuit`: a retry now would only fail fast).
        """
        breaker = self._breaker
        probe = breaker.before_call() if breaker else False
        attempts = 0

        def attempt() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            if breaker and attempts > 1:  # before the rate limiter: an open circuit must not spend the rate budget
                breaker.check()  # another request opened the circuit meanwhile: stop here
            return self._attempt(method, url, **kwargs)

        try:
            response = self._retrying(attempt)
        except RetriableError as exc:
            error = RetriableError(f"{exc} after {attempts} attempt{'' if attempts == 1 else 's'}", exc.retry_after, status=exc.status)
            if breaker and self._recorded(breaker, probe, error):
                error = RetriableError(
                    f"{error}; circuit now open for {breaker.cooldown_s:g}s", exc.retry_after, opened_circuit=True, status=exc.status
                )
            raise error.with_traceback(exc.__traceback__) from None
        except BaseException as exc:
            if breaker:
                self._recorded(breaker, probe, exc)
            raise
        if breaker:
            breaker.record_success()
        return response

    @staticmethod
    def _recorded(breaker: CircuitBreaker, probe: bool, exc: BaseException) -> bool:
        """Record a failed request on the breaker if its error counts; True when it opened the circuit."""
        if isinstance(exc, CircuitOpen) or not breaker.counts(exc):  # failing fast, or a failure that says nothing of health
            breaker.release(probe)
            return False
        return breaker.record_failure(exc)

    def _attempt(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        with self._limiter.slot() if self._limiter else nullcontext():
            started = time.perf_counter()
            try:
                response = self._client.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                self._metrics.observe(method, None, time.perf_counter() - started)
                if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
                    raise RetriableError(self._transport_failure(method, url, exc)) from None
                # e.g. a base URL without http(s)://: no retry will help
                raise FatalError(f"{self.name}: {method} {httpx.URL(url).path}: {type(exc).__name__}: {exc}") from None
            self._metrics.observe(method, response.status_code, time.perf_counter() - started)
            _raise_for_status(self.name, response, self._secrets)
            return response

    def _transport_failure(self, method: str, url: str, exc: httpx.TransportError) -> str:
        """What went wrong and with which host: `crm: GET /customers: cannot connect to 10.0.0.5:443 (ConnectError: …)`.

        The host and port only, never the rest of the URL (its user part or query may hold a secret).
        """
        try:
            target = exc.request.url  # the URL as sent: the base URL's path included
        except RuntimeError:  # raised without its request (httpx sets it on every error it raises)
            target = httpx.URL(url) if httpx.URL(url).is_absolute_url else self._client.base_url.copy_with(path=httpx.URL(url).path)
        host = target.netloc.decode("ascii", "replace")
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            what = f"cannot connect to {host}"
        elif isinstance(exc, httpx.TimeoutException):
            what = f"no answer in time from {host}"
        else:
            what = f"connection to {host} lost"
        detail = mask_secrets(str(exc), self._secrets)
        return f"{self.name}: {method} {target.path}: {what} ({type(exc).__name__}{': ' + detail if detail else ''})"

    def _log_retry(self, state: RetryCallState) -> None:
        self._metrics.retried()
        log.warning(
            "%s: attempt %d failed (%s); retrying in %.1fs",
            self.name, state.attempt_number, state.outcome.exception(), state.upcoming_sleep,
        )


_AUTHS: dict[tuple, httpx.Auth] = {}
_LIMITERS: dict[tuple, Limiter] = {}
_REGISTRY_LOCK = threading.Lock()


def auth_for(name: str, config: AuthConfig) -> httpx.Auth:
    """The auth of connection `name`, one per process, so a token fetched once serves every task of a run."""
    key = (name, *(value for _, value in config))
    with _REGISTRY_LOCK:
        if key not in _AUTHS:
            _AUTHS[key] = config.build()
        return _AUTHS[key]


def limiter_for(name: str, rate_per_s: float | None, max_concurrency: int | None, shared: str | None) -> Limiter | None:
    """The request budget of connection `name`, one per process so every thread of a run shares it."""
    if not (shared or rate_per_s):
        return None
    key = (name, rate_per_s, max_concurrency, shared)
    with _REGISTRY_LOCK:
        if key not in _LIMITERS:
            _LIMITERS[key] = (
                SharedRateLimit(shared, strict=True) if shared
                else RateLimiter(rate_per_s, burst=max(1, int(rate_per_s)), max_concurrency=max_concurrency)
            )
        return _LIMITERS[key]


def _find_records(where: str, body: Any) -> str:
    """Where the records are when no `records_path` is set: "" for a top-level array, else the body's one list."""
    if isinstance(body, list):
        return ""
    lists = _lists(body)
    if len(lists) != 1:
        raise FatalError(
            f"{where}: no records_path is set and the answer is {_shape(body)}, not a top-level array nor an object "
            f"with one list; {_fix(body)}"
        )
    log.debug("%s: the records are at %r", where, lists[0])
    return lists[0]


def _at(where: str, body: Any, path: str) -> list[Any]:
    """The records at the dotted `path` ("" for the top level)."""
    records = body
    for part in path.split(".") if path else ():
        records = records.get(part) if isinstance(records, dict) else None
    if not isinstance(records, list):
        raise FatalError(
            f"{where}: expected a list of records at {path or 'the top level'!r}, got {type(records).__name__}; "
            f"the answer is {_shape(body)}: {_fix(body)}"
        )
    return records


def _shape(body: Any) -> str:
    """The body's shape for a message: its top-level keys at most, never a value (values may be personal data)."""
    if isinstance(body, list):
        return "a top-level array"
    if isinstance(body, dict):
        keys = list(body)
        return f"an object with keys {keys[:20]}{' and more' if len(keys) > 20 else ''}"
    return type(body).__name__


def _fix(body: Any) -> str:
    if isinstance(body, list):
        return "set records_path=None on the RestSource, so the top-level array is taken"
    if lists := _lists(body):
        return f"set records_path to one of {lists} on the RestSource"
    return "set records_path=... on the RestSource to the dotted path of the list of records"


def _lists(body: Any) -> list[str]:
    """The top-level keys of `body` that hold a list."""
    return [key for key, value in body.items() if isinstance(value, list)] if isinstance(body, dict) else []


def _raise_for_status(name: str, response: httpx.Response, secrets: tuple[str, ...]) -> None:
    status = response.status_code
    if status < 400:
        return
    where = f"{name}: {response.request.method} {response.request.url.path} answered {status}"
    if status == 429 or status >= 500:
        raise RetriableError(where, retry_after=_retry_after(response), status=status)
    excerpt = summary(response, secrets)
    if status in (401, 403):
        raise AuthError(f"{where}: the credentials were rejected; check the {name} connection's credentials ({excerpt})", status)
    raise (NotFound if status == 404 else FatalError)(f"{where}: {excerpt}", status)


def summary(response: httpx.Response, secrets: tuple[str, ...] = ()) -> str:
    """What an answer says, on one line, masked (with the secrets the request carried): an HTML page by its
    `<title>` (or its text), any other body with its whitespace collapsed; at most `SUMMARY_CHARS`."""
    text = response.text[:SUMMARY_WINDOW]
    if "html" in response.headers.get("content-type", "") or text.lstrip().startswith("<"):
        title = TITLE.search(text)
        text = html.unescape(title.group(1) if title else TAG.sub(" ", text))
    return cut(" ".join(text.split()), SUMMARY_CHARS, (*secrets, *_credentials(response.request)))


def _credentials(request: httpx.Request) -> list[str]:
    """The secrets a request carried, which a server may echo: credential headers, secret query parameters."""
    sent = [v for k, v in request.headers.items() if SECRET_NAME.search(k)] + [v for k, v in request.url.params.multi_items() if SECRET_NAME.search(k)]
    return sent + [v.split(None, 1)[1] for v in sent if " " in v.strip()]  # `Bearer <token>`: the token alone too


def _retry_after(response: httpx.Response) -> float | None:
    """The server's `Retry-After` in seconds, capped; None when absent or not a usable number of seconds."""
    try:
        seconds = float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None  # absent, or an HTTP-date: fall back to our own backoff
    return min(seconds, MAX_RETRY_AFTER_S) if 0 <= seconds else None  # NaN fails the comparison too


_backoff = wait_exponential_jitter(initial=0.5, max=30.0)


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RetriableError) and exc.retry_after is not None:
        return exc.retry_after
    return _backoff(state)
