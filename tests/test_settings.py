"""Settings and connections: defaults, Prefect Secret blocks, clear errors that never show a secret."""

import pytest
from prefect.blocks.system import Secret

from interlink.settings import ConfigError, Settings


def test_nothing_is_filled_in_a_connection_used_without_its_location_names_the_variable(home):
    settings = Settings.load()
    with pytest.raises(ConfigError, match=r"INTERLINK_ERP__URL is not set: .* SQLAlchemy URL"):
        settings.connection("erp")
    with pytest.raises(ConfigError, match="INTERLINK_ERP_STOCK__PATH is not set"):
        settings.connection("erp_stock")
    assert not home.exists()  # no SQLite file or folder made up


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
    with pytest.raises(ConfigError, match=r"connection 'crn' is not declared: add it to .*connections.yaml or set INTERLINK_CRN__KIND"):
        settings.connection("crn")
    with pytest.raises(ConfigError, match="INTERLINK_STOREFRONT__BASE_URL is not set"):
        settings.connection("storefront")


def connections_file(tmp_path, monkeypatch, text: str) -> None:
    path = tmp_path / "connections.yaml"
    path.write_text(text)
    monkeypatch.setenv("INTERLINK_CONNECTIONS_FILE", str(path))


def test_a_connection_declared_in_the_file_takes_its_location_and_secret_from_the_environment(home, tmp_path, monkeypatch):
    connections_file(tmp_path, monkeypatch, "hr:\n  kind: rest\n  timeout_s: 3\n  auth: {kind: bearer}\nwarehouse: {kind: sql}\n")
    monkeypatch.setenv("INTERLINK_HR__BASE_URL", "https://hr.example.com")
    monkeypatch.setenv("INTERLINK_HR__AUTH__TOKEN", "tok-from-env-7")
    monkeypatch.setenv("INTERLINK_WAREHOUSE__URL", "postgresql+psycopg://etl@db/warehouse")
    settings = Settings.load()
    assert settings.names() == ["hr", "warehouse"]
    hr = settings.connection("hr")
    assert (hr.base_url, hr.timeout_s, hr.auth.token.get_secret_value()) == ("https://hr.example.com", 3, "tok-from-env-7")
    assert settings.connection("warehouse").url.endswith("/warehouse")


def test_a_connection_only_in_the_environment_takes_its_kind_from_its_location(home, tmp_path, monkeypatch):
    connections_file(tmp_path, monkeypatch, "")
    monkeypatch.setenv("INTERLINK_LEGACY__URL", "sqlite:///legacy.db")
    monkeypatch.setenv("INTERLINK_PARTNER__BASE_URL", "https://partner.example.com")
    monkeypatch.setenv("INTERLINK_INBOX__PATH", "/srv/inbox")
    settings = Settings.load()
    assert {n: settings.connections[n].kind for n in settings.names()} == {"inbox": "folder", "legacy": "sql", "partner": "rest"}


@pytest.mark.parametrize(
    "text, named",
    [
        ("crm:\n  kind: rest\n  auth: {kind: api_key, key: sk-in-the-file-9}\n", "INTERLINK_CRM__AUTH__KEY"),
        ("erp:\n  kind: sql\n  url: postgresql://etl:pw-in-the-file-9@db/erp\n", "INTERLINK_ERP__URL"),
    ],
)
def test_a_secret_in_the_file_is_refused_and_the_variable_to_use_named(home, tmp_path, monkeypatch, text, named):
    connections_file(tmp_path, monkeypatch, text)
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert named in str(info.value) and "in-the-file-9" not in str(info.value)


def test_a_block_reference_in_the_file_is_not_a_secret(home, tmp_path, monkeypatch):
    connections_file(tmp_path, monkeypatch, "crm:\n  kind: rest\n  auth: {kind: api_key, key: 'prefect-secret:crm-key'}\n")
    assert Settings.load().connections["crm"].auth.key.get_secret_value() == "prefect-secret:crm-key"


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("INTERLINK_STATEURL", "sqlite:///x.db", "INTERLINK_STATEURL is not a setting (did you mean INTERLINK_STATE_URL?)"),
        ("INTERLINK_CRM__BASEURL", "https://crm", "INTERLINK_CRM__BASEURL is not a setting of a rest connection (did you mean INTERLINK_CRM__BASE_URL?)"),
        ("INTERLINK_CRM__BASE_URL", "crm.example.com", "INTERLINK_CRM__BASE_URL must be an http:// or https:// URL"),
        ("INTERLINK_CRM__AUTH", '{"kind": "api_key", "key": ', "INTERLINK_CRM__AUTH: not valid JSON"),
        ("INTERLINK_CRM__AUTH__KEY", "sk-1", "INTERLINK_CRM__AUTH__KIND is not set or not known: use one of api_key, bearer"),
        ("INTERLINK_NEWTHING__TIMEOUT_S", "3", "INTERLINK_NEWTHING__KIND is not set: say what newthing is"),
    ],
)
def test_each_mistake_is_one_line_naming_the_variable(home, monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_bad_yaml_names_the_file(home, tmp_path, monkeypatch):
    connections_file(tmp_path, monkeypatch, "crm: [kind: rest\n")
    with pytest.raises(ConfigError, match=r"connections.yaml, line 2: not valid YAML \(expected ',' or '\]'.* started on line 1\)"):
        Settings.load()
