"""Every configuration mistake an operator makes is one line: the setting, what is wrong, the fix; exit 2.

Each case runs the real `interlink` command in a fresh process, as an operator would, with only the
settings of the case (and `INTERLINK_HOME`). A canary secret is set wherever a secret could be; it
must never appear.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from interlink.demo_systems.cli import DEMO_PROJECT
from sqlalchemy.engine import make_url

from tests.conftest import service_url

INTERLINK = Path(sys.executable).with_name("interlink")
CANARY = "canary-9f3e1d"
CRM = {"INTERLINK_CRM__BASE_URL": "http://127.0.0.1:9", "INTERLINK_CRM__AUTH__KIND": "api_key", "INTERLINK_CRM__AUTH__KEY": CANARY,
       "INTERLINK_FINANCE__BASE_URL": "http://127.0.0.1:9"}
DEPLOYMENTS = """timezone: Europe/Berlin
retries: 2
integrations:
  crm_to_billing: {owner: {team: Billing, contact: "#billing-oncall"}}
deployments:
  - integration: crm_to_billing
    cron: "0 2 * * *"
"""


@dataclass
class Mistake:
    argv: list[str]
    names: str  # the setting the line must name
    env: dict[str, str] = field(default_factory=dict)
    connections: str | None = None  # text of INTERLINK_CONNECTIONS_FILE
    deployments: str | None = None  # text of INTERLINK_DEPLOYMENTS_FILE
    says: str = ""  # more the line must say (what is wrong or the fix)


MISTAKES = {
    # Interlink's own settings
    "unknown setting": Mistake(["runs"], "INTERLINK_STATEURL", {"INTERLINK_STATEURL": "sqlite:///x.db"}, says="did you mean INTERLINK_STATE_URL"),
    "one underscore after a connection's name": Mistake(["runs"], "INTERLINK_CRM_BASE_URL", {"INTERLINK_CRM_BASE_URL": "http://crm.example.com"},
                                                        says="did you mean INTERLINK_CRM__BASE_URL? two underscores"),
    "state URL unparseable": Mistake(["runs"], "INTERLINK_STATE_URL", {"INTERLINK_STATE_URL": f"postgresql://etl:{CANARY}@db:port/x"}),
    "state database unreachable": Mistake(["runs"], "INTERLINK_STATE_URL", {"INTERLINK_STATE_URL": f"postgresql+psycopg://etl:{CANARY}@127.0.0.1:1/x"}),
    "webhook secrets not JSON": Mistake(["runs"], "INTERLINK_WEBHOOK_SECRETS", {"INTERLINK_WEBHOOK_SECRETS": f'{{"orders_to_erp": "{CANARY}"'}, says="JSON"),
    "webhook secrets not a mapping": Mistake(["runs"], "INTERLINK_WEBHOOK_SECRETS", {"INTERLINK_WEBHOOK_SECRETS": f'["{CANARY}"]'}),
    "alert URL without scheme": Mistake(["runs"], "INTERLINK_ALERT_URL", {"INTERLINK_ALERT_URL": "hooks.example.com/x"}, says="https://"),
    "connections file missing": Mistake(["runs"], "INTERLINK_CONNECTIONS_FILE", {"INTERLINK_CONNECTIONS_FILE": "/nonexistent/connections.yaml"}),
    "deployments file missing": Mistake(["serve", "--wait-s", "0"], "INTERLINK_DEPLOYMENTS_FILE", {"INTERLINK_DEPLOYMENTS_FILE": "/nonexistent/d.yaml"}),
    # a REST connection
    "misspelt field": Mistake(["runs"], "INTERLINK_CRM__BASEURL", {"INTERLINK_CRM__BASEURL": "https://crm"}, says="did you mean INTERLINK_CRM__BASE_URL"),
    "URL without scheme": Mistake(["runs"], "INTERLINK_CRM__BASE_URL", {"INTERLINK_CRM__BASE_URL": "crm.example.com"}, says="https://"),
    "URL without host": Mistake(["runs"], "INTERLINK_CRM__BASE_URL", {"INTERLINK_CRM__BASE_URL": "https://"}),
    "URL of another scheme": Mistake(["runs"], "INTERLINK_CRM__BASE_URL", {"INTERLINK_CRM__BASE_URL": "ftp://crm.example.com"}),
    "malformed JSON": Mistake(["runs"], "INTERLINK_CRM__AUTH", {"INTERLINK_CRM__AUTH": f'{{"kind": "api_key", "key": "{CANARY}"'}, says="JSON"),
    "auth without kind": Mistake(["runs"], "INTERLINK_CRM__AUTH__KIND", {"INTERLINK_CRM__AUTH__KEY": CANARY}, says="api_key"),
    "unknown auth kind": Mistake(["runs"], "INTERLINK_CRM__AUTH__KIND", {"INTERLINK_CRM__AUTH__KIND": "apikey", "INTERLINK_CRM__AUTH__KEY": CANARY}),
    "auth field of another kind": Mistake(["runs"], "INTERLINK_CRM__AUTH__API_KEY", {"INTERLINK_CRM__AUTH__KIND": "api_key", "INTERLINK_CRM__AUTH__API_KEY": CANARY},
                                          says="INTERLINK_CRM__AUTH__KEY"),
    "oauth2 without token URL": Mistake(["runs"], "INTERLINK_CRM__AUTH__TOKEN_URL", {"INTERLINK_CRM__AUTH__KIND": "oauth2_client_credentials",
                                        "INTERLINK_CRM__AUTH__CLIENT_ID": "id", "INTERLINK_CRM__AUTH__CLIENT_SECRET": CANARY}),
    "timeout not a number": Mistake(["runs"], "INTERLINK_CRM__TIMEOUT_S", {"INTERLINK_CRM__TIMEOUT_S": "often"}, says="number"),
    "negative timeout": Mistake(["runs"], "INTERLINK_CRM__TIMEOUT_S", {"INTERLINK_CRM__TIMEOUT_S": "-1"}, says="greater than 0"),
    "zero attempts": Mistake(["runs"], "INTERLINK_CRM__MAX_ATTEMPTS", {"INTERLINK_CRM__MAX_ATTEMPTS": "0"}),
    "negative rate": Mistake(["runs"], "INTERLINK_CRM__RATE_PER_S", {"INTERLINK_CRM__RATE_PER_S": "-2"}),
    "connection without kind": Mistake(["runs"], "INTERLINK_NEWTHING__KIND", {"INTERLINK_NEWTHING__TIMEOUT_S": "3"}),
    "unknown connection kind": Mistake(["runs"], "INTERLINK_NEWTHING__KIND", {"INTERLINK_NEWTHING__KIND": "ftp"}, says="rest"),
    "system URL unset": Mistake(["run", "crm_to_billing"], "INTERLINK_CRM__BASE_URL", {**CRM, "INTERLINK_CRM__BASE_URL": "",
                                "INTERLINK_BILLING__URL": "sqlite:///billing.db"}, says="is not set"),
    # a SQL connection
    "database URL blank": Mistake(["run", "crm_to_billing"], "INTERLINK_BILLING__URL", {**CRM, "INTERLINK_BILLING__URL": " "}, says="is not set"),
    "database URL unparseable": Mistake(["runs"], "INTERLINK_BILLING__URL", {"INTERLINK_BILLING__URL": f"postgresql://etl:{CANARY}@db:port/billing"}),
    "raw @ in a database password": Mistake(["runs"], "INTERLINK_BILLING__URL",
                                            {"INTERLINK_BILLING__URL": f"postgresql+psycopg://etl:x@{CANARY}@db/billing"}, says="%40"),
    "database of an unknown kind": Mistake(["runs"], "INTERLINK_BILLING__URL", {"INTERLINK_BILLING__URL": "postgress://etl@db/billing"}),
    "database host unreachable": Mistake(["run", "crm_to_billing"], "INTERLINK_BILLING__URL",
                                         {**CRM, "INTERLINK_BILLING__URL": f"postgresql+psycopg://etl:{CANARY}@127.0.0.1:1/billing"}),
    "queue URL not AMQP": Mistake(["runs"], "INTERLINK_ORDER_EVENTS__URL", {"INTERLINK_ORDER_EVENTS__URL": "redis://127.0.0.1:6379"}, says="amqp://"),
    # the connections file
    "bad YAML in the connections file": Mistake(["runs"], "connections.yaml", connections="crm:\n  kind: rest\n  auth: [kind: bearer\n", says="line 3"),
    "connections file not a mapping": Mistake(["runs"], "connections.yaml", connections="- crm\n- billing\n"),
    "secret in the connections file": Mistake(["runs"], "INTERLINK_CRM__AUTH__KEY", connections=f"crm:\n  kind: rest\n  auth: {{kind: api_key, key: {CANARY}}}\n"),
    "unknown key in the connections file": Mistake(["runs"], "crm.timeout", connections="crm:\n  kind: rest\n  timeout: 3\n", says="timeout_s"),
    "bad value in the connections file": Mistake(["runs"], "crm.max_attempts", connections="crm:\n  kind: rest\n  max_attempts: -3\n"),
    # the deployments file
    "bad cron": Mistake(["serve", "--wait-s", "0"], "crm_to_billing", deployments=DEPLOYMENTS.replace("0 2 * * *", "61 2 * * *"), says="61 2 * * *"),
    "bad timezone": Mistake(["serve", "--wait-s", "0"], "timezone", deployments=DEPLOYMENTS.replace("Europe/Berlin", "Europe/Berlim")),
    "unknown integration in a deployment": Mistake(["serve", "--wait-s", "0"], "crm_to_bill", deployments=DEPLOYMENTS.replace("crm_to_billing", "crm_to_bill"),
                                                   says="crm_to_billing"),
    "unknown flow in a deployment": Mistake(["serve", "--wait-s", "0"], "crm_to_billing", deployments=DEPLOYMENTS + "    flow: synk\n", says="synk"),
    "negative retries": Mistake(["serve", "--wait-s", "0"], "retries", deployments=DEPLOYMENTS.replace("retries: 2", "retries: -1")),
    "deployment without cron": Mistake(["serve", "--wait-s", "0"], "cron", deployments=DEPLOYMENTS.replace('    cron: "0 2 * * *"\n', "")),
    "bad YAML in the deployments file": Mistake(["serve", "--wait-s", "0"], "d.yaml", deployments=DEPLOYMENTS + "  - integration: [x\n", says="line"),
    # the command line
    "unknown integration": Mistake(["run", "crm_to_erp"], "crm_to_erp", says="crm_to_billing"),
    "unknown integration to replay": Mistake(["dlq", "replay", "crm_to_erp"], "crm_to_erp", says="crm_to_billing"),
    "chunk size 0": Mistake(["run", "crm_to_billing", "--chunk-size", "0"], "--chunk-size"),
    "chunk size -5": Mistake(["run", "crm_to_billing", "--chunk-size", "-5"], "--chunk-size"),
    "chunk size not a number": Mistake(["run", "--chunk-size", "lots"], "--chunk-size"),
    "partitions 0": Mistake(["run", "--partitions", "0"], "--partitions"),
    "runs limit 0": Mistake(["runs", "--limit", "0"], "--limit"),
    "unknown status": Mistake(["dlq", "list", "--status", "done"], "--status", says="open"),
    "unknown option": Mistake(["run", "--full-refesh"], "--full-refesh"),
    "fault rate above 1": Mistake(["demo", "run", "--fault-rate", "2"], "--fault-rate"),
}


def run(tmp_path: Path, mistake: Mistake) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLINK_")} | DEMO_PROJECT
    env |= {"INTERLINK_HOME": str(tmp_path / "home"), **mistake.env}
    for variable, text, name in (("INTERLINK_CONNECTIONS_FILE", mistake.connections, "connections.yaml"),
                                 ("INTERLINK_DEPLOYMENTS_FILE", mistake.deployments, "d.yaml")):
        if text is not None:
            (tmp_path / name).write_text(text)
            env[variable] = str(tmp_path / name)
    return subprocess.run([INTERLINK, *mistake.argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def answered_in_one_line(done: subprocess.CompletedProcess, names: str, says: str = "") -> str:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    line = done.stderr.strip()
    assert names in line and says in line, line
    assert CANARY not in done.stderr + done.stdout, line
    return line


@pytest.mark.parametrize("mistake", MISTAKES.values(), ids=MISTAKES.keys())
def test_each_mistake_is_one_line_naming_the_setting(tmp_path: Path, mistake: Mistake):
    line = answered_in_one_line(run(tmp_path, mistake), mistake.names, mistake.says)
    assert not list((tmp_path / "home").rglob("*.db")), line  # stopped before any state was made


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_wrong_database_password_names_the_connection(tmp_path: Path, systems, kind: str):
    """PostgreSQL here trusts local users, so an unknown user stands for the wrong password there. The CRM and
    finance answer, so the line is the database's alone."""
    url = make_url(service_url(kind))
    wrong = url.set(password=CANARY) if kind == "mariadb" else url.set(username="nobody_here", password=CANARY)
    with systems():
        live = {variable: os.environ[variable] for variable in CRM}
        mistake = Mistake(["run", "crm_to_billing"], "INTERLINK_BILLING__URL: cannot connect (",
                          {**live, "INTERLINK_BILLING__URL": wrong.render_as_string(hide_password=False)})
        line = answered_in_one_line(run(tmp_path, mistake), mistake.names, "): check the host, port, user and password")
    assert line.startswith("interlink: INTERLINK_BILLING__URL: ") and "failing too" not in line


def test_there_are_at_least_31_mistakes():
    assert len(MISTAKES) + 2 >= 31 and len({repr(m) for m in MISTAKES.values()}) == len(MISTAKES)
