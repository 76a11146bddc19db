"""The project's exception hierarchy: the type of an error decides what callers do with it.

- `ConfigError`: the configuration is wrong; a command ends with one line saying what to change. Never retried.
- `DependencyUnavailable` and its subclasses (`KafkaUnavailable`, the IS producer's `DatabaseUnreachable`): a service
  we need cannot serve now; waiting may mend it (a retry loop names what it retries: core/retry.py `retry_on`).
- `BrokerFailed`: the embedded broker could not be started or exited.
- `Stopped` / `GaveUp`: a retry loop ended by a stop request / by its budget (count or seconds).
- `RequestRefused` and its subclasses: an HTTP request is answered with `status` and a one-line JSON error
  `{"error": code, "message": message}` (plus `headers`); the class, never the message text, decides the status.
"""

from __future__ import annotations


class TelemetryError(Exception):
    """Base class of every error this project raises on purpose."""


class DependencyUnavailable(TelemetryError):
    """A service this process needs (Kafka, the IS database) cannot serve now."""


class KafkaUnavailable(DependencyUnavailable):
    """No Kafka broker answered at the configured bootstrap servers (or a topic has no partitions there yet)."""


class BrokerFailed(TelemetryError):
    """The embedded broker could not be started (its port is taken, its binary is missing), or exited."""


class ConfigError(TelemetryError, ValueError):
    """The configuration cannot work; the message says what to change."""


class RequestRefused(TelemetryError):
    """An HTTP request answered with an error status (4xx/5xx) and a one-line JSON body."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or {}
        self.extra = extra  # more fields for the JSON body (e.g. ClickHouse's error code)

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message, **self.extra}


class Unauthorized(RequestRefused):
    status, code = 401, "unauthorized"


class Forbidden(RequestRefused):
    status, code = 403, "forbidden"


class WriteRefused(Forbidden):
    """A statement that would write, change settings or reach outside the database."""

    code = "writes_not_allowed"


class NotAllowed(Forbidden):
    """A statement that uses a function, table, table function or clause that is not on the analysts' allowlists."""

    code = "not_allowed"


class PayloadTooLarge(RequestRefused):
    status, code = 413, "too_large"


class UnsupportedMediaType(RequestRefused):
    status, code = 415, "unsupported_media_type"


class RequestTimeout(RequestRefused):
    status, code = 408, "request_timeout"


class QueryFailed(RequestRefused):
    """ClickHouse refused or stopped the query (syntax, unknown table, a limit): 400 with ClickHouse's code."""

    code = "query_failed"


class Unavailable(RequestRefused):
    """A dependency (Kafka, ClickHouse) cannot serve the request now; retry later."""

    status, code = 503, "unavailable"


class Stopped(TelemetryError):
    """A stop was requested (Ctrl-C / SIGTERM) while waiting to retry."""


class GaveUp(TelemetryError):
    """The retries were exhausted (by count or by time), or the failure cannot be retried."""

    def __init__(self, message: str, *, failures: int = 0, seconds: float = 0.0) -> None:
        super().__init__(message)
        self.failures, self.seconds = failures, seconds
