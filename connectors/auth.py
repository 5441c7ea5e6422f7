"""Authentication strategies, as `httpx.Auth` flows."""

from collections.abc import Generator

import httpx
from pydantic import SecretStr


class ApiKeyHeader(httpx.Auth):
    """Sends an API key in a request header (`X-API-Key` by default)."""

    def __init__(self, key: SecretStr, header: str = "X-API-Key"):
        self._key = key
        self._header = header

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return f"ApiKeyHeader(header={self._header!r}, key='**********')"
