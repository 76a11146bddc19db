"""The connection to ClickHouse: one code path for chDB (`chdb:///path`) and a server (`http(s)://...`), the writer's
session and the reads' own, and the retries of the writer's calls while ClickHouse is unavailable (core/retry.py).

A call retries with backoff for at most `retry_s` (a write) or until it succeeds (connecting and migrating), each
failure logged; then it raises `SinkUnavailable` and the caller pauses and rewinds (sinks/checkpoint.py). When
`stopping` is set, the call is tried once more and its error raised as it is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client

from core.clickhouse_client import connect, redact
from core.errors import ConfigError, GaveUp, TelemetryError
from core.retry import RetryPolicy, first_line, with_retries

log = logging.getLogger("sinks.clickhouse")  # the store's lines keep the logger name operators filter on

T = TypeVar("T")

#: ClickHouse error codes that are about load or the network, not the request: retried like a lost connection.
TRANSIENT_CODES = frozenset({3, 159, 160, 202, 203, 209, 210, 241, 242, 252, 425, 999})


class StoreRefused(ConfigError):
    """ClickHouse answered with an error that waiting cannot mend (a migration's SQL, authentication, an unknown
    database), or the chDB directory cannot be opened: raised at once, never retried."""


class SinkUnavailable(TelemetryError):
    """ClickHouse did not take a write within the retry time; the caller rewinds and tries again later."""


class Connection:
    """The writer's session (`client`, its calls serialised by `lock`), the reads' session (`query`), and the
    writer's retries (`retrying`)."""

    def __init__(self, dsn: str, retry_s: float = 30.0, retry_max_s: float = 8.0) -> None:
        self.dsn = dsn
        self.retry_s = retry_s  # how long one write retries before SinkUnavailable
        self.retry_max_s = retry_max_s  # the longest pause between two attempts
        self._client: Client | None = None
        self._reader: Client | None = None  # query() has a session of its own: reads never wait for the writer
        self.lock = threading.RLock()  # serialises the writer's calls on its session
        self._read_lock = threading.Lock()
        self.stopping = threading.Event()

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = connect(self.dsn)
        return self._client

    @property
    def connected(self) -> bool:
        """Whether the writer's session is open (a chDB directory that could not be opened leaves it closed)."""
        return self._client is not None

    def close(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
            self._reader = None
        with self.lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    def retrying(self, what: str, fn: Callable[[], T], deadline_s: float | None) -> T:
        """Run fn on the writer's session, backing off while ClickHouse is unavailable, until it succeeds,
        `stopping` is set (the error is raised) or `deadline_s` has passed (SinkUnavailable is raised)."""

        def locked() -> T:
            with self.lock:
                return fn()

        policy = RetryPolicy(initial_s=0.5, maximum_s=self.retry_max_s, deadline_s=deadline_s)
        try:
            return with_retries(locked, policy, self.stopping, _retriable, report=_Report(self, what), last_try=True)
        except GaveUp as exc:
            raise SinkUnavailable(
                f"ClickHouse {what} failed for {exc.seconds:.0f}s ({exc.failures} attempts): {exc}"
            ) from exc.__cause__

    def _reconnect_later(self) -> None:
        """After a failure: a server's session is opened again by the next attempt (chDB's stays)."""
        if self._client is not None and not self.dsn.startswith("chdb:"):
            self._client = None

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, readonly: bool = True, limit_rows: int = 100_000
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The project's own reads (tests, benches, status). Analysts' SQL goes through dashboard/analyst_sql.py,
        which checks the statement and runs it on read-only sessions with limits."""
        settings: dict[str, Any] = {"readonly": 1} if readonly else {}
        if readonly and limit_rows:
            settings.update(max_result_rows=limit_rows, result_overflow_mode="throw")
        with self._read_lock:
            if self._reader is None:
                self._reader = connect(self.dsn)
            try:
                result = self._reader.query(sql, parameters=parameters, settings=settings)
                return list(result.column_names), [tuple(r) for r in result.result_rows]
            except Exception:
                # A refused write can leave a chDB session stuck at readonly=1, an over-limit result leaves unread
                # data: start the next query on a fresh session.
                self._reader.close()
                self._reader = None
                raise


def _retriable(exc: BaseException) -> str | None:
    """ClickHouse's unavailability is retried; our own bug (a wrong row, a wrong type) is raised at once."""
    if isinstance(exc, TypeError | KeyError | AttributeError | ValueError):
        return None
    return first_line(exc)


@dataclass
class _Report:
    """The writer's retry lines (core/retry.py Report): each failure with its attempt and the wait, the recovery."""

    connection: Connection
    what: str

    def retrying(self, line: str, failures: int, wait: float) -> None:
        level = logging.WARNING if failures < 10 else logging.ERROR  # a lasting failure may be ours, not ClickHouse's
        log.log(
            level,
            "ClickHouse %s failed (attempt %d, %s): %s; offsets are held, retrying in %.1fs",
            self.what,
            failures,
            redact(self.connection.dsn),
            line,
            wait,
        )
        self.connection._reconnect_later()

    def gave_up(self, line: str, failures: int) -> None:
        return None  # SinkUnavailable says it, to the caller that pauses and rewinds

    def recovered(self, failures: int) -> None:
        log.warning("ClickHouse %s succeeded after %d failed attempts: recovered", self.what, failures)
