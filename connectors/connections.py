"""Typed connection settings: what a connector needs to reach one system.

A connection is declared with its `kind` (`rest`, `sql`, `folder`, `queue`). Where it is (`base_url`,
`url`, `path`) may come later than the declaration (from the environment, say), so it is
optional here and required by `require()` when the connection is used. Unknown fields are
refused, so a misspelt setting fails instead of being ignored.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from interlink.connectors.auth import AuthConfig
from interlink.connectors.masking import mask_url
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.engine import make_url

LOCATION = {"rest": "base_url", "sql": "url", "folder": "path", "queue": "url"}  # the field that says where a system is


class _Connection(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, values: object) -> object:
        """A blank value (`INTERLINK_CRM__BASE_URL=`) is no value."""
        if isinstance(values, dict):
            return {k: None if isinstance(v, str) and not v.strip() else v for k, v in values.items()}
        return values

    def missing(self) -> str | None:
        """The field that says where the system is, if it is not set."""
        field = LOCATION[self.kind]
        return field if getattr(self, field) is None else None


class RestConnection(_Connection):
    """An HTTP API (any password or secret parameter in its URL is masked on display): where it is, how to authenticate, and how hard to push it."""

    kind: Literal["rest"] = "rest"
    base_url: str | None = Field(None, pattern=r"^https?://[^/\s]+")
    auth: AuthConfig | None = None
    timeout_s: float = Field(10.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    rate_per_s: float | None = Field(None, gt=0)
    max_concurrency: int | None = Field(None, ge=1)
    shared_rate_limit: str | None = None  # a Prefect global concurrency limit shared by every flow using this API
    breaker_threshold: int = Field(5, ge=1)
    breaker_cooldown_s: float = Field(30.0, ge=0)
    health_path: str = "/"  # a cheap GET that needs auth, for the health check

    @property
    def display(self) -> str:
        return mask_url(self.base_url) if self.base_url else "(not set)"

    def dataset(self, path: str | None) -> tuple[str, str]:
        """Lineage's (namespace, name) of `path` on this API: `https://host:port` and the path under the base URL."""
        base = urlsplit(self.base_url or "")
        return _server(base.scheme, base.hostname, base.port), base.path.rstrip("/") + "/" + (path or "").split("?")[0].lstrip("/")


class SqlConnection(_Connection):
    """A SQL database, as a SQLAlchemy URL (any password or secret parameter in it is masked on display)."""

    kind: Literal["sql"] = "sql"
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _parses(cls, url: str | None) -> str | None:
        return check_sql_url(url) if url is not None else None

    @property
    def display(self) -> str:
        return mask_url(self.url) if self.url else "(not set)"

    def dataset(self, table: str | None) -> tuple[str, str]:
        """Lineage's (namespace, name) of `table` (OpenLineage's naming: `postgres://host:port` and
        `database.schema.table`, `mysql://host:port` and `database.table`; a SQLite file is its own namespace)."""
        url = make_url(self.url or "sqlite://")
        dialect, table = url.get_backend_name(), table or "query"
        if dialect == "sqlite":
            return f"sqlite://{socket.gethostname()}{Path(url.database or ':memory:').absolute()}", table
        if dialect == "postgresql":
            return _server("postgres", url.host, url.port or 5432), f"{url.database}.{table if '.' in table else 'public.' + table}"
        scheme = "mysql" if dialect in ("mysql", "mariadb") else dialect
        return _server(scheme, url.host, url.port or (3306 if scheme == "mysql" else None)), f"{url.database}.{table}"


class FolderConnection(_Connection):
    """A folder where files are dropped or written."""

    kind: Literal["folder"] = "folder"
    path: Path | None = None

    @property
    def display(self) -> str:
        return str(self.path) if self.path else "(not set)"

    def dataset(self, name: str | None = None) -> tuple[str, str]:
        """Lineage's (namespace, name) of the folder: `file://host` and its absolute path."""
        return f"file://{socket.gethostname()}", str(Path(self.path or ".").absolute())


class QueueConnection(_Connection):
    """A message broker, as an AMQP URL (any password or secret parameter in it is masked on display)."""

    kind: Literal["queue"] = "queue"
    url: str | None = Field(None, pattern=r"^amqps?://")

    @property
    def display(self) -> str:
        return mask_url(self.url) if self.url else "(not set)"

    def dataset(self, queue: str | None) -> tuple[str, str]:
        """Lineage's (namespace, name) of `queue`: `amqp://host:port` and the virtual host's queue."""
        url = urlsplit(self.url or "amqp://")
        return _server(url.scheme, url.hostname, url.port or 5672), f"{url.path.lstrip('/') or '/'}:{queue}".lstrip("/:")


def _server(scheme: str, host: str | None, port: int | None) -> str:
    """`scheme://host:port`: where a system is, never who logs in to it."""
    return f"{scheme}://{host or 'localhost'}" + (f":{port}" if port else "")


Connection = Annotated[RestConnection | SqlConnection | FolderConnection | QueueConnection, Field(discriminator="kind")]


def check_sql_url(url: str) -> str:
    """`url` if it is a SQLAlchemy URL of a database SQLAlchemy knows; else a `ValueError` that never shows the URL."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises ArgumentError or ValueError; the text may hold a password
        raise ValueError("is not a SQLAlchemy URL: write it as dialect+driver://user@host:port/database") from None
    if "@" in (parsed.host or ""):  # SQLAlchemy ends the password at its first `@`, and the rest would show as the host
        raise ValueError("holds an `@` in its user or password: write each one there as %40")
    try:
        parsed.get_dialect()
    except Exception:  # noqa: BLE001 - NoSuchModuleError for an unknown dialect or driver
        raise ValueError(
            f"names {parsed.drivername!r}, a database SQLAlchemy does not know: use e.g. postgresql+psycopg, mysql+pymysql or sqlite"
        ) from None
    return url

