"""Every connection is checked before a command reads anything, and whatever a server sends, an error is one line.

The commands run as operators run them: the `interlink` CLI in a fresh process, against real local HTTP servers, a
real RabbitMQ and a port where nothing listens; each mistake must be exactly one line on stderr, exit 2, with no run
started, nothing read and no ledger made. Without a Prefect server, the temporary Prefect API a run starts must not
outlive the command, and when it cannot start in time, that too is one line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pika
import psutil
import pytest
import sqlalchemy as sa
from interlink.connectors.errors import AuthError, FatalError
from interlink.connectors.rest import RestClient

from interlink.cli import main
from interlink.inventory import CHECKS, _Timer
from interlink.settings import RestConnection

INTERLINK = Path(sys.executable).with_name("interlink")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
CANARY = "canary-7c21e9"
PAGE = b"""<!DOCTYPE html>
<html>
  <head>
    <title>403 Forbidden &ndash; Corporate Proxy</title>
  </head>
  <body>
    <h1>Forbidden</h1>
    <p>You are not allowed to see this page.</p>
  </body>
</html>
"""


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A local port that refuses connections: bound, so no one else takes it, but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextmanager
def html_server(status: int, location: str | None = None) -> Iterator[str]:
    """A real HTTP server answering every GET with `status` and an HTML page, as a proxy or a web site does (with a
    `Location` header, a redirect to a sign-in page)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def interlink(home: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process with this test's `INTERLINK_*` settings and no Prefect server configured."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    environ |= {"INTERLINK_HOME": str(home), "PREFECT_HOME": str(home.parent / "prefect"), **env}  # a temporary API of its own
    return subprocess.run([INTERLINK, *argv], env=environ, capture_output=True, text=True, timeout=300, cwd=home.parent)


def one_line(done: subprocess.CompletedProcess, code: int = 2) -> str:
    """The only line on stderr, of a command that exited with `code` and printed no traceback."""
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr.strip()


def no_ledger(home: Path) -> None:
    assert not (home / "interlink.db").exists()  # no run was started: `ledgered` makes it first


def orphans(home: Path) -> list[psutil.Process]:
    """Processes still running with this test's `INTERLINK_HOME`: the CLI's children (a temporary Prefect API) inherit it."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("INTERLINK_HOME") == str(home):
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def billing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The billing database on SQLite, outside the Interlink home."""
    db = tmp_path / "billing.db"
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{db}")
    return db


def test_a_wrong_rest_port_is_one_line_before_anything_is_read(home: Path, systems, billing: Path, refusing_port: int):
    with systems():  # finance answers; only the CRM's port is wrong
        started = time.monotonic()
        done = interlink(home, "run", "crm_to_billing", INTERLINK_CRM__BASE_URL=f"http://127.0.0.1:{refusing_port}")
        seconds = time.monotonic() - started
    assert one_line(done) == (
        f"interlink: INTERLINK_CRM__BASE_URL: cannot connect to http://127.0.0.1:{refusing_port} (connection refused): "
        "check the host and port"
    )
    assert done.stdout == ""
    assert not sa.inspect(sa.create_engine(f"sqlite:///{billing}")).has_table("customers")  # nothing delivered
    no_ledger(home)
    assert seconds < 60, seconds  # one attempt, not 76 s of retries


@pytest.mark.parametrize("argv", [["reconcile", "crm_to_billing"], ["dlq", "replay", "crm_to_billing"]])
def test_reconcile_and_replay_check_first_too(home: Path, systems, billing: Path, refusing_port: int, argv: list[str]):
    with systems():
        done = interlink(home, *argv, INTERLINK_FINANCE__BASE_URL=f"http://127.0.0.1:{refusing_port}/")
    assert one_line(done).startswith(f"interlink: INTERLINK_FINANCE__BASE_URL: cannot connect to http://127.0.0.1:{refusing_port}/ ")
    no_ledger(home)


def test_every_failing_connection_is_named_in_the_one_line(home: Path, billing: Path, refusing_port: int):
    down = f"http://127.0.0.1:{refusing_port}"
    done = interlink(home, "run", "crm_to_billing", INTERLINK_CRM__BASE_URL=down, INTERLINK_FINANCE__BASE_URL=down,
                     INTERLINK_BILLING__URL=f"postgresql+psycopg://etl:{CANARY}@127.0.0.1:{refusing_port}/billing")
    line = one_line(done)
    assert line.startswith("interlink: INTERLINK_CRM__BASE_URL: cannot connect")
    assert line.endswith("(failing too: INTERLINK_FINANCE__BASE_URL, INTERLINK_BILLING__URL)")
    assert CANARY not in done.stderr


@pytest.fixture
def broker() -> str:
    """RabbitMQ's URL, once it accepted our login; skips (or fails under REQUIRE_SERVICES=1) when it is not there."""
    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except pika.exceptions.AMQPConnectionError as exc:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL}: {exc!r}")
        pytest.skip(f"RabbitMQ is not reachable at {AMQP_URL}: {exc!r}")
    return AMQP_URL


def test_a_wrong_broker_password_stops_the_consumer_before_a_run(home: Path, storefront, tmp_path: Path, broker: str):
    wrong = pika.URLParameters(broker)
    url = f"amqp://{wrong.credentials.username}:{CANARY}@{wrong.host}:{wrong.port}/%2F"
    with storefront():
        done = interlink(home, "consume", INTERLINK_ORDER_EVENTS__URL=url, INTERLINK_ERP__URL=f"sqlite:///{tmp_path / 'erp.db'}")
    assert one_line(done) == (
        f"interlink: INTERLINK_ORDER_EVENTS__URL: the broker refused the login at "
        f"amqp://{wrong.credentials.username}:***@{wrong.host}:{wrong.port}/%2F: check the user and password"
    )
    no_ledger(home)


def test_a_forbidden_html_page_is_summarised_in_one_line():
    with html_server(403) as url, RestClient("crm", url, max_attempts=1) as client, pytest.raises(AuthError) as info:
        client.request("GET", "/customers")
    assert str(info.value) == (
        "crm: GET /customers answered 403: the credentials were rejected; check the crm connection's credentials "
        "(403 Forbidden – Corporate Proxy)"
    )


def test_a_forbidden_health_path_names_the_auth_settings(home: Path, billing: Path, systems):
    with systems(), html_server(403) as url:
        done = interlink(home, "run", "crm_to_billing", INTERLINK_CRM__BASE_URL=url)
    assert one_line(done) == (
        "interlink: INTERLINK_CRM__AUTH: GET /customers answered 403: the credentials were rejected; "
        "check the crm connection's credentials (403 Forbidden – Corporate Proxy)"
    )


def test_an_html_page_where_json_was_expected_names_the_base_url():
    with html_server(200) as url, RestClient("crm", f"{url}/app", max_attempts=1) as client, pytest.raises(FatalError) as info:
        client.get_json("/api/customers")
    assert str(info.value) == (
        f"crm: GET /app/api/customers answered text/html, not JSON (403 Forbidden – Corporate Proxy): "
        f"check the crm connection's base_url ({url}/app) and the path"
    )


def test_a_misspelt_connection_name_in_the_environment_is_named(home: Path, monkeypatch, capsys):
    monkeypatch.setenv("INTERLINK_CMR__BASE_URL", "http://127.0.0.1:9")
    assert main(["run", "crm_to_billing"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "INTERLINK_CRM__BASE_URL is not set: set it to where the crm rest connection is (e.g. https://api.example.com); "
        "INTERLINK_CMR__BASE_URL is set — a typo for crm?"
    )


def test_a_misspelt_name_of_a_connection_declared_without_its_kind_is_named(home: Path, tmp_path: Path, monkeypatch, capsys):
    (tmp_path / "connections.yaml").write_text("chinook:\n  health_path: /albums\n")
    monkeypatch.setenv("INTERLINK_CONNECTIONS_FILE", str(tmp_path / "connections.yaml"))
    monkeypatch.setenv("INTERLINK_CHINOK__BASE_URL", "http://127.0.0.1:9")
    assert main(["runs"]) == 2
    assert capsys.readouterr().err == (
        "interlink: INTERLINK_CHINOOK__KIND is not set: say what chinook is (rest, sql, folder, queue); "
        "INTERLINK_CHINOK__BASE_URL is set — a typo for chinook?\n"
    )


def test_a_temporary_prefect_api_that_cannot_start_in_time_is_one_line(home: Path, systems, billing: Path):
    with systems():
        done = interlink(home, "run", "crm_to_billing", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0")
    assert one_line(done) == (
        "interlink: the temporary Prefect API did not start within 0s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS; "
        "a busy machine is slower): start a Prefect server (`make serve` or `prefect server start`) and set PREFECT_API_URL "
        "to its API, or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    )
    assert not orphans(home)
    no_ledger(home)


def test_the_temporary_prefect_api_ends_with_the_command(home: Path, systems, billing: Path):
    with systems():
        done = interlink(home, "run", "crm_to_billing")
    assert done.returncode == 0, done.stderr
    assert "crm_to_billing sync: read " in done.stdout
    assert not orphans(home)


def test_serve_names_a_connection_down_at_start_and_serves_anyway(home: Path, systems, billing: Path, refusing_port: int, tmp_path: Path):
    """A scheduler outlives outages: the line says what does not answer, and serving goes on (here to stop at the
    Prefect API, which is not there either)."""
    from interlink.deployments.runner import declarations
    from interlink.flows import integration

    used = {c for d in declarations().deployments for c in integration(d.integration).connections}
    down = f"http://127.0.0.1:{refusing_port}"
    env = {f"INTERLINK_{c.upper()}__BASE_URL": down for c in used - {"crm", "finance", "billing", "erp", "erp_stock"}}
    env |= {"INTERLINK_ERP__URL": f"sqlite:///{tmp_path / 'erp.db'}", "INTERLINK_ERP_STOCK__PATH": str(tmp_path)}
    with systems():
        done = interlink(home, "serve", "--wait-s", "0", PREFECT_API_URL=f"{down}/api", **env)
    first, second = done.stderr.splitlines()
    assert first.startswith(f"interlink: INTERLINK_STOREFRONT__BASE_URL: cannot connect to {down} (connection refused): ")
    assert first.endswith(" (serving anyway: its runs fail until it answers)")
    assert second.startswith(f"interlink: the Prefect API at {down}/api/ did not answer") and done.returncode == 2


@pytest.mark.parametrize(("status", "location", "says"), [
    (200, None, "answered an HTML page (403 Forbidden – Corporate Proxy), not the API"),
    (302, "https://sso.example.com/login?next=/customers", "answered 302, redirecting to https://sso.example.com/login?next=/customers"),
])
def test_a_sign_in_page_where_the_api_was_meant_stops_the_run_before_it_reads(home: Path, billing: Path, systems, status, location, says):
    """A proxy's or single sign-on's page answers below 400: the check must not take it for the API."""
    with systems(), html_server(status, location) as url:
        done = interlink(home, "run", "crm_to_billing", INTERLINK_CRM__BASE_URL=url)
    assert one_line(done) == f"interlink: INTERLINK_CRM__BASE_URL: GET /customers {says}: check the base URL ({url})"
    no_ledger(home)


@pytest.mark.parametrize("status, passes", [(429, True), (503, True), (500, False)])
def test_a_busy_system_passes_the_check_a_broken_one_does_not(status: int, passes: bool):
    """A 429 or 503 is the system answering "later": the run's retries wait for it (the demo's chaos made `make demo`
    stop before any run one time in three). A 500 is a broken system: the check stops the run."""
    with html_server(status) as url:
        problem = CHECKS["rest"]("crm", RestConnection(base_url=url), _Timer())
    assert (problem is None) is passes, problem
    if not passes:
        assert problem == "INTERLINK_CRM__BASE_URL: GET / answered 500: crm is failing; try again later"
