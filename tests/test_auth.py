"""Auth strategies and their configs, driven through `httpx.Client` over `httpx.MockTransport`."""

import asyncio
import base64
import threading
import traceback
from urllib.parse import parse_qs

import httpx
import pydantic
import pytest
from interlink.connectors.auth import (
    ApiKeyConfig,
    ApiKeyHeader,
    ApiKeyQuery,
    AuthConfig,
    BasicConfig,
    BearerConfig,
    BearerToken,
    OAuth2ClientCredentials,
    OAuth2ClientCredentialsConfig,
    parse_auth_config,
)
from interlink.connectors.errors import AuthError, RetriableError
from pydantic import SecretStr

SECRET = "s3cr3t-9d41c7e2b8"  # distinctive, so a leak anywhere is found
TOKEN_URL = "https://idp.test/oauth/token"


def echo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"headers": dict(request.headers), "params": dict(request.url.params)})


def get(auth: httpx.Auth, url: str = "https://api.test/items") -> dict:
    with httpx.Client(auth=auth, transport=httpx.MockTransport(echo)) as client:
        return client.get(url).json()


def test_api_key_in_a_header():
    assert get(ApiKeyHeader(SecretStr(SECRET)))["headers"]["x-api-key"] == SECRET
    assert get(ApiKeyHeader(SecretStr(SECRET), "X-Token"))["headers"]["x-token"] == SECRET


def test_api_key_in_the_query_keeps_the_other_parameters():
    assert get(ApiKeyQuery(SecretStr(SECRET)), "https://api.test/items?limit=5")["params"] == {"limit": "5", "api_key": SECRET}
    assert get(ApiKeyQuery(SecretStr(SECRET), "key"))["params"] == {"key": SECRET}


def test_bearer_token():
    assert get(BearerToken(SecretStr(SECRET)))["headers"]["authorization"] == f"Bearer {SECRET}"


def test_basic_auth_from_config_is_httpx_basic_auth():
    auth = parse_auth_config({"kind": "basic", "username": "ada", "password": SECRET}).build()
    assert isinstance(auth, httpx.BasicAuth)
    assert get(auth)["headers"]["authorization"] == "Basic " + base64.b64encode(f"ada:{SECRET}".encode()).decode()


def test_config_union_parses_plain_config_by_kind():
    configs = {
        "api_key": ({"kind": "api_key", "key": SECRET}, ApiKeyConfig, ApiKeyHeader),
        "api_key in query": ({"kind": "api_key", "key": SECRET, "location": "query"}, ApiKeyConfig, ApiKeyQuery),
        "bearer": ({"kind": "bearer", "token": SECRET}, BearerConfig, BearerToken),
        "basic": ({"kind": "basic", "username": "ada", "password": SECRET}, BasicConfig, httpx.BasicAuth),
        "oauth2": (
            {"kind": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "app", "client_secret": SECRET},
            OAuth2ClientCredentialsConfig,
            OAuth2ClientCredentials,
        ),
    }
    adapter = pydantic.TypeAdapter(AuthConfig)
    for raw, config_class, auth_class in configs.values():
        config = adapter.validate_python(raw)
        assert type(config) is config_class and type(config.build()) is auth_class
    assert get(parse_auth_config({"kind": "api_key", "key": SECRET, "location": "query", "name": "k"}).build())["params"] == {
        "k": SECRET
    }


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "digest", "token": SECRET},
        {"token": SECRET},
        {"kind": "bearer", "token": SECRET, "scope": "x"},
        {"kind": "api_key", "key": SECRET, "location": "cookie"},
        {"kind": "basic", "password": SECRET},
    ],
)
def test_config_errors_name_the_problem_but_not_the_input(raw):
    with pytest.raises(pydantic.ValidationError) as excinfo:
        parse_auth_config(raw)
    assert excinfo.value.errors() and SECRET not in str(excinfo.value)


def test_no_auth_object_or_config_shows_its_secret():
    secret = SecretStr(SECRET)
    objects = [
        ApiKeyHeader(secret),
        ApiKeyQuery(secret),
        BearerToken(secret),
        OAuth2ClientCredentials(TOKEN_URL, "app", secret, scope="read"),
        ApiKeyConfig(key=secret),
        BearerConfig(token=secret),
        BasicConfig(username="ada", password=secret),
        OAuth2ClientCredentialsConfig(token_url=TOKEN_URL, client_id="app", client_secret=secret),
    ]
    objects += [config.build() for config in objects[4:]]
    for thing in objects:
        assert SECRET not in repr(thing) and SECRET not in str(thing), thing
    for config in objects[4:8]:
        assert SECRET not in config.model_dump_json()


class Provider:
    """An identity provider issuing tok-1, tok-2, … and an API accepting the tokens in `valid`."""

    def __init__(self, expires_in: int | None = 3600, token_status: int = 200, accepts_tokens: bool = True):
        self.expires_in = expires_in
        self.accepts_tokens = accepts_tokens
        self.token_status = token_status
        self.token_requests: list[httpx.Request] = []
        self.api_calls = 0
        self.valid: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            return self.issue(request)
        self.api_calls += 1
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.accepts_tokens and token in self.valid:
            return httpx.Response(200, json={"token": token})
        return httpx.Response(401)

    def issue(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        if self.token_status != 200:
            return httpx.Response(self.token_status, json={"error": "invalid_client", "echo": request.headers["Authorization"]})
        token = f"tok-{len(self.token_requests)}"
        self.valid.add(token)
        body = {"access_token": token, "token_type": "Bearer"}
        return httpx.Response(200, json=body if self.expires_in is None else body | {"expires_in": self.expires_in})


def oauth2_client(provider: Provider, **options) -> httpx.Client:
    auth = OAuth2ClientCredentials(TOKEN_URL, "app", SecretStr(SECRET), **options)
    return httpx.Client(base_url="https://api.test", auth=auth, transport=httpx.MockTransport(provider))


def test_oauth2_fetches_one_token_for_many_requests():
    provider = Provider()
    with oauth2_client(provider, scope="read write") as client:
        assert [client.get("/items").json()["token"] for _ in range(3)] == ["tok-1"] * 3
    [token_request] = provider.token_requests
    assert token_request.method == "POST"
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert token_request.headers["Authorization"] == "Basic " + base64.b64encode(f"app:{SECRET}".encode()).decode()
    assert parse_qs(token_request.content.decode()) == {"grant_type": ["client_credentials"], "scope": ["read write"]}


def test_oauth2_refreshes_the_token_once_it_expires_less_the_leeway():
    now = [0.0]
    provider = Provider(expires_in=100)
    with oauth2_client(provider, leeway_s=30, clock=lambda: now[0]) as client:
        assert client.get("/items").json()["token"] == "tok-1"
        now[0] = 69.9
        assert client.get("/items").json()["token"] == "tok-1"
        now[0] = 70.0
        assert client.get("/items").json()["token"] == "tok-2"
    assert len(provider.token_requests) == 2 and provider.api_calls == 3


def test_oauth2_token_without_expires_in_lives_until_a_401():
    now = [0.0]
    provider = Provider(expires_in=None)
    with oauth2_client(provider, clock=lambda: now[0]) as client:
        client.get("/items")
        now[0] = 10**9
        assert client.get("/items").json()["token"] == "tok-1"
        provider.valid.clear()  # the provider revokes it
        assert client.get("/items").json()["token"] == "tok-2"


def test_oauth2_refreshes_once_on_401_and_resends():
    provider = Provider()
    with oauth2_client(provider) as client:
        client.get("/items")
        provider.valid.clear()
        response = client.get("/items")
    assert response.status_code == 200 and response.json()["token"] == "tok-2"
    assert [(r.url.path, r.status_code) for r in response.history] == [("/items", 401), ("/oauth/token", 200)]
    assert len(provider.token_requests) == 2 and provider.api_calls == 3


def test_oauth2_returns_a_second_401_as_is():
    provider = Provider(accepts_tokens=False)
    with oauth2_client(provider) as client:
        response = client.get("/items")
    assert response.status_code == 401
    assert len(provider.token_requests) == 2 and provider.api_calls == 2


@pytest.mark.parametrize(("status", "error"), [(400, AuthError), (401, AuthError), (429, RetriableError), (503, RetriableError)])
def test_a_failing_token_endpoint_is_classified_and_never_shows_the_secret(status, error):
    with oauth2_client(Provider(token_status=status)) as client, pytest.raises(error) as excinfo:
        client.get("/items")
    message = "".join(traceback.format_exception(excinfo.value))
    assert f"/oauth/token answered {status}" in message
    assert SECRET not in message and base64.b64encode(f"app:{SECRET}".encode()).decode() not in message


def test_a_token_answer_without_an_access_token_raises_auth_error():
    def idp(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=f"<html>{SECRET}</html>")

    auth = OAuth2ClientCredentials(TOKEN_URL, "app", SecretStr(SECRET))
    with httpx.Client(auth=auth, transport=httpx.MockTransport(idp)) as client, pytest.raises(AuthError) as excinfo:
        client.get("https://api.test/items")
    assert "without a usable access_token" in str(excinfo.value)
    assert SECRET not in "".join(traceback.format_exception(excinfo.value))


class WatchedLock:
    """A lock that tells how many threads wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._waiting = 0

    def __enter__(self) -> None:
        with self._changed:
            self._waiting += 1
            self._changed.notify_all()
        self._lock.acquire()
        with self._changed:
            self._waiting -= 1

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def wait_for_waiters(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._waiting >= count, timeout=10)


def test_oauth2_threads_wait_for_one_token_fetch_and_share_it():
    threads = 8
    provider = Provider()
    auth = OAuth2ClientCredentials(TOKEN_URL, "app", SecretStr(SECRET))
    lock = auth._lock = WatchedLock()

    def idp_that_waits_for_every_thread(request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            assert lock.wait_for_waiters(threads - 1)  # the others queue while the token is fetched
        return provider(request)

    tokens: list[str] = []
    with httpx.Client(auth=auth, transport=httpx.MockTransport(idp_that_waits_for_every_thread)) as client:
        workers = [
            threading.Thread(target=lambda: tokens.append(client.get("https://api.test/items").json()["token"]))
            for _ in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert tokens == ["tok-1"] * threads and len(provider.token_requests) == 1


def test_oauth2_works_with_an_async_client():
    provider = Provider()

    async def run() -> list[int]:
        auth = OAuth2ClientCredentials(TOKEN_URL, "app", SecretStr(SECRET))
        async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(provider)) as client:
            first = await client.get("https://api.test/items")
            provider.valid.clear()
            second = await client.get("https://api.test/items")
        return [first.status_code, second.status_code]

    assert asyncio.run(run()) == [200, 200]
    assert len(provider.token_requests) == 2


def test_oauth2_needs_an_absolute_token_url():
    with pytest.raises(ValueError, match="absolute URL"):
        OAuth2ClientCredentials("/oauth/token", "app", SecretStr(SECRET))
