"""Errors raised by connectors, classified once at the edge.

    ConnectorError             any failure talking to a system
     ├── RetriableError        429, 5xx, timeouts, refused connections: worth another attempt
     │                         (`opened_circuit`: this failure opened its circuit, so an attempt now would fail fast)
     ├── CircuitOpen           the system's circuit is open: failing fast; `cause` is the failure that opened it,
     │                         and the message leads with it; neither retriable nor fatal
     └── FatalError            any other 4xx, a broken protocol: retrying cannot help
          ├── AuthError        401 / 403: the credentials were rejected
          ├── NotFound         404: no such resource
          └── PaginationLoop   the source handed back a cursor it had already given

    ConfigError                a setting is missing or wrong: the message names it and the fix
"""


class ConnectorError(Exception):
    """A failure talking to a system."""


class RetriableError(ConnectorError):
    """A failure that may pass: `retry_after` is the server's hint in seconds, if it gave one; `status` the HTTP
    status that said so, if one did (none for a timeout or a refused connection).

    `opened_circuit` is true when this failure opened the system's circuit: retrying now would only fail fast.
    """

    def __init__(self, message: str, retry_after: float | None = None, *, opened_circuit: bool = False, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.opened_circuit = opened_circuit
        self.status = status


class CircuitOpen(ConnectorError):
    """Calls to a system fail fast while its circuit is open; `cause` is the failure that opened it, if known."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.cause = cause


class FatalError(ConnectorError):
    """A failure that another attempt would repeat; `status` is the HTTP status that said so, if one did."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AuthError(FatalError):
    """The system rejected the credentials."""


class NotFound(FatalError):
    """The resource does not exist."""


class PaginationLoop(FatalError):
    """The source repeated a page cursor; following it would loop forever."""


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the setting and the fix."""
