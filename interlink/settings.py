"""Settings and connections, read from `INTERLINK_*` environment variables.

Nested fields use `__`: `INTERLINK_CRM__BASE_URL`, `INTERLINK_CRM__API_KEY`. A REST
connection without a base URL means "the embedded demo system", which the `interlink`
CLI starts for the duration of a command.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the field and the fix."""


class RestConnection(BaseModel):
    """An HTTP API: where it is and how to authenticate."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = 10.0
    max_attempts: int = 5


class SqlConnection(BaseModel):
    """A SQL database, as a SQLAlchemy URL (any password in it is masked on display)."""

    url: str

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)


def mask_url(url: str) -> str:
    """The URL with any password replaced by `***`."""
    return make_url(url).render_as_string(hide_password=True)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTERLINK_", env_nested_delimiter="__")

    home: Path = Path(".interlink")
    state_url: str | None = None
    crm: RestConnection = RestConnection()
    finance: RestConnection = RestConnection()
    billing_url: str | None = None
    demo_fault_rate: float = 0.02

    @classmethod
    def load(cls) -> Settings:
        """The settings from the environment; a bad value raises `ConfigError` naming its variable."""
        try:
            return cls()
        except ValidationError as exc:
            problems = [
                f"INTERLINK_{'__'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
                for error in exc.errors()
            ]
            raise ConfigError("invalid settings: " + "; ".join(problems)) from None

    def model_post_init(self, _context: object) -> None:
        self.home = self.home.resolve()

    @property
    def state(self) -> SqlConnection:
        """Interlink's own metadata database: run ledger and dead-letter store."""
        return SqlConnection(url=self.state_url or f"sqlite:///{self.home / 'interlink.db'}")

    @property
    def billing(self) -> SqlConnection:
        return SqlConnection(url=self.billing_url or f"sqlite:///{self.home / 'billing.db'}")

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    def rest(self, name: str) -> RestConnection:
        """The REST connection `name`, checked to be usable."""
        connection: RestConnection = getattr(self, name)
        if not connection.base_url:
            raise ConfigError(
                f"INTERLINK_{name.upper()}__BASE_URL is not set: set it to the {name} API's URL, "
                "or run through `interlink run` / `interlink demo run`, which start the demo systems"
            )
        return connection
