"""The connection inventory: every configured connection, who uses it, and whether it answers now.

Behind `interlink connectors`, and behind the check every command makes before it reads anything
(`check_connections`). Each connection gets one quick live check, run concurrently: a REST API one
GET of its health path (a single attempt), a SQL database `SELECT 1`, a queue a login to its broker,
a folder that it exists and may be read and written. A failure is one line naming the variable to
check and the fix: `INTERLINK_CRM__BASE_URL: cannot connect to http://127.0.0.1:9 (connection
refused): check the host and port`. Reasons come from our own, already redacted, error messages and
from masked URLs, so no secret reaches the output.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext

import httpx
import pika
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from interlink.connectors.amqp import ping
from interlink.connectors.connections import LOCATION
from interlink.connectors.errors import AuthError, ConfigError, ConnectorError, NotFound, RetriableError
from interlink.connectors.masking import mask_secrets
from interlink.connectors.rest import RestClient, summary
from interlink.connectors.sql import create_engine
from interlink.settings import PREFIX, Connection, FolderConnection, QueueConnection, RestConnection, Settings, SqlConnection
from interlink.stand_ins import stood_in


def inventory(settings: Settings, users: dict[str, list[str]]) -> list[dict]:
    """One entry per connection in `users` (connection → the integrations that use it), configured ones in the
    settings' order first: `name, kind, target, used_by, healthy, latency_ms, reason`. One used but not declared
    is unhealthy, its reason saying how to declare it."""
    names = [n for n in settings.names() if n in users] + [n for n in users if n not in settings.connections]
    with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
        return list(pool.map(lambda name: _entry(settings, name, users[name]), names))


def _entry(settings: Settings, name: str, used_by: list[str]) -> dict:
    raw = settings.connections.get(name)
    entry = {"name": name, "kind": raw.kind if raw else None, "target": _target(raw) if raw else None, "used_by": used_by}
    try:
        connection = settings.connection(name)
    except ValueError as exc:  # a missing setting (`ConfigError`) or a missing Prefect Secret block
        by, targets = stood_in(settings.home)
        if name in targets:  # not checked here: only the process standing in holds its credentials
            return entry | {"target": targets[name], "healthy": True, "latency_ms": None, "reason": f"not set: stood in for by {by}"}
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
    """One GET of the health path, a single attempt within `CHECK_TIMEOUT_S`; None if it answers below 400."""
    variable, target = _variable(name, connection), connection.display
    quick = connection.model_copy(update={"max_attempts": 1, "timeout_s": min(connection.timeout_s, CHECK_TIMEOUT_S)})
    try:
        with RestClient.connect(name, quick) as client, timer():
            response = client.request("GET", connection.health_path)
    except AuthError as exc:
        return f"{variable.removesuffix('BASE_URL')}AUTH: {_unnamed(name, exc)}"
    except NotFound as exc:
        return f"{variable.removesuffix('BASE_URL')}HEALTH_PATH: {_unnamed(name, exc)}: check the path and {variable} ({target})"
    except RetriableError as exc:
        if exc.status in BUSY:  # it answers, and asks to be called later: the run's own retries wait as asked
            return None
        if failure := _cause(exc, httpx.TransportError):
            what = "no answer in time from" if isinstance(failure, httpx.TimeoutException) else "cannot connect to"
            return f"{variable}: {what} {target} ({_why(failure)}): check the host and port"
        return f"{variable}: {_unnamed(name, exc).removesuffix(' after 1 attempt')}: {name} is failing; try again later"
    except ConnectorError as exc:  # another 4xx, a base URL httpx cannot use, an open circuit
        return f"{variable}: {_unnamed(name, exc)}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # e.g. a port out of range
        return mask_secrets(f"{variable}: {exc}: fix the URL")
    return _not_the_api(variable, target, response)


def _not_the_api(variable: str, target: str, response: httpx.Response) -> str | None:
    """Why an answer below 400 is not the API's: a redirect (to a sign-in page, another host) or an HTML page."""
    asked = f"GET {response.request.url.path}"
    if response.is_redirect:
        where = mask_secrets(response.headers.get("location", "nowhere"))
        return f"{variable}: {asked} answered {response.status_code}, redirecting to {where}: check the base URL ({target})"
    if "html" in response.headers.get("content-type", ""):
        return f"{variable}: {asked} answered an HTML page ({summary(response) or 'empty'}), not the API: check the base URL ({target})"
    return None


def _check_sql(name: str, connection: SqlConnection, timer: _Timer) -> str | None:
    """`SELECT 1`; on failure the first line of the error, with the URL's password masked."""
    return _sql_reason(_variable(name, connection), connection.url, timer)


def _sql_reason(variable: str, url: str, timer: Callable[[], AbstractContextManager] = nullcontext) -> str | None:
    problem = sql_problem(url, timer)
    return f"{variable}: cannot connect ({problem}): check the host, port, user and password" if problem else None


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
    """None if the folder exists and may be read and written."""
    path, variable = connection.path, _variable(name, connection)
    with timer():
        is_dir, exists, usable = path.is_dir(), path.exists(), os.access(path, os.R_OK | os.W_OK | os.X_OK)
    if not is_dir:
        what = "does not exist: create it or fix the path" if not exists else "is not a folder: name a folder"
        return f"{variable}: {path} {what}"
    return None if usable else f"{variable}: folder {path} may not be read and written by this user: fix its permissions"


def _check_queue(name: str, connection: QueueConnection, timer: _Timer) -> str | None:
    """None if the broker accepts our login; else what it said, with the URL masked."""
    variable, target = _variable(name, connection), connection.display
    pika_log = logging.getLogger("pika")
    level = pika_log.level
    pika_log.setLevel(logging.CRITICAL)  # pika logs a failure with tracebacks; the reason below says it in one line
    try:
        with timer():
            ping(connection.url)
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError):
        return f"{variable}: the broker refused the login at {target}: check the user and password"
    except pika.exceptions.ProbableAccessDeniedError:
        return f"{variable}: the broker refused access to the virtual host of {target}: check the vhost (the URL's path)"
    except Exception as exc:  # noqa: BLE001 - pika raises many kinds: the broker could not be reached
        cause = getattr(exc.args[0], "exception", exc) if exc.args else exc  # pika wraps the socket's error
        return f"{variable}: cannot connect to {target} ({_why(cause)}): check the host and port"
    finally:
        pika_log.setLevel(level)
    return None


CHECKS: dict[str, Callable[[str, Connection, _Timer], str | None]] = {
    "rest": _check_rest,
    "sql": _check_sql,
    "folder": _check_folder,
    "queue": _check_queue,
}
CHECK_TIMEOUT_S = 5.0  # a health check's longest wait for an answer
BUSY = (429, 503)  # "too many requests", "unavailable for now": the system is there, and a run's retries wait for it
STATE = ""  # the state database, among the connections `check_connections` checks


def check_connections(settings: Settings, names: list[str]) -> None:
    """Check that every connection in `names` is set (`Settings.require`), then it and the state database (if
    set) live, at once, one attempt each: a `ConfigError` with the first failure (in the order of `names`),
    naming its variable and the fix, and the variables of any others."""
    names = list(dict.fromkeys(names))
    settings.require(names)

    def check(name: str) -> str | None:
        if name == STATE:
            return _sql_reason(f"{PREFIX}STATE_URL", settings.state_url)
        return CHECKS[settings.connections[name].kind](name, settings.connection(name), _Timer())

    checked = ([STATE] if settings.state_url else []) + names
    with ThreadPoolExecutor(max_workers=len(checked) or 1) as pool:
        problems = [p for p in pool.map(check, checked) if p]
    if problems:
        others = [p.split(":", 1)[0] for p in problems[1:]]
        raise ConfigError(problems[0] + (f" (failing too: {', '.join(others)})" if others else ""))


def _variable(name: str, connection: Connection) -> str:
    """The variable that says where the system of connection `name` is, e.g. `INTERLINK_CRM__BASE_URL`."""
    return f"{PREFIX}{name.upper()}__{LOCATION[connection.kind].upper()}"


def _unnamed(name: str, exc: Exception) -> str:
    """A connector's message without the connection's name it starts with (the variable names it)."""
    return str(exc).removeprefix(f"{name}: ")


def _cause(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` in the chain that led to `exc` (a connector re-raises transport errors as its own)."""
    while exc is not None and not isinstance(exc, kind):
        exc = exc.__cause__ or exc.__context__
    return exc


def _why(exc: BaseException) -> str:
    """An OS or transport error in a few words: `connection refused`, `name or service not known`, …"""
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return mask_secrets(text[:1].lower() + text[1:])
