"""Settings and connections, read from `INTERLINK_*` environment variables.

Every system Interlink talks to is a named connection, typed: `rest`, `sql` or `folder`.
Nested fields use `__`: `INTERLINK_CRM__BASE_URL`, `INTERLINK_CRM__AUTH__KIND=api_key`,
`INTERLINK_CRM__AUTH__KEY`, `INTERLINK_BILLING__URL`. A secret may name a Prefect Secret
block instead of holding the value (`prefect-secret:crm-api-key`): the one place to
rotate it. A REST connection without a base URL means "the embedded demo system",
which the `interlink` CLI starts for the duration of a command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from connectors.auth import AuthConfig

SECRET_BLOCK = "prefect-secret:"
HEALTH_PATHS = {  # what the health check asks each known API: cheap, and refused without valid credentials
    "crm": "/customers?limit=1",
    "finance": "/countries/DE",
    "storefront": "/orders?per_page=1",
    "rates": "/rates?base=EUR",
}


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the field and the fix."""


class RestConnection(BaseModel):
    """An HTTP API: where it is, how to authenticate, and how hard to push it."""

    kind: Literal["rest"] = "rest"
    base_url: str | None = None
    auth: AuthConfig | None = None
    timeout_s: float = 10.0
    max_attempts: int = Field(5, ge=1)
    rate_per_s: float | None = Field(None, gt=0)
    max_concurrency: int | None = Field(None, ge=1)
    shared_rate_limit: str | None = None  # a Prefect global concurrency limit shared by every flow using this API
    breaker_threshold: int = Field(5, ge=1)
    breaker_cooldown_s: float = Field(30.0, ge=0)
    health_path: str | None = None  # a cheap GET that needs auth; defaults per connection below

    @property
    def display(self) -> str:
        return self.base_url or "(embedded demo system)"


class SqlConnection(BaseModel):
    """A SQL database, as a SQLAlchemy URL (any password in it is masked on display)."""

    kind: Literal["sql"] = "sql"
    url: str | None = None

    @property
    def display(self) -> str:
        return mask_url(self.url) if self.url else "(SQLite in the Interlink home)"


class FolderConnection(BaseModel):
    """A folder where files are dropped or written."""

    kind: Literal["folder"] = "folder"
    path: Path | None = None

    @property
    def display(self) -> str:
        return str(self.path) if self.path else "(a folder in the Interlink home)"


Connection = Annotated[RestConnection | SqlConnection | FolderConnection, Field(discriminator="kind")]


def mask_url(url: str) -> str:
    """The URL with any password replaced by `***`."""
    return make_url(url).render_as_string(hide_password=True)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTERLINK_", env_nested_delimiter="__", hide_input_in_errors=True)

    home: Path = Path(".interlink")
    state_url: str | None = None
    demo_fault_rate: float = Field(0.02, ge=0, le=1)
    order_events_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"  # RabbitMQ feeding orders_to_erp
    alert_url: str | None = None  # where alerts are POSTed as JSON (a chat webhook, an incident tool, …)
    webhook_secrets: dict[str, SecretStr] = {}  # integration → HMAC secret, e.g. '{"orders_to_erp": "…"}'
    dask_address: str | None = None  # a Dask scheduler for partitioned syncs, e.g. tcp://10.0.0.5:8786; None: a local cluster

    # The connection inventory: every system any integration uses.
    crm: RestConnection = RestConnection()
    finance: RestConnection = RestConnection()
    billing: SqlConnection = SqlConnection()
    storefront: RestConnection = RestConnection()
    rates: RestConnection = RestConnection()
    erp: SqlConnection = SqlConnection()
    erp_stock: FolderConnection = FolderConnection()

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
    def state_db(self) -> str:
        """Interlink's own metadata database: run ledger and dead-letter store."""
        return self.state_url or f"sqlite:///{self.home / 'interlink.db'}"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    def names(self) -> list[str]:
        """The names of every configured connection."""
        return [name for name, value in self if isinstance(value, RestConnection | SqlConnection | FolderConnection)]

    def connection(self, name: str) -> RestConnection | SqlConnection | FolderConnection:
        """Connection `name`, ready to use: defaults filled in, secrets from Prefect blocks resolved."""
        if name not in self.names():
            raise ConfigError(f"unknown connection {name!r}; known: {', '.join(self.names())}")
        connection = getattr(self, name)
        match connection:
            case RestConnection(base_url=None):
                raise ConfigError(
                    f"INTERLINK_{name.upper()}__BASE_URL is not set: set it to the {name} API's URL, "
                    "or run through the `interlink` CLI, which starts the demo systems"
                )
            case RestConnection():
                return connection.model_copy(
                    update={
                        "auth": connection.auth and _resolved(connection.auth),
                        "health_path": connection.health_path or HEALTH_PATHS.get(name, "/"),
                    }
                )
            case SqlConnection(url=None):
                return connection.model_copy(update={"url": f"sqlite:///{self.home / f'{name}.db'}"})
            case FolderConnection(path=None):
                return connection.model_copy(update={"path": self.home / "drops" / name})
        return connection


def _resolved(model: BaseModel) -> BaseModel:
    """`model` with every `prefect-secret:NAME` secret replaced by that Prefect Secret block's value."""
    updates = {}
    for field, value in model:
        if isinstance(value, SecretStr) and value.get_secret_value().startswith(SECRET_BLOCK):
            from prefect.blocks.system import Secret

            block = value.get_secret_value().removeprefix(SECRET_BLOCK)
            updates[field] = SecretStr(str(Secret.load(block).get()))
    return model.model_copy(update=updates)
