"""Settings and connections, from `deployments/connections.yaml` and `INTERLINK_*` environment variables.

Every system Interlink talks to is a named, typed connection (`rest`, `sql`, `folder` or
`queue`), declared in the connections file (`INTERLINK_CONNECTIONS_FILE` names another) and/or
the environment, whose variables win: `INTERLINK_<NAME>__<FIELD>`, nested with `__`, e.g.
`INTERLINK_CRM__BASE_URL`, `INTERLINK_CRM__AUTH__KEY`, `INTERLINK_BILLING__URL`. A connection
only in the environment takes its kind from `INTERLINK_<NAME>__KIND` or from the field that
says where it is (`BASE_URL`: rest, `URL`: sql, `PATH`: folder). Secrets never sit in the file:
they come from the environment, or name a Prefect Secret block (`prefect-secret:crm-api-key`),
the one place to rotate them. Nothing is filled in: a connection used without its URL or
path is a `ConfigError` naming the variable to set.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, SecretStr, TypeAdapter, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url

from interlink.connectors.auth import AuthConfig
from interlink.connectors.connections import (
    LOCATION,
    Connection,
    FolderConnection,
    QueueConnection,
    RestConnection,
    SqlConnection,
    check_sql_url,
    mask_url,
)
from interlink.connectors.errors import ConfigError

__all__ = ["ConfigError", "Connection", "FolderConnection", "QueueConnection", "RestConnection", "Settings", "SqlConnection", "mask_url"]

PREFIX = "INTERLINK_"
SECRET_BLOCK = "prefect-secret:"
CONNECTIONS_FILE = Path("deployments/connections.yaml")  # in the project Interlink runs in (the working directory)
SECRET_FIELDS = {"key", "token", "password", "client_secret", "secret"}
_connection = TypeAdapter(Connection)
AUTH_KINDS = [config.model_fields["kind"].default for config in get_args(get_args(AuthConfig)[0])]
KINDS = list(LOCATION)


class Settings(BaseSettings):
    """Interlink's own settings (`INTERLINK_HOME`, `INTERLINK_STATE_URL`, …) and every connection."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_nested_delimiter="__", hide_input_in_errors=True)

    home: Path = Path(".interlink")
    state_url: str | None = None
    connections_file: Path = CONNECTIONS_FILE
    deployments_file: Path = Path("deployments/deployments.yaml")  # the schedules, owners and SLAs (deployments.declaration)
    integrations: str | None = None  # modules or packages to take the integrations from, comma-separated; unset: the
    # installed projects' `interlink.integrations` entry points (`interlink.flows.integrations`)
    alert_url: str | None = Field(None, pattern=r"^https?://[^/\s]+")  # where alerts are POSTed as JSON (a chat webhook, …)
    runbook_url: str = "docs/operations/runbook.md"  # the runbook each alert links to (`#runbook-<state>`): set it to the
    # page on your documentation site, e.g. https://docs.example.com/operations/runbook/
    webhook_secrets: dict[str, list[SecretStr]] = {}  # integration → its whsec_ secrets, e.g. '{"orders_to_erp": "whsec_…"}'
    webhook_tolerance_s: int = Field(300, gt=0)  # how far a webhook's timestamp may be from now
    webhook_max_body_bytes: int = Field(1_000_000, gt=0)  # a larger webhook body is refused (413)
    dask_address: str | None = None  # a Dask scheduler for partitioned syncs, e.g. tcp://10.0.0.5:8786; None: a local cluster
    # observability (interlink.metrics, interlink.json_logs; lineage and traces take OpenLineage's and OpenTelemetry's own variables)
    metrics_port: int | None = Field(None, ge=0, le=65535)  # long-running commands serve /metrics on it
    metrics_addr: str = "127.0.0.1"  # … at this address (0.0.0.0: every interface)
    pushgateway_url: str | None = Field(None, pattern=r"^https?://[^/\s]+")  # one-shot runs push their figures there
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per log line, for log shippers
    connections: dict[str, Connection] = Field(default_factory=dict)  # read from the file and INTERLINK_<NAME>__*

    @field_validator("metrics_port", "pushgateway_url", mode="before")
    @classmethod
    def _blank_is_off(cls, value: Any) -> Any:
        """`INTERLINK_PUSHGATEWAY_URL=` (as compose files write an unset one) is off, not a bad URL."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _secret_lists(cls, value: Any) -> Any:
        """Each integration's secrets, given as a list or as one string of space-separated secrets (newest first)."""
        if isinstance(value, dict):
            return {name: v.split() if isinstance(v, str) else v for name, v in value.items()}
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _standard_secrets(cls, value: dict[str, list[SecretStr]]) -> dict[str, list[SecretStr]]:
        for name, secrets in value.items():
            if not secrets:
                raise PydanticCustomError("webhook_secret", f"{name} has no secret: {WHSEC_HINT}")
            for number, secret in enumerate(secrets, 1):
                if not _is_whsec(secret.get_secret_value()):
                    raise PydanticCustomError(
                        "webhook_secret", f"secret {number} of {name} is not a Standard Webhooks secret: {WHSEC_HINT}"
                    )
        return value

    @field_validator("state_url")
    @classmethod
    def _state_url_parses(cls, url: str | None) -> str | None:
        return check_sql_url(url) if url else None

    @classmethod
    def load(cls) -> Settings:
        """The settings; a bad or unknown value raises `ConfigError` naming its variable and the fix."""
        named = os.environ.get(f"{PREFIX}CONNECTIONS_FILE")
        if named and not Path(named).is_file():
            raise ConfigError(f"{PREFIX}CONNECTIONS_FILE names {named}, which is not a file: fix the path, or unset it to use {CONNECTIONS_FILE}")
        if not named and not CONNECTIONS_FILE.is_file():
            raise ConfigError(not_a_project(CONNECTIONS_FILE, "CONNECTIONS_FILE"))
        path = Path(named or CONNECTIONS_FILE)
        unknown = [n for n in os.environ if n.startswith(PREFIX) and "__" not in n and n.removeprefix(PREFIX).lower() not in cls.model_fields]
        if unknown:
            hint = _did_you_mean(unknown[0], [PREFIX + f.upper() for f in cls.model_fields]) or _one_underscore(unknown[0], _read_file(path))
            raise ConfigError(f"{unknown[0]} is not a setting{hint}")
        try:
            return cls(connections=declared_connections(path))
        except ValidationError as exc:
            raise ConfigError(_explain(_first(exc))) from None
        except SettingsError as exc:  # a value pydantic-settings could not parse (JSON of a dict field)
            field = str(exc).split('"')[1] if '"' in str(exc) else ""
            raise ConfigError(f"{PREFIX}{field.upper()}: not valid JSON: write it as a JSON object, e.g. '{{\"name\": \"value\"}}'") from None

    def model_post_init(self, _context: object) -> None:
        self.home = self.home.resolve()

    @property
    def state_db(self) -> str:
        """Interlink's own metadata database: run ledger and dead-letter store (SQLite in the home unless set)."""
        return self.state_url or f"sqlite:///{self.home / 'interlink.db'}"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    def names(self) -> list[str]:
        """The names of every declared connection."""
        return sorted(self.connections)

    def connection(self, name: str) -> RestConnection | SqlConnection | FolderConnection | QueueConnection:
        """Connection `name`, ready to use: every required field set, secrets from Prefect blocks resolved."""
        if name not in self.connections:
            raise ConfigError(
                f"connection {name!r} is not declared: add it to {self.connections_file} or set "
                f"{PREFIX}{name.upper()}__KIND (known: {', '.join(self.names()) or 'none'}){_stray(name, _read_file(self.connections_file))}"
            )
        connection = self.connections[name]
        if field := connection.missing():
            raise ConfigError(
                f"{PREFIX}{name.upper()}__{field.upper()} is not set: set it to where the {name} {connection.kind} "
                f"connection is ({EXAMPLES[connection.kind]}){_stray(name, _read_file(self.connections_file))}"
            )
        if isinstance(connection, RestConnection) and connection.auth:
            return connection.model_copy(update={"auth": _resolved(connection.auth)})
        return connection

    def require(self, names: list[str]) -> None:
        """Check that every connection in `names` is usable, before anything is read or delivered."""
        for name in dict.fromkeys(names):
            self.connection(name)


WHSEC_HINT = (
    "use whsec_ and the base64 of at least 24 random bytes, as the sender shows it, or make one with "
    "`python -c 'import base64, os; print(\"whsec_\" + base64.b64encode(os.urandom(32)).decode())'`"
)


def not_a_project(default: Path, setting: str) -> str:
    """The one line for a command run outside an integrations project."""
    return (f"no {default} in {Path.cwd()}: run interlink in your integrations project (`interlink init DIR` makes one), "
            f"or set {PREFIX}{setting}")


def _is_whsec(secret: str) -> bool:
    """Whether `secret` is a Standard Webhooks symmetric secret: `whsec_` and the base64 of 24 bytes or more."""
    try:
        return secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24
    except binascii.Error:
        return False


def declared_connections(path: Path) -> dict[str, dict[str, Any]]:
    """The connections of the file at `path`, overridden field by field by the environment, each checked."""
    declared = _read_file(path)
    in_file = set(declared)
    for name, fields in declared.items():  # the file's own mistakes, told in the file's terms
        if "kind" not in fields:
            continue  # the environment may say what it is
        if fields["kind"] not in KINDS:
            raise ConfigError(f"{path}: {name}.kind is {fields.get('kind')!r}: say what {name} is ({', '.join(KINDS)})")
        try:
            _connection.validate_python(fields)
        except ValidationError as exc:
            if wrong := [e for e in exc.errors() if e["type"] != "missing"]:  # what is missing may come from the environment
                raise ConfigError(f"{path}: {_explain(_first(wrong), name, fields['kind'], in_file=True)}") from None
    for name, fields in _from_environment().items():
        merged = _merge(declared.get(name, {}), fields)
        if "kind" not in merged:
            merged["kind"] = next((kind for kind, where in LOCATION.items() if where in fields), None)
        declared[name] = merged
    for name, fields in declared.items():
        if not fields.get("kind"):
            raise ConfigError(f"{PREFIX}{name.upper()}__KIND is not set: say what {name} is ({', '.join(KINDS)}){_stray(name, in_file)}")
        if fields["kind"] not in KINDS:
            raise ConfigError(f"{PREFIX}{name.upper()}__KIND is {fields['kind']!r}, not a kind of connection: use one of {', '.join(KINDS)}")
        try:
            _connection.validate_python(fields)
        except ValidationError as exc:
            raise ConfigError(_explain(_first(exc), name, fields.get("kind"))) from None
    return declared


EXAMPLES = {
    "rest": "e.g. https://api.example.com",
    "sql": "a SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db",
    "folder": "e.g. /srv/drops/erp",
    "queue": "an AMQP URL, e.g. amqp://user@broker:5672/%2F",
}


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    """The connections the file declares; none if there is no file. A secret in it is refused."""
    if not path.exists():
        return {}
    try:
        declared = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error(path, exc)) from None
    if not isinstance(declared, dict) or not all(isinstance(v, dict) for v in declared.values()):
        raise ConfigError(f"{path}: expected a mapping of connection names to their settings, e.g. `crm: {{kind: rest}}`")
    for name, fields in declared.items():
        _refuse_secrets(path, name, fields, [])
    return {str(name).lower(): fields for name, fields in declared.items()}


def _refuse_secrets(path: Path, name: str, fields: dict, where: list[str]) -> None:
    for field, value in fields.items():
        trail = [*where, str(field)]
        if isinstance(value, dict):
            _refuse_secrets(path, name, value, trail)
        elif isinstance(value, str) and not value.startswith(SECRET_BLOCK) and (
            field in SECRET_FIELDS or (field == "url" and _has_password(value))
        ):
            variable = f"{PREFIX}{name.upper()}__{'__'.join(trail).upper()}"
            raise ConfigError(
                f"{path}: {name}.{'.'.join(trail)} holds a secret; remove it and set {variable}, "
                f"or write {SECRET_BLOCK}BLOCK to read it from a Prefect Secret block"
            )


def _has_password(url: str) -> bool:
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL: validation reports it
        return False
    return bool(parsed.password) or any("password" in k.lower() for k in parsed.query)


def _from_environment() -> dict[str, dict[str, Any]]:
    """`INTERLINK_<NAME>__<FIELD>[__<FIELD>…]` variables as nested fields per connection name."""
    found: dict[str, dict[str, Any]] = {}
    for variable, value in os.environ.items():
        if not variable.startswith(PREFIX) or "__" not in variable:
            continue
        name, *path = variable.removeprefix(PREFIX).lower().split("__")
        if name in Settings.model_fields:
            continue  # a nested field of Interlink's own settings
        if value.lstrip().startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{variable}: not valid JSON ({exc.msg} at character {exc.pos})") from None
        node = found.setdefault(name, {})
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return found


def _stray(name: str, in_file: Iterable[str]) -> str:
    """A hint at a variable set for a connection whose name is close to `name` and that the connections file does
    not declare (`INTERLINK_CHINOK__BASE_URL` for `chinook`): a typo, most likely."""
    strays: dict[str, str] = {}
    for variable in sorted(os.environ):
        other = variable.removeprefix(PREFIX).split("__")[0].lower()
        if variable.startswith(PREFIX) and "__" in variable and other != name and other not in in_file and other not in Settings.model_fields:
            strays.setdefault(other, variable)
    close = difflib.get_close_matches(name, list(strays), n=1, cutoff=0.6)
    return f"; {strays[close[0]]} is set — a typo for {name}?" if close else ""


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: the file, the line and the problem."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}" if mark else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start and mark and start.line != mark.line:
        problem += f", {context.removeprefix('while parsing ')} started on line {start.line + 1}"
    return f"{where}: not valid YAML ({problem}): fix the syntax there"


def _first(errors: ValidationError | list[dict[str, Any]]) -> dict[str, Any]:
    """The error that explains the others: a misspelt field before the required field it leaves unset."""
    errors = errors.errors() if isinstance(errors, ValidationError) else errors
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


MODELS = {"rest": RestConnection, "sql": SqlConnection, "folder": FolderConnection, "queue": QueueConnection}
AUTH_MODELS = {config.model_fields["kind"].default: config for config in get_args(get_args(AuthConfig)[0])}


def _explain(error: dict[str, Any], name: str | None = None, kind: str | None = None, in_file: bool = False) -> str:
    """One line for a pydantic error: the variable (or, `in_file`, the file's key) it concerns, what is wrong, and what to do."""
    loc = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
    if name is not None and loc and loc[0] == kind:
        loc = loc[1:]  # the connection's branch of the union
    auth_kind = loc[1] if loc[:1] == ["auth"] and len(loc) > 1 and loc[1] in AUTH_KINDS else None
    if auth_kind:
        loc = [loc[0], *loc[2:]]  # the auth block's branch
    parts = ([name] if name else []) + loc
    setting = ".".join(parts) if in_file else PREFIX + "__".join(part.upper() for part in parts)
    match error["type"]:
        case "missing":
            return f"{setting} is not set" + (f" (a {auth_kind} auth block needs it)" if auth_kind else "")
        case "extra_forbidden":
            model = AUTH_MODELS[auth_kind] if auth_kind else MODELS.get(kind or "") if len(loc) == 1 else None
            what = f"{auth_kind} auth" if auth_kind else f"a {kind} connection"
            sep = "." if in_file else "__"
            prefix = setting.rsplit(sep, 1)[0]
            choices = [f"{prefix}{sep}{f if in_file else f.upper()}" for f in (model.model_fields if model else [])]
            return f"{setting} is not a setting of {what}{_did_you_mean(setting, choices, sep)}"
        case "union_tag_not_found" | "union_tag_invalid":
            kind_setting = f"{setting}.kind" if in_file else f"{setting}__KIND"
            return f"{kind_setting} is not set or not known: use one of {', '.join(AUTH_KINDS)}"
        case "string_pattern_mismatch" if loc[-1:] in (["base_url"], ["alert_url"]):
            return f"{setting} must be an http:// or https:// URL with a host, e.g. https://api.example.com"
        case "string_pattern_mismatch" if kind == "queue":
            return f"{setting} must be an AMQP URL, e.g. amqp://user@broker:5672/%2F"
    message = error["msg"].removeprefix("Value error, ")
    return f"{setting}: {message[:1].lower()}{message[1:]}"


def _one_underscore(variable: str, connections: Iterable[str]) -> str:
    """A hint at a connection's variable written with one underscore after its name (`INTERLINK_CRM_BASE_URL`)."""
    rest = variable.removeprefix(PREFIX)
    for name in sorted(connections, key=len, reverse=True):
        if rest.lower().startswith(f"{name}_") and len(rest) > len(name) + 1:
            return f" (did you mean {PREFIX}{name.upper()}__{rest[len(name) + 1:]}? two underscores after the connection's name)"
    return ""


def _did_you_mean(word: str, choices: list[str], sep: str = "__") -> str:
    """A hint at the closest choice, judged on what follows the last `sep` (or the prefix)."""
    stem = word.rsplit(sep, 1)[0] + sep if sep in word else PREFIX
    tails = {choice.removeprefix(stem): choice for choice in choices}
    tail = word.removeprefix(stem)
    close = difflib.get_close_matches(tail, list(tails), n=1, cutoff=0.75) or [t for t in tails if tail.endswith(t)][:1]
    return f" (did you mean {tails[close[0]]}?)" if close else ""


def _resolved(model: BaseModel) -> BaseModel:
    """`model` with every `prefect-secret:NAME` secret replaced by that Prefect Secret block's value."""
    updates = {}
    for field, value in model:
        if isinstance(value, SecretStr) and value.get_secret_value().startswith(SECRET_BLOCK):
            from prefect.blocks.system import Secret

            block = value.get_secret_value().removeprefix(SECRET_BLOCK)
            updates[field] = SecretStr(str(Secret.load(block).get()))
    return model.model_copy(update=updates)
