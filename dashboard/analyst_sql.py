"""Analysts' queries: read-only by construction, bounded, never in the writer's way.

Every analyst query (POST /api/sql, the dashboard's panels, `is-telemetry sql`) runs on one of a small pool of
ClickHouse sessions of its own (`AnalystSessions`), never on the sink's writing session:
- In embedded mode each session is its own chDB connection handle to the same engine: chDB runs queries on
  different handles side by side, so the writer never waits behind an analyst (tests/test_hostile_clients.py).
- Each session is set up once with the limits (`max_execution_time`, `max_memory_usage`, `max_result_rows`,
  `max_result_bytes`, `max_threads`, a low thread priority) and then `readonly = 1`, after which ClickHouse
  refuses every write, every DDL, every table function and every change of a setting, the limits included.
  Against a server, point `api.clickhouse_dsn` at a read-only user whose settings profile holds the limits
  (compose/clickhouse/users.d/analyst.xml); a user that is not read-only gets the same session settings.
- A SQL text from a client is first checked with ClickHouse's own parser (`check_statement`): exactly one
  statement (`formatQuerySingleLine` refuses multi-statements), of a reading kind (SELECT / WITH / SHOW /
  DESCRIBE / EXPLAIN), without INTO OUTFILE and without functions that reach the host or the network (`file`,
  and every table function but a few generators, from `system.table_functions`). What runs is ClickHouse's
  own canonical text of the statement it checked, never the client's bytes.
- A query whose client goes away is killed (`KILL QUERY` by the marker comment each query carries).
Statuses come from the error's type or ClickHouse's error code, never from words in a message.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from queue import Empty, Queue
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError

from is_telemetry.clickhouse_client import connect, redact
from is_telemetry.config import Settings
from is_telemetry.errors import QueryFailed, Unavailable, WriteRefused

log = logging.getLogger(__name__)

#: Statement kinds a client may run, by the first keyword of ClickHouse's canonical text ...
READING_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "EXPLAIN"})
#: ... and by the root of ClickHouse's AST (`EXPLAIN AST`).
READING_AST_ROOTS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "Show", "Describe", "Explain")
#: Table functions that only generate or reshape data; every other one (file, url, s3, remote, executable,
#: mysql, python, ...) is refused.
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "generate_series",
        "generateseries",
        "values",
        "null",
        "view",
        "merge",
        "format",
        "generaterandom",
        "primes",
    }
)
#: Ordinary functions that read the host's files.
HOST_FUNCTIONS = frozenset({"file"})
#: ClickHouse error codes that mean "refused in read-only mode / not permitted".
READONLY_CODES = frozenset({164, 497, 291})  # READONLY, ACCESS_DENIED, DATABASE_ACCESS_DENIED

_FUNCTION = re.compile(r"^\s*Function (\S+)")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"", re.S)
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.I)
_MARKER = "/* is-telemetry analyst {id} */ "


@dataclass(frozen=True)
class QueryLimits:
    timeout_s: float = 30.0
    max_memory_bytes: int = 1_000_000_000
    max_result_rows: int = 100_000
    max_result_bytes: int = 32 * 1024 * 1024
    max_threads: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        a = settings.api
        return cls(
            a.query_timeout_s,
            a.query_max_memory_bytes,
            a.query_max_result_rows,
            a.query_max_result_bytes,
            a.query_max_threads,
        )

    def session_settings(self) -> dict[str, Any]:
        """What a session is set to before `readonly = 1` freezes it."""
        return {
            "max_execution_time": self.timeout_s,
            "timeout_overflow_mode": "throw",
            "max_memory_usage": self.max_memory_bytes,
            "max_result_rows": self.max_result_rows,
            "max_result_bytes": self.max_result_bytes,
            "result_overflow_mode": "throw",
            "max_threads": self.max_threads,
            "os_thread_priority": 19,  # the writer's threads win the CPU
            "allow_introspection_functions": 0,
            "allow_ddl": 0,
        }


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def query_error(exc: BaseException) -> QueryFailed | WriteRefused | Unavailable:
    """The HTTP-facing error for a ClickHouse failure, chosen by ClickHouse's error code."""
    code = getattr(exc, "code", None)
    name = getattr(exc, "name", None) or ""
    text = str(exc).strip()
    message = text.splitlines()[0][:1000] if text else type(exc).__name__
    if isinstance(exc, DatabaseError) and code is not None:
        if code in READONLY_CODES:
            return WriteRefused(
                f"writes are not allowed (read-only): {message}", clickhouse_code=code, clickhouse_error=name
            )
        return QueryFailed(message, clickhouse_code=code, clickhouse_error=name)
    return Unavailable(
        f"ClickHouse is unavailable: {message}", code="clickhouse_unavailable", headers={"Retry-After": "5"}
    )


def _outside_quotes(sql: str) -> str:
    return _QUOTED.sub("''", sql)


class AnalystSessions:
    """A pool of read-only, limited ClickHouse sessions for analysts' queries."""

    def __init__(self, dsn: str, limits: QueryLimits, size: int = 4, queue_s: float = 5.0) -> None:
        self.dsn, self.limits, self.size, self.queue_s = dsn, limits, size, queue_s
        self._idle: Queue[Client] = Queue()
        self._created = 0
        self._lock = threading.Lock()
        self._control: Client | None = None  # for KILL QUERY
        self._control_lock = threading.Lock()
        self._denied: frozenset[str] | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, size: int | None = None) -> AnalystSessions:
        return cls(
            settings.analyst_dsn,
            QueryLimits.from_settings(settings),
            size or settings.api.query_concurrency,
            settings.api.query_queue_s,
        )

    # -- sessions ---------------------------------------------------------------------------------------------

    def _open(self) -> Client:
        settings = self.limits.session_settings()
        embedded = self.dsn.startswith("chdb:")
        client = connect(self.dsn)
        try:
            if _readonly(client) == 0:  # ours to set up; a read-only user's profile already holds its limits
                if embedded:  # a chDB handle keeps SET for its life
                    for key, value in settings.items():
                        client.command(f"SET {key} = {value!r}" if isinstance(value, str) else f"SET {key} = {value}")
                    client.command("SET readonly = 1")
                else:  # HTTP sessions expire: send the settings with every request instead
                    client.close()
                    client = connect(self.dsn, settings={**settings, "readonly": 1})
            level = _readonly(client)
        except BaseException:
            client.close()
            raise
        if level == 0:
            client.close()
            raise Unavailable(
                "the analysts' ClickHouse session is not read-only; refusing to run queries on it", code="not_read_only"
            )
        if level == 2:
            log.warning(
                "the analysts' ClickHouse user has readonly = 2 (may change settings): its own queries can "
                "lift the limits; give it readonly = 1 (compose/clickhouse/users.d/analyst.xml)"
            )
        return client

    @contextlib.contextmanager
    def session(self) -> Iterator[Client]:
        """A session for one query: waits up to queue_s for a free one (503 after that)."""
        if self._closed:
            raise Unavailable("the API is stopping", code="stopping")
        client: Client | None = None
        with self._lock:
            if self._idle.empty() and self._created < self.size:
                self._created += 1
                create = True
            else:
                create = False
        if create:
            try:
                client = self._open()
            except ClickHouseError as exc:
                with self._lock:
                    self._created -= 1
                raise query_error(exc) from exc
            except OSError as exc:
                with self._lock:
                    self._created -= 1
                raise Unavailable(f"ClickHouse is unavailable: {exc}", code="clickhouse_unavailable") from exc
        else:
            try:
                client = self._idle.get(timeout=self.queue_s)
            except Empty:
                raise Unavailable(
                    f"{self.size} analyst queries are running; retry shortly", code="busy", headers={"Retry-After": "2"}
                ) from None
        healthy = True
        try:
            yield client
        except WriteRefused:
            raise  # refused before anything ran: the session is untouched
        except BaseException:
            healthy = False  # a failed or stopped query may leave state behind: the next one gets a fresh session
            raise
        finally:
            if healthy and not self._closed:
                self._idle.put(client)
            else:
                client.close()
                with self._lock:
                    self._created -= 1

    def probe(self) -> bool:
        """Open one session now (at start-up) so that a wrong or unreachable ClickHouse shows in the log at once."""
        try:
            with self.session() as client:
                client.query("SELECT 1")
        except (Unavailable, QueryFailed, ClickHouseError, OSError) as exc:
            log.warning(
                "ClickHouse for analysts' queries (%s) is not usable yet: %s; queries answer 503 until it is",
                redact(self.dsn),
                getattr(exc, "message", None) or str(exc).splitlines()[0][:300],
            )
            return False
        return True

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except Empty:
                break
        with self._control_lock:
            if self._control is not None:
                self._control.close()
                self._control = None

    # -- the statement check ----------------------------------------------------------------------------------

    def _denied_functions(self, client: Client) -> frozenset[str]:
        if self._denied is None:
            table_functions = {
                str(r[0]).lower() for r in client.query("SELECT name FROM system.table_functions").result_rows
            }
            self._denied = frozenset((table_functions - SAFE_TABLE_FUNCTIONS) | HOST_FUNCTIONS)
        return self._denied

    def check_statement(self, client: Client, sql: str) -> str:
        """ClickHouse's canonical text of `sql` if it is one reading statement that stays inside the database;
        raises WriteRefused (403) or QueryFailed (400, e.g. a syntax error or several statements) otherwise."""
        try:
            canonical = str(
                client.query("SELECT formatQuerySingleLine({q:String})", parameters={"q": sql}).result_rows[0][0]
            )
        except DatabaseError as exc:  # a syntax error, several statements among them
            raise query_error(exc) from exc
        keyword = canonical.split(None, 1)[0].upper() if canonical.strip() else ""
        if keyword not in READING_KEYWORDS:
            raise WriteRefused(
                f"writes are not allowed: only {', '.join(sorted(READING_KEYWORDS))} statements run "
                f"here (got {keyword or 'nothing'})"
            )
        if _OUTFILE.search(_outside_quotes(canonical)):
            raise WriteRefused("writes are not allowed: INTO OUTFILE would write a file on the server")
        try:
            ast = [str(r[0]) for r in client.query("EXPLAIN AST " + canonical).result_rows]
        except DatabaseError as exc:
            raise query_error(exc) from exc
        if not ast or not ast[0].startswith(READING_AST_ROOTS):
            raise WriteRefused(
                f"writes are not allowed: {ast[0].split(' ')[0] if ast else 'empty'} is not a reading statement"
            )
        denied = self._denied_functions(client)
        for line in ast:
            m = _FUNCTION.match(line)
            if m and m.group(1).strip("`").lower() in denied:
                raise WriteRefused(
                    f"not allowed: {m.group(1)}() reaches outside the database (files, network, processes)",
                    code="outside_database",
                )
        return canonical

    # -- running ----------------------------------------------------------------------------------------------

    def run_client_sql(self, sql: str, query_id: str) -> Result:
        """Check and run an analyst's SQL text; query_id names it for `cancel`."""
        with self.session() as client:
            canonical = self.check_statement(client, sql)
            return self._run(client, _MARKER.format(id=query_id) + canonical, None)

    def run(self, sql: str, parameters: dict[str, Any] | None = None) -> Result:
        """Run one of the project's own queries (dashboard panels) on a read-only, limited session."""
        with self.session() as client:
            return self._run(client, sql, parameters)

    def _run(self, client: Client, sql: str, parameters: dict[str, Any] | None) -> Result:
        try:
            result = client.query(sql, parameters=parameters)
        except DatabaseError as exc:
            raise query_error(exc) from exc
        return Result(list(result.column_names), [tuple(r) for r in result.result_rows])

    def cancel(self, query_id: str) -> None:
        """Kill the query started with run_client_sql(..., query_id) (best effort; returns at once)."""
        marker = _MARKER.format(id=query_id)
        with self._control_lock:
            try:
                if self._control is None:
                    self._control = connect(self.dsn)
                self._control.command("KILL QUERY WHERE startsWith(query, {m:String}) ASYNC", parameters={"m": marker})
            except (ClickHouseError, OSError) as exc:
                log.warning("could not cancel an abandoned analyst query: %s", str(exc).splitlines()[0][:200])
                if self._control is not None:
                    self._control.close()
                    self._control = None


def _readonly(client: Client) -> int:
    return int(client.query("SELECT getSetting('readonly')").result_rows[0][0])


def new_query_id() -> str:
    return uuid.uuid4().hex
