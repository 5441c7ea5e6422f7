"""The connection inventory: usage, targets with secrets masked, and live health checks."""

import json
from pathlib import Path

import pytest
from interlink.flows import users
from sqlalchemy.engine import make_url

from interlink.inventory import inventory
from interlink.settings import ConfigError, Settings
from tests.conftest import service_url


def every_connection() -> dict[str, list[str]]:
    """Every configured connection, with the integrations that use it (`inventory` lists those it is given)."""
    used = users()
    return {name: used.get(name, []) for name in Settings.load().names()}


def by_name() -> dict[str, dict]:
    return {entry["name"]: entry for entry in inventory(Settings.load(), every_connection())}


def test_lists_every_connection_with_its_users_and_health(systems, home, monkeypatch):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    with systems():
        entries = inventory(Settings.load(), every_connection())
    assert [e["name"] for e in entries] == sorted(Settings.load().names())
    found = {e["name"]: e for e in entries}
    for name in ("crm", "finance", "billing"):
        assert found[name]["healthy"], found[name]
        assert found[name]["reason"] is None
        assert isinstance(found[name]["latency_ms"], float)
    assert found["crm"]["used_by"] == ["crm_to_billing"]  # no other integration reads the CRM
    assert "crm_to_billing" in found["finance"]["used_by"] and "crm_to_billing" in found["billing"]["used_by"]
    assert found["crm"]["kind"] == "rest" and found["crm"]["target"].startswith("http://127.0.0.1:")
    assert found["billing"]["kind"] == "sql" and found["billing"]["target"].endswith("billing.db")
    for name in ("storefront", "rates"):
        assert found[name]["target"] == "(not set)"
        assert not found[name]["healthy"] and found[name]["latency_ms"] is None
        assert f"INTERLINK_{name.upper()}__BASE_URL" in found[name]["reason"]


def test_rejected_credentials_are_reported_without_the_key(systems):
    with systems(api_key="wrong-key-123"):
        entries = inventory(Settings.load(), users())
    crm = next(e for e in entries if e["name"] == "crm")
    assert not crm["healthy"]
    assert "credentials were rejected" in crm["reason"] and "401" in crm["reason"]
    assert "wrong-key-123" not in json.dumps(entries)


def test_unreachable_api_and_missing_secret_block(home, monkeypatch):
    monkeypatch.setenv("INTERLINK_STOREFRONT__BASE_URL", "http://shop:pw-secret-3@127.0.0.1:1")
    monkeypatch.setenv("INTERLINK_CRM__BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("INTERLINK_CRM__AUTH__KIND", "api_key")
    monkeypatch.setenv("INTERLINK_CRM__AUTH__KEY", "prefect-secret:no-such-block")
    found = by_name()
    assert not found["storefront"]["healthy"]
    assert found["storefront"]["reason"] == (
        "INTERLINK_STOREFRONT__BASE_URL: cannot connect to http://shop:***@127.0.0.1:1 (connection refused): check the host and port"
    )
    assert found["storefront"]["target"] == "http://shop:***@127.0.0.1:1"
    assert not found["crm"]["healthy"] and "no-such-block" in found["crm"]["reason"]
    assert "pw-secret-3" not in json.dumps(list(found.values()))


def test_postgresql_target_is_masked(home, monkeypatch):
    url = make_url(service_url("postgresql")).set(password="pw-secret-1").render_as_string(hide_password=False)
    monkeypatch.setenv("INTERLINK_BILLING__URL", url)
    found = by_name()
    assert found["billing"]["healthy"], found["billing"]
    assert "***" in found["billing"]["target"]
    assert "pw-secret-1" not in json.dumps(list(found.values()))


def test_unreachable_database_is_unhealthy_without_its_password(home, monkeypatch):
    monkeypatch.setenv("INTERLINK_ERP__URL", "postgresql+psycopg://u:pw-secret-2@127.0.0.1:1/x")
    found = by_name()
    assert not found["erp"]["healthy"] and found["erp"]["reason"].startswith("INTERLINK_ERP__URL: cannot connect (")
    assert found["erp"]["reason"].endswith("): check the host, port, user and password")
    assert found["erp"]["target"] == "postgresql+psycopg://u:***@127.0.0.1:1/x"
    assert "pw-secret-2" not in json.dumps(list(found.values()))


def test_unknown_dialect_is_named_at_load_without_its_password(home, monkeypatch):
    monkeypatch.setenv("INTERLINK_ERP__URL", "nosuchdialect://u:pw-secret-4@h/x")
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert "INTERLINK_ERP__URL" in str(info.value) and "'nosuchdialect'" in str(info.value)
    assert "pw-secret-4" not in str(info.value)


def test_unparseable_database_url_is_named_without_its_password(home, monkeypatch):
    monkeypatch.setenv("INTERLINK_ERP__URL", "not a url pw-secret-4")
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert "INTERLINK_ERP__URL" in str(info.value) and "SQLAlchemy URL" in str(info.value)
    assert "pw-secret-4" not in str(info.value)


def test_folder_must_exist_and_be_a_folder(home, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("INTERLINK_ERP_STOCK__PATH", str(tmp_path / "missing"))
    stock = by_name()["erp_stock"]
    assert stock["kind"] == "folder" and stock["target"] == str(tmp_path / "missing") and not stock["healthy"]
    assert stock["reason"] == f"INTERLINK_ERP_STOCK__PATH: {tmp_path / 'missing'} does not exist: create it or fix the path"
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("INTERLINK_ERP_STOCK__PATH", str(tmp_path / "file"))
    assert "is not a folder" in by_name()["erp_stock"]["reason"]
    (tmp_path / "drop").mkdir()
    monkeypatch.setenv("INTERLINK_ERP_STOCK__PATH", str(tmp_path / "drop"))
    assert by_name()["erp_stock"]["healthy"]


def test_a_queue_is_checked_by_connecting_to_its_broker(home, monkeypatch):
    monkeypatch.setenv("INTERLINK_ORDER_EVENTS__URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    found = by_name()["order_events"]
    assert found["kind"] == "queue" and found["healthy"], found
    assert found["target"].startswith("amqp://guest:***@127.0.0.1:5672/")
    monkeypatch.setenv("INTERLINK_ORDER_EVENTS__URL", "amqp://guest:pw-secret-5@127.0.0.1:1/%2F")
    refused = by_name()["order_events"]
    assert not refused["healthy"]
    assert refused["reason"] == (
        "INTERLINK_ORDER_EVENTS__URL: cannot connect to amqp://guest:***@127.0.0.1:1/%2F (connection refused): check the host and port"
    )
    assert "pw-secret-5" not in json.dumps(refused)


def test_lists_only_the_connections_it_is_given_and_names_one_not_declared(home, monkeypatch):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    entries = inventory(Settings.load(), {"billing": ["crm_to_billing"], "nowhere": ["ghost"]})
    assert [e["name"] for e in entries] == ["billing", "nowhere"]
    billing, nowhere = entries
    assert billing["healthy"] and billing["used_by"] == ["crm_to_billing"]
    assert not nowhere["healthy"] and nowhere["kind"] is None and nowhere["reason"].startswith("connection 'nowhere' is not declared")


def test_connections_the_demo_stands_in_for_are_shown_from_another_shell(home):
    """What an operator sees in a second terminal while `interlink demo serve` runs: the demo's stand-ins, not
    "(not set)", with no secret; once the demo stops, they are not set again."""
    import os
    import subprocess
    import sys

    from interlink.demo_systems.wiring import demo_systems

    shell = dict(os.environ)  # before the demo sets its stand-ins in this process: the other shell has none of them
    interlink = [str(Path(sys.executable).with_name("interlink")), "connectors", "--json"]
    with demo_systems(Settings.load(), fault_rate=0) as demo:
        api_key = demo.connection("crm").auth.key.get_secret_value()
        during = subprocess.run(interlink, env=shell, capture_output=True, text=True, timeout=120)
    after = subprocess.run(interlink, env=shell, capture_output=True, text=True, timeout=120)
    assert during.returncode == 0, during.stderr
    shown = {row["name"]: row for row in json.loads(during.stdout)}
    assert shown["crm"]["target"].startswith("http://127.0.0.1:") and shown["crm"]["target"].endswith("(demo)")
    assert shown["crm"]["healthy"] and shown["crm"]["reason"] == f"not set: stood in for by interlink demo (pid {os.getpid()})"
    assert shown["billing"]["target"].endswith("billing.db (demo)")
    assert api_key not in during.stdout + during.stderr
    assert after.returncode == 1 and "(not set)" in after.stdout
    assert not (home / "stand-ins.json").exists()
