"""Settings and connections: defaults, Prefect Secret blocks, clear errors that never show a secret."""

import pytest
from prefect.blocks.system import Secret

from interlink.settings import ConfigError, Settings


def test_sql_and_folder_connections_default_into_the_home(home):
    settings = Settings.load()
    assert settings.connection("erp").url == f"sqlite:///{home / 'erp.db'}"
    assert settings.connection("erp_stock").path == home / "drops" / "erp_stock"


def test_a_secret_can_live_in_a_prefect_secret_block_and_rotates_there(home, monkeypatch):
    Secret(value="sk-from-block-1").save("interlink-test-crm-key", overwrite=True)
    monkeypatch.setenv("INTERLINK_CRM__BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("INTERLINK_CRM__AUTH__KIND", "api_key")
    monkeypatch.setenv("INTERLINK_CRM__AUTH__KEY", "prefect-secret:interlink-test-crm-key")
    settings = Settings.load()
    assert settings.connection("crm").auth.key.get_secret_value() == "sk-from-block-1"

    Secret(value="sk-from-block-2").save("interlink-test-crm-key", overwrite=True)
    assert settings.connection("crm").auth.key.get_secret_value() == "sk-from-block-2"
    assert "sk-from-block" not in repr(settings.connection("crm"))


def test_a_bad_auth_setting_names_the_variable_and_hides_the_secret(home, monkeypatch):
    monkeypatch.setenv("INTERLINK_CRM__AUTH__KIND", "apikey")
    monkeypatch.setenv("INTERLINK_CRM__AUTH__KEY", "sk-never-shown-42")
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert "INTERLINK_CRM__AUTH" in str(info.value) and "sk-never-shown-42" not in str(info.value)


def test_unknown_and_unset_connections_say_what_to_do(home):
    settings = Settings.load()
    with pytest.raises(ConfigError, match="unknown connection 'crn'; known: crm, finance"):
        settings.connection("crn")
    with pytest.raises(ConfigError, match="INTERLINK_STOREFRONT__BASE_URL is not set"):
        settings.connection("storefront")
