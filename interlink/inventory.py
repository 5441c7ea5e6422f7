"""The connection inventory: every configured connection, who uses it, and whether it answers now.

Behind `interlink connectors`. Each connection gets one quick live check, run concurrently:
a REST API one GET of its health path (a single attempt), a SQL database `SELECT 1`, a folder
that it exists and is writable. Reasons come from our own, already redacted, error messages
and from masked URLs, so no secret reaches the output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connectors.amqp import ping
from connectors.errors import ConnectorError, NotFound, RetriableError
from connectors.masking import mask_secrets
from connectors.rest import RestClient
from connectors.sql import create_engine
from interlink.settings import Connection, FolderConnection, QueueConnection, RestConnection, Settings, SqlConnection


def inventory(settings: Settings, users: dict[str, list[str]]) -> list[dict]:
    """One entry per configured connection, by name: `name, kind, target, used_by, healthy, latency_ms, reason`;
    `users` names the integrations that use each connection."""
    names = settings.names()
    with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
        return list(pool.map(lambda name: _entry(settings, name, users.get(name, [])), names))


def _entry(settings: Settings, name: str, used_by: list[str]) -> dict:
    raw = settings.connections[name]
    entry = {"name": name, "kind": raw.kind, "target": _target(raw), "used_by": used_by}
    try:
        connection = settings.connection(name)
    except ValueError as exc:  # a missing setting (`ConfigError`) or a missing Prefect Secret block
        return entry | {"healthy": False, "latency_ms": None, "reason": str(exc)}
    timer = _Timer()
    reason = CHECKS[connection.kind](name, connection, timer)
    return entry | {"target": _target(connection), "healthy": reason is None, "latency_ms": timer.ms, "reason": reason}


class _Timer:
    """Times the probe itself, not the setup around it (an HTTP client or an engine costs tens of ms)."""

    ms: float | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.ms = round((time.perf_counter() - started) * 1000, 1)


def _target(connection: Connection) -> str:
    """Where the connection points, with any password or secret parameter masked."""
    return connection.display


def _check_rest(name: str, connection: RestConnection, timer: _Timer) -> str | None:
    """One GET of the health path, without retries; None if it answers below 400."""
    try:
        with RestClient.connect(name, connection.model_copy(update={"max_attempts": 1})) as client, timer():
            client.request("GET", connection.health_path)
    except NotFound as exc:
        return f"health path not found: {exc}"
    except RetriableError as exc:
        return f"unreachable: {exc}"
    except ConnectorError as exc:  # credentials rejected, another 4xx, an open circuit
        return str(exc)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # e.g. a base URL that is not http(s)
        return mask_secrets(f"{name}: {type(exc).__name__}: {exc}")
    return None


def _check_sql(name: str, connection: SqlConnection, timer: _Timer) -> str | None:
    """`SELECT 1`; on failure the first line of the error, with the URL's password masked."""
    problem = sql_problem(connection.url, timer)
    return f"{name}: {problem}" if problem else None


def sql_problem(url: str, timer: Callable[[], AbstractContextManager] = nullcontext) -> str | None:
    """Why a `SELECT 1` on the database at `url` fails (the error's first line, password masked); None if it works."""
    try:
        engine = create_engine(url)
        try:
            with timer(), engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # drivers raise many kinds; any of them means unhealthy
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        try:
            password = make_url(url).password
        except ArgumentError:
            password = None
        return mask_secrets(message, [password] if password else [])
    return None


def _check_folder(name: str, connection: FolderConnection, timer: _Timer) -> str | None:
    """None if the folder exists and is writable."""
    path = connection.path
    with timer():
        is_dir, exists, writable = path.is_dir(), path.exists(), os.access(path, os.W_OK | os.X_OK)
    if not is_dir:
        return f"{name}: folder {path} does not exist" if not exists else f"{name}: {path} is not a folder"
    return None if writable else f"{name}: folder {path} is not writable"


def _check_queue(name: str, connection: QueueConnection, timer: _Timer) -> str | None:
    """None if the broker accepts a connection; else the error's kind, without the URL."""
    try:
        with timer():
            ping(connection.url)
    except Exception as exc:  # noqa: BLE001 - pika raises many kinds; any of them means unhealthy
        return f"{name}: {type(exc).__name__}"
    return None


CHECKS: dict[str, Callable[[str, Connection, _Timer], str | None]] = {
    "rest": _check_rest,
    "sql": _check_sql,
    "folder": _check_folder,
    "queue": _check_queue,
}
