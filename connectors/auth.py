"""Authentication strategies, as `httpx.Auth` flows, and the typed configs that build them.

Secrets are `SecretStr` throughout: no strategy or config shows one in its repr.
"""

import math
import threading
import time
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, nullcontext
from typing import Annotated, Any, Literal

import httpx
from interlink.connectors.errors import AuthError, RetriableError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter

Flow = Generator[httpx.Request, httpx.Response, None]


class ApiKeyHeader(httpx.Auth):
    """Sends an API key in a request header (`X-API-Key` by default)."""

    def __init__(self, key: SecretStr, header: str = "X-API-Key"):
        self._key = key
        self._header = header

    def auth_flow(self, request: httpx.Request) -> Flow:
        request.headers[self._header] = self._key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return f"ApiKeyHeader(header={self._header!r}, key='**********')"


class ApiKeyQuery(httpx.Auth):
    """Sends an API key as a query parameter (`api_key` by default).

    The key is then part of the request URL, which httpx logs at INFO level.
    """

    def __init__(self, key: SecretStr, param: str = "api_key"):
        self._key = key
        self._param = param

    def auth_flow(self, request: httpx.Request) -> Flow:
        request.url = request.url.copy_merge_params({self._param: self._key.get_secret_value()})
        yield request

    def __repr__(self) -> str:
        return f"ApiKeyQuery(param={self._param!r}, key={self._key!r})"


class BearerToken(httpx.Auth):
    """Sends a static token as `Authorization: Bearer <token>`."""

    def __init__(self, token: SecretStr):
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Flow:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return f"BearerToken(token={self._token!r})"


class OAuth2ClientCredentials(httpx.Auth):
    """OAuth 2.0 client credentials grant (RFC 6749 §4.4): a bearer token, fetched and shared.

    The token request is yielded from the flow, so it goes through the client's own transport.
    A token is refreshed once it expires (less `leeway_s`); without `expires_in` it lives until the
    API answers 401. A 401 refreshes the token once and resends; a second 401 is returned as is.
    Threads using one `httpx.Client` share the token and fetch it one at a time.
    """

    requires_response_body = True

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str | None = None,
        leeway_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not httpx.URL(token_url).is_absolute_url:
            raise ValueError(f"token_url must be an absolute URL, got {token_url!r}")
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._leeway_s = leeway_s
        self._clock = clock
        self._lock = threading.Lock()
        self._token: SecretStr | None = None
        self._expires_at = math.inf

    def sync_auth_flow(self, request: httpx.Request) -> Flow:
        """The flow for `httpx.Client`: a lock makes threads wait for one token fetch."""
        return self._flow(request, self._lock)

    def auth_flow(self, request: httpx.Request) -> Flow:
        """The flow for `httpx.AsyncClient`: one event loop needs no lock."""
        return self._flow(request, nullcontext())

    def _flow(self, request: httpx.Request, lock: AbstractContextManager) -> Flow:
        with lock:
            token = yield from self._valid_token(rejected=None)
        response = yield _with_bearer(request, token)
        if response.status_code == 401:
            with lock:
                token = yield from self._valid_token(rejected=token)
            yield _with_bearer(request, token)

    def _valid_token(self, rejected: SecretStr | None) -> Generator[httpx.Request, httpx.Response, SecretStr]:
        """The shared token, fetched anew if there is none, it has expired, or it is the one just rejected."""
        if self._token is None or self._token is rejected or self._clock() >= self._expires_at:
            issued_at = self._clock()
            response = yield self._token_request()
            response.read()
            self._token, expires_in = _parse_token(response)
            self._expires_at = issued_at + expires_in - self._leeway_s if expires_in is not None else math.inf
        return self._token

    def _token_request(self) -> httpx.Request:
        data = {"grant_type": "client_credentials"}
        if self._scope:
            data["scope"] = self._scope
        request = httpx.Request("POST", self._token_url, data=data, headers={"Accept": "application/json"})
        return next(httpx.BasicAuth(self._client_id, self._client_secret.get_secret_value()).auth_flow(request))

    def __repr__(self) -> str:
        return (
            f"OAuth2ClientCredentials(token_url={self._token_url!r}, client_id={self._client_id!r}, "
            f"client_secret={self._client_secret!r}, scope={self._scope!r})"
        )


def _with_bearer(request: httpx.Request, token: SecretStr) -> httpx.Request:
    request.headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    return request


def _parse_token(response: httpx.Response) -> tuple[SecretStr, float | None]:
    """The access token and its lifetime in seconds; `AuthError` naming the endpoint's path if there is none."""
    where = f"OAuth2 token request: {response.request.url.path} answered {response.status_code}"
    if response.status_code == 429 or response.status_code >= 500:
        raise RetriableError(where)
    if not response.is_success:
        raise AuthError(where)
    try:
        body = response.json()
        token, expires_in = body["access_token"], body.get("expires_in")
        lifetime = None if expires_in is None else float(expires_in)
    except (ValueError, LookupError, TypeError):
        token = None
    if not isinstance(token, str) or not token:
        raise AuthError(f"{where} without a usable access_token")
    return SecretStr(token), lifetime


class _AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class ApiKeyConfig(_AuthConfig):
    """An API key in a header (`X-API-Key` unless `name` says) or a query parameter (`api_key` unless `name` says)."""

    kind: Literal["api_key"] = "api_key"
    key: SecretStr
    location: Literal["header", "query"] = "header"
    name: str | None = None

    def build(self) -> httpx.Auth:
        cls = ApiKeyHeader if self.location == "header" else ApiKeyQuery
        return cls(self.key, self.name) if self.name else cls(self.key)


class BearerConfig(_AuthConfig):
    """A static bearer token."""

    kind: Literal["bearer"] = "bearer"
    token: SecretStr

    def build(self) -> httpx.Auth:
        return BearerToken(self.token)


class BasicConfig(_AuthConfig):
    """HTTP Basic authentication."""

    kind: Literal["basic"] = "basic"
    username: str
    password: SecretStr

    def build(self) -> httpx.Auth:
        return httpx.BasicAuth(self.username, self.password.get_secret_value())


class OAuth2ClientCredentialsConfig(_AuthConfig):
    """The OAuth 2.0 client credentials grant."""

    kind: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    token_url: str
    client_id: str
    client_secret: SecretStr
    scope: str | None = None

    def build(self) -> httpx.Auth:
        return OAuth2ClientCredentials(self.token_url, self.client_id, self.client_secret, self.scope)


AuthConfig = Annotated[
    ApiKeyConfig | BearerConfig | BasicConfig | OAuth2ClientCredentialsConfig,
    Field(discriminator="kind"),
]

_auth_config = TypeAdapter(AuthConfig, config=ConfigDict(hide_input_in_errors=True))


def parse_auth_config(raw: Any) -> AuthConfig:
    """The typed config for plain config like `{"kind": "bearer", "token": ...}`.

    Its `ValidationError` leaves out the input, and so the secrets in it. Pydantic takes that choice
    from the outermost model only: a model that embeds `AuthConfig` needs `hide_input_in_errors=True`.
    """
    return _auth_config.validate_python(raw)
