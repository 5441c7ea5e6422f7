"""The connection inventory: usage, targets with secrets masked, and live health checks."""

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from flows import users
from interlink.inventory import inventory
from interlink.settings import ConfigError, Settings
from tests.conftest import service_url


def by_name() -> dict[str, dict]:
    return {entry["name"]: entry for entry in inventory(Settings.load(), users())}


def test_lists_every_connection_with_its_users_and_health(systems, home, monkeypatch):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    with systems():
        entries = inventory(Settings.load(), users())
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
    assert not found["storefront"]["healthy"] and found["storefront"]["reason"].startswith("unreachable: ")
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
    assert not found["erp"]["healthy"] and found["erp"]["reason"].startswith("erp: ")
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
    assert stock["reason"] == f"erp_stock: folder {tmp_path / 'missing'} does not exist"
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
    assert not refused["healthy"] and refused["reason"].startswith("order_events: ")
    assert "pw-secret-5" not in json.dumps(refused)
