"""REST APIs over one pooled `httpx.Client`: timeouts, classified errors, retries, pagination."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from connectors.auth import ApiKeyHeader
from connectors.errors import AuthError, FatalError, NotFound, RetriableError
from connectors.pagination import Paginator
from interlink.settings import RestConnection

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 60.0


class RestClient:
    """A client for one HTTP API. Use it as a context manager; it closes its pool on exit.

    Every request is classified once: 429, 5xx, timeouts and connection errors are retried
    with exponential backoff and jitter (honouring `Retry-After`) up to `max_attempts`;
    401/403 raise `AuthError` and other 4xx `FatalError` at once.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        transport: httpx.BaseTransport | None = None,
        secrets: tuple[str, ...] = (),
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.name = name
        self._secrets = secrets
        self._client = httpx.Client(
            base_url=base_url,
            auth=auth,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            transport=transport,
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
        """A client for a configured connection."""
        auth = ApiKeyHeader(connection.api_key) if connection.api_key else None
        secrets = (connection.api_key.get_secret_value(),) if connection.api_key else ()
        return cls(
            name,
            connection.base_url or "",
            auth=auth,
            timeout_s=connection.timeout_s,
            max_attempts=connection.max_attempts,
            transport=transport,
            secrets=secrets,
        )

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET `path` and decode its JSON body, retrying what is retriable."""
        return self._retrying(self._get_once, path, params)

    def paginate(self, path: str, paginator: Paginator, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Yield the body of each page of `path`, as long as the paginator finds another."""
        params = dict(params or {})
        while paginator.has_next_page:
            body = self.get_json(path, paginator.update_params(params))
            paginator.update_state(body)
            yield body

    def _get_once(self, path: str, params: dict[str, Any] | None) -> Any:
        try:
            response = self._client.get(path, params=params)
        except (httpx.TimeoutException, httpx.NetworkError) as exc:
            raise RetriableError(f"{self.name}: GET {path}: {type(exc).__name__}") from None
        _raise_for_status(self.name, response, self._secrets)
        return response.json()

    def _log_retry(self, state: RetryCallState) -> None:
        log.warning(
            "%s: attempt %d failed (%s); retrying in %.1fs",
            self.name, state.attempt_number, state.outcome.exception(), state.upcoming_sleep,
        )


def _raise_for_status(name: str, response: httpx.Response, secrets: tuple[str, ...]) -> None:
    status = response.status_code
    if status < 400:
        return
    where = f"{name}: {response.request.method} {response.request.url.path} answered {status}"
    if status == 429 or status >= 500:
        raise RetriableError(where, retry_after=_retry_after(response))
    excerpt = _redact(response.text[:200], secrets)
    if status in (401, 403):
        raise AuthError(f"{where}: the credentials were rejected; check the {name} connection's API key ({excerpt})")
    raise (NotFound if status == 404 else FatalError)(f"{where}: {excerpt}")


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


_backoff = wait_exponential_jitter(initial=0.5, max=30.0)


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RetriableError) and exc.retry_after is not None:
        return exc.retry_after
    return _backoff(state)
