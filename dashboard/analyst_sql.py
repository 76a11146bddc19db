"""Analysts' queries: read-only by construction, bounded, never in the writer's way.

Two pools of ClickHouse sessions, neither ever the sink's writing session (in embedded mode each session is a chDB
connection handle of its own: chDB runs handles side by side, so the writer never waits behind an analyst):
- `SqlSessions`, for analysts' own SQL (POST /api/sql, `is-telemetry sql`): `prepare(engine, sql, format)` has
  ClickHouse parse the text (`formatQuerySingleLine`, then `parseQueryToJSON` of that canonical text), checks the
  parse against allowlists (dashboard/sql_check.py: node kinds, functions, table functions, tables), and streams
  ClickHouse's own output of the canonical text, never the client's bytes (dashboard/sql_engine.py,
  dashboard/sql_formats.py). The client's text reaches ClickHouse only hex-encoded, inside `unhex('...')`.
- `AnalystSessions`, for the dashboard's panels: the project's own queries, with typed parameters, as Python rows.

Every session is set up once with the limits (time, memory, result rows and bytes, threads, a low thread priority)
and then `readonly = 1`, after which ClickHouse refuses every write, every DDL and every change of a setting, the
limits included. Against a server, point `api.clickhouse_dsn` at a read-only user whose settings profile holds the
limits (compose/clickhouse/users.d/analyst.xml, which also grants it no source privileges: no FILE, URL, S3,
REMOTE...); a user that is not read-only gets the same session settings with every request.
Statuses come from the error's type or ClickHouse's error code, never from words in a message.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from queue import Empty, Queue
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError

from core.clickhouse_client import connect, redact
from core.config import Settings
from core.errors import PayloadTooLarge, QueryFailed, RequestRefused, Unavailable, WriteRefused
from dashboard.sql_check import Catalog, check
from dashboard.sql_engine import Chunks, Engine, EngineError, open_engine
from dashboard.sql_formats import OutputFormat

log = logging.getLogger(__name__)

#: ClickHouse error codes that mean "refused in read-only mode / not permitted".
READONLY_CODES = frozenset({164, 497, 291})  # READONLY, ACCESS_DENIED, DATABASE_ACCESS_DENIED
#: parseQueryToJSON's answer for a statement it cannot serialise (DESCRIBE, INSERT, DROP, ...).
UNSERIALISABLE = 36  # BAD_ARGUMENTS
UNKNOWN_FUNCTION = 46
#: The longest statement checked: ClickHouse reads it hex-encoded (twice the bytes) within max_query_size.
MAX_STATEMENT_BYTES = 256 * 1024
_NOISE = re.compile(r"^Code: \d+\. DB::Exception: |\s*\([A-Z][A-Z0-9_]+\)\s*$|:?\s*In scope .*$")


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

    def streaming_settings(self) -> dict[str, Any]:
        """A session that streams analysts' results: smaller blocks, since ClickHouse writes a block's output whole
        (a block of 2,048 rows of the widest JSON holds a few MB; measured in tests/test_hostile_clients.py)."""
        return {**self.session_settings(), "max_block_size": 2048}

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
            "max_query_size": 2 * MAX_STATEMENT_BYTES + 4096,
            "os_thread_priority": 19,  # the writer's threads win the CPU
            "allow_introspection_functions": 0,
            "allow_ddl": 0,
            # what analysts read: ISO times, numbers as numbers
            "date_time_output_format": "iso",
            "output_format_json_quote_64bit_integers": 0,
            "output_format_json_validate_utf8": 1,  # JSON results stay valid UTF-8 whatever bytes a value holds
        }


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def short_message(text: str) -> str:
    """ClickHouse's error in one line: its first sentence, without the code prefix, the internal scope and the list
    of expected tokens ("Syntax error: failed at position 1 ('SELEC')")."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = _NOISE.sub("", line).strip()
    for cut in (". Expected one of", ": while executing", ". Stack trace"):
        if cut in line:
            line = line[: line.index(cut)]
    return line[:300].rstrip(" .:")


def query_error(exc: BaseException) -> QueryFailed | WriteRefused | Unavailable:
    """The HTTP-facing error for a ClickHouse failure, chosen by ClickHouse's error code."""
    error = exc if isinstance(exc, EngineError) else EngineError.of(exc)
    if error.unavailable or (not error.code and not isinstance(exc, (DatabaseError, EngineError))):
        return Unavailable(
            f"ClickHouse is unavailable: {short_message(error.text)}",
            code="clickhouse_unavailable",
            headers={"Retry-After": "5"},
        )
    code, name, detail = error.code, error.name, error.text.strip()[:2000]
    if code in READONLY_CODES:
        return WriteRefused(
            f"writes are not allowed (read-only): {short_message(error.text)}",
            clickhouse_code=code,
            clickhouse_error=name,
            detail=detail,
        )
    return QueryFailed(
        short_message(error.text) or name or "query failed", clickhouse_code=code, clickhouse_error=name, detail=detail
    )


class AnalystSessions:
    """A pool of read-only, limited ClickHouse sessions for the dashboard's own queries (typed parameters in, Python
    rows out)."""

    def __init__(self, dsn: str, limits: QueryLimits, size: int = 4, queue_s: float = 5.0) -> None:
        self.dsn, self.limits, self.size, self.queue_s = dsn, limits, size, queue_s
        self._idle: Queue[Client] = Queue()
        self._created = 0
        self._lock = threading.Lock()
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

    # -- running ----------------------------------------------------------------------------------------------

    def run(self, sql: str, parameters: dict[str, Any] | None = None) -> Result:
        """Run one of the project's own queries (dashboard panels) on a read-only, limited session."""
        with self.session() as client:
            try:
                result = client.query(sql, parameters=parameters)
            except DatabaseError as exc:
                raise query_error(exc) from exc
            return Result(list(result.column_names), [tuple(r) for r in result.result_rows])


def _readonly(client: Client) -> int:
    return int(client.query("SELECT getSetting('readonly')").result_rows[0][0])


def new_query_id() -> str:
    return uuid.uuid4().hex


# -- analysts' own SQL ----------------------------------------------------------------------------------------------

_MARKER = "/* is-telemetry analyst {id} */ "


@dataclass
class Prepared:
    """A checked statement, running: its format, the header ClickHouse wrote for it and the stream of its rows."""

    fmt: OutputFormat
    canonical: str
    header: bytes
    chunks: Chunks
    marker: str = ""


@dataclass
class _Functions:
    exact: dict[str, str] = field(default_factory=dict)
    folded: dict[str, str] = field(default_factory=dict)
    aggregates: frozenset[str] = frozenset()


class SqlSessions:
    """Engines for analysts' own SQL (dashboard/sql_engine.py), at most `size` at once; each runs one statement at a
    time. The caller holds a slot while it uses an engine (the API: an asyncio semaphore; the CLI: itself)."""

    def __init__(self, dsn: str, limits: QueryLimits, size: int = 4, queue_s: float = 5.0) -> None:
        self.dsn, self.limits, self.size, self.queue_s = dsn, limits, size, queue_s
        self._idle: list[Engine] = []
        self._lock = threading.Lock()
        self._functions: _Functions | None = None
        self._control: Client | None = None  # KILL QUERY for a statement whose client went away
        self._control_lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlSessions:
        a = settings.api
        return cls(settings.analyst_dsn, QueryLimits.from_settings(settings), a.query_concurrency, a.query_queue_s)

    # -- engines ----------------------------------------------------------------------------------------------

    def engine(self) -> Engine:
        """An idle engine, or a new one (RequestRefused if ClickHouse cannot give one)."""
        if self._closed:
            raise Unavailable("the API is stopping", code="stopping")
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            return open_engine(self.dsn, self.limits.streaming_settings())
        except EngineError as exc:
            raise query_error(exc) from exc

    def give_back(self, engine: Engine, healthy: bool) -> None:
        """An engine after its statement: kept if the statement ended cleanly, else closed (a stopped stream may leave
        state behind; the next statement gets a fresh engine)."""
        if healthy and not self._closed:
            with self._lock:
                self._idle.append(engine)
            return
        engine.close()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for engine in idle:
            engine.close()
        with self._control_lock:
            if self._control is not None:
                self._control.close()
                self._control = None

    # -- the check --------------------------------------------------------------------------------------------

    def catalog(self, engine: Engine) -> Catalog:
        """What names mean on this ClickHouse: its functions (read once) and, each time, its tables."""
        if self._functions is None:
            rows = _rows(engine, "SELECT name, alias_to, case_insensitive, is_aggregate FROM system.functions")
            found = _Functions()
            for name, alias_to, case_insensitive, _ in rows:
                canonical = alias_to or name
                found.exact[name] = canonical
                if case_insensitive:
                    found.folded[name.lower()] = canonical
            found.aggregates = frozenset(name for name, alias_to, _, aggregate in rows if aggregate and not alias_to)
            self._functions = found
        functions = self._functions
        database = _ask(engine, "SELECT currentDatabase()").decode()
        tables = _rows(
            engine,
            "SELECT database, name FROM system.tables "
            "WHERE database IN (currentDatabase(), 'system', 'information_schema', 'INFORMATION_SCHEMA')",
        )  # the check's own catalogue: this query is the project's, never an analyst's
        return Catalog(
            database, frozenset((d, t) for d, t in tables), functions.exact, functions.folded, functions.aggregates
        )

    def checked(self, engine: Engine, sql: str, catalog: Catalog | None = None) -> str:
        """ClickHouse's canonical text of `sql` once its parse passed the allowlists; RequestRefused otherwise."""
        data = sql.encode("utf-8", "surrogatepass")
        if len(data) > MAX_STATEMENT_BYTES:
            raise QueryFailed(f"the statement is longer than {MAX_STATEMENT_BYTES} bytes", code="too_long")
        # ClickHouse writes a literal's bytes as they are ('\xff' becomes the byte 0xFF): invalid UTF-8 is replaced,
        # and what is checked below, and runs, is that text
        canonical = _ask(engine, f"SELECT formatQuerySingleLine(unhex('{data.hex()}'))").decode("utf-8", "replace")
        if not canonical.strip():
            raise QueryFailed("empty query")
        try:
            tree = orjson.loads(_ask(engine, f"SELECT parseQueryToJSON(unhex('{canonical.encode().hex()}'))"))
        except RequestRefused as exc:
            code = exc.extra.get("clickhouse_code")
            if code == UNSERIALISABLE:
                raise WriteRefused(
                    "only SELECT, WITH and EXPLAIN statements run here; for a table's columns, "
                    "SELECT name, type FROM system.columns WHERE table = '...'"
                ) from exc
            if code == UNKNOWN_FUNCTION:
                raise Unavailable(
                    "analysts' SQL needs ClickHouse 26.8 or newer (it checks statements with parseQueryToJSON)",
                    code="clickhouse_too_old",
                ) from exc
            raise
        check(tree, catalog or self.catalog(engine))
        return canonical

    def prepare(self, engine: Engine, sql: str, fmt: OutputFormat, query_id: str = "") -> Prepared:
        """Check `sql` and start it in `fmt`: the header is written, the rows are ready to be read."""
        catalog = self.catalog(engine)
        canonical = self.checked(engine, sql, catalog)
        header = b""
        if fmt.header is not None:
            wrapped = self.checked(engine, f"SELECT * FROM ({canonical}) LIMIT 0", catalog)  # what runs is checked
            header = _output(engine, wrapped, fmt.header)
        marker = _MARKER.format(id=query_id) if query_id else ""
        try:
            chunks = engine.stream(marker + canonical, fmt.body)
        except EngineError as exc:
            raise query_error(exc) from exc
        return Prepared(fmt, canonical, header, chunks, marker)

    def run(self, sql: str) -> Result:
        """Check and run `sql` whole, on an engine of its own (for the command line and tests; the API streams):
        its columns and its rows as JSON values. RequestRefused if it is refused, fails or is cut short."""
        from dashboard.sql_formats import FORMATS, ResultCut, frame

        engine = self.engine()
        healthy = False
        try:
            prepared = self.prepare(engine, sql, FORMATS["json"])
            body = b"".join(frame(prepared.fmt, prepared.header, prepared.chunks, self.limits.max_result_bytes))
            healthy = True
        except ResultCut as exc:
            raise PayloadTooLarge(exc.message, code=exc.code) from exc
        except EngineError as exc:
            raise query_error(exc) from exc
        finally:
            self.give_back(engine, healthy)
        data = orjson.loads(body)
        return Result(list(data["columns"]), [tuple(row) for row in data["rows"]])

    def cancel(self, marker: str) -> None:
        """Kill the statement that carries `marker` (best effort; returns at once)."""
        if not marker:
            return
        with self._control_lock:
            try:
                if self._control is None:
                    self._control = connect(self.dsn)
                self._control.command("KILL QUERY WHERE startsWith(query, {m:String}) ASYNC", parameters={"m": marker})
            except (ClickHouseError, OSError) as exc:
                log.warning("could not cancel an abandoned analyst query: %s", short_message(str(exc)))
                if self._control is not None:
                    self._control.close()
                    self._control = None


def _ask(engine: Engine, sql: str) -> bytes:
    try:
        return engine.value(sql)
    except EngineError as exc:
        raise query_error(exc) from exc


def _output(engine: Engine, sql: str, fmt: str) -> bytes:
    try:
        return engine.output(sql, fmt)
    except EngineError as exc:
        raise query_error(exc) from exc


def _rows(engine: Engine, sql: str) -> list[list[Any]]:
    return [orjson.loads(line) for line in _output(engine, sql, "JSONCompactEachRow").splitlines() if line]
