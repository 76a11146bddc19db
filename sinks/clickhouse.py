"""ClickHouse access: one code path for chDB (`chdb:///path`) and a server (`http(s)://...`).

`ClickHouseStore` applies the migrations, writes batches idempotently and recomputes day aggregates:
- snapshots: ReplacingMergeTree(version) keyed (day, uid); version = receive ms << 64 | source offset,
  so a re-written snapshot collapses and the latest received wins;
- rejections: ReplacingMergeTree keyed by source position and receive time: a re-processed record
  counts once;
- daily_rollup: one row per day recomputed whole from that day's snapshots (FINAL) and rejections,
  versioned by the ClickHouse time at which the read began, so the newest computation wins even with
  several writers.
A write retries with backoff while ClickHouse is unavailable (the caller does not commit offsets until
it returns), so nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import importlib.resources
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

SNAPSHOT_COLUMNS = [
    "day", "uid", "kind", "received_at", "version", "source_partition", "source_offset", "default_uid", "flags",
    "operating_system", "arch", "binary_version", "version_major_minor", "golang_version", "gateways",
    "gateways_by_frequency_plan", "end_devices", "active_end_devices", "active_last_day", "active_last_week",
    "active_last_month", "applications", "users_standard", "users_admin", "users_total", "organizations", "cli", "body",
]
_COUNT_FIELDS = [
    "gateways", "end_devices", "active_end_devices", "active_last_day", "active_last_week", "active_last_month",
    "applications", "users_standard", "users_admin", "organizations",
]
REJECTION_COLUMNS = ["day", "received_at", "reason", "message", "source_topic", "source_partition", "source_offset", "body"]

ROLLUP_SQL = """
SELECT day,
       countIf(kind = 'is') AS deployments,
       countIf(kind = 'is' AND default_uid) AS default_uid_deployments,
       countIf(kind = 'is' AND notEmpty(flags)) AS inconsistent_deployments,
       countIf(kind = 'cli') AS cli_installs,
       sum(gateways), sum(end_devices), sum(active_end_devices), sum(active_last_day), sum(active_last_week),
       sum(active_last_month), sum(applications), sum(users_standard), sum(users_admin), sum(organizations),
       sumMap(gateways_by_frequency_plan),
       sumMapIf(map(version_major_minor, toUInt64(1)), kind = 'is'),
       sumMapIf(map(operating_system, toUInt64(1)), kind = 'is'),
       sumMapIf(map(arch, toUInt64(1)), kind = 'is'),
       sumMapIf(map(golang_version, toUInt64(1)), kind = 'is'),
       sumMapIf(map(version_major_minor, toUInt64(1)), kind = 'cli'),
       sumMapIf(map(operating_system, toUInt64(1)), kind = 'cli'),
       sumMapIf(map(arch, toUInt64(1)), kind = 'cli'),
       now64(6, 'UTC')
FROM snapshots FINAL
WHERE day IN {days:Array(Date)}
GROUP BY day
"""
REJECTED_SQL = """
SELECT day, sumMap(map(reason, toUInt64(1)))
FROM rejections FINAL
WHERE day IN {days:Array(Date)}
GROUP BY day
"""
ROLLUP_COLUMNS = [
    "day", "deployments", "default_uid_deployments", "inconsistent_deployments", "cli_installs", *_COUNT_FIELDS,
    "gateways_by_frequency_plan", "deployments_by_version", "deployments_by_os", "deployments_by_arch",
    "deployments_by_go_version", "cli_by_version", "cli_by_os", "cli_by_arch", "computed_at", "rejected_by_reason",
]


@dataclass
class Batch:
    """What one flush writes: snapshot rows and rejection rows (dicts from processors.rollup)."""

    snapshots: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)

    def days(self) -> set[date]:
        return {date.fromisoformat(r["day"]) for r in (*self.snapshots, *self.rejections)}

    def __len__(self) -> int:
        return len(self.snapshots) + len(self.rejections)


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def snapshot_values(row: dict[str, Any]) -> list[Any]:
    return [
        date.fromisoformat(row["day"]), row["uid"], row["kind"], _ms(row["received_at_ms"]),
        (row["received_at_ms"] << 64) | row["source_offset"], row["source_partition"], row["source_offset"],
        row["default_uid"], row["flags"], row["operating_system"], row["arch"], row["binary_version"], row["version"],
        row["golang_version"], row.get("gateways", 0), row.get("gateways_by_frequency_plan", {}),
        *(row.get(f, 0) for f in _COUNT_FIELDS[1:-1]), row.get("users_total"), row.get("organizations", 0),
        row["cli"], row["body"],
    ]


def rejection_values(row: dict[str, Any]) -> list[Any]:
    return [
        date.fromisoformat(row["day"]), _ms(row["received_at_ms"]), row["reason"], row["message"], row["source_topic"],
        row["source_partition"], row["source_offset"], row["body"],
    ]


def connect(dsn: str, settings: dict[str, Any] | None = None) -> Client:
    """chdb:///abs/path -> embedded chDB; http(s)://user:pass@host:port/db -> a ClickHouse server.
    `settings` go with every request (servers only)."""
    url = urlparse(dsn)
    if url.scheme == "chdb":
        if not url.path.startswith("/"):
            raise ValueError(f"chdb DSN needs an absolute path: chdb:///abs/path (got {dsn})")
        if settings:
            raise ValueError("per-request settings are for servers; on chDB use SET on the session")
        return clickhouse_connect.get_client(dsn=dsn)
    if url.scheme in ("http", "https"):
        database = url.path.strip("/") or "default"
        secure = url.scheme == "https"
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        return clickhouse_connect.get_client(
            host=url.hostname or "localhost", port=url.port or (8443 if secure else 8123), username=url.username or "default",
            password=url.password or "", database=database, secure=secure, settings=settings, **query,
        )
    raise ValueError(f"unsupported ClickHouse DSN {dsn!r}: use chdb:///abs/path or http(s)://user:pass@host:8123/db")


def migrations() -> list[tuple[int, str, list[str]]]:
    """(version, name, statements) of every file in sinks/migrations, in order."""
    found = []
    for entry in importlib.resources.files("sinks.migrations").iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        statements = [s.strip() for s in entry.read_text().split(";\n") if _strip_comments(s).strip()]
        found.append((version, name, statements))
    return sorted(found)


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))


class ClickHouseStore:
    def __init__(self, dsn: str, snapshot_ttl_days: int = 0, retry_max_s: float = 30.0) -> None:
        self.dsn = dsn
        self.snapshot_ttl_days = snapshot_ttl_days
        self.retry_max_s = retry_max_s
        self._client: Client | None = None
        self._reader: Client | None = None  # query() has a session of its own: reads never wait for the writer
        self._lock = threading.RLock()  # serialises the writer's calls on its session
        self._read_lock = threading.Lock()
        self.stopping = threading.Event()
        self.last_write_at: float | None = None

    # -- connection -------------------------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = connect(self.dsn)
        return self._client

    def open(self) -> ClickHouseStore:
        self._retrying("connect and migrate", self.migrate)
        return self

    def close(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
            self._reader = None
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run fn until it succeeds, backing off while ClickHouse is unavailable (or until stopping is set)."""
        delay, attempt = 0.5, 0
        while True:
            try:
                with self._lock:
                    result = fn()
                if attempt:
                    log.warning("ClickHouse %s succeeded after %d failed attempts: recovered", what, attempt)
                return result
            except (TypeError, KeyError, AttributeError):
                raise  # our bug, not ClickHouse's availability: fail loudly at once
            except Exception as exc:  # driver, network, disk: retry with backoff; the log says so
                attempt += 1
                if self.stopping.is_set():
                    raise
                level = logging.WARNING if attempt < 10 else logging.ERROR  # a lasting failure may be ours, not ClickHouse's
                log.log(level, "ClickHouse %s failed (attempt %d, %s): %s; offsets are held, retrying in %.1fs",
                            what, attempt, redact(self.dsn), str(exc).splitlines()[0][:300], delay)
                if self._client is not None and not self.dsn.startswith("chdb:"):
                    self._client = None  # reconnect to a server
                self.stopping.wait(delay)
                delay = min(delay * 2, self.retry_max_s)

    # -- schema -----------------------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        c = self.client
        c.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC')) "
            "ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {r[0] for r in c.query("SELECT version FROM schema_migrations FINAL").result_rows}
        applied = []
        for version, name, statements in migrations():
            if version in done:
                continue
            for statement in statements:
                c.command(statement)
            c.insert("schema_migrations", [[version, name, datetime.now(UTC)]], column_names=["version", "name", "applied_at"])
            applied.append(name)
            log.info("applied migration %s", name)
        self._apply_ttl()
        return applied

    def _apply_ttl(self) -> None:
        if self.snapshot_ttl_days > 0:
            self.client.command(f"ALTER TABLE snapshots MODIFY TTL day + toIntervalDay({int(self.snapshot_ttl_days)})")
        else:
            create = self.client.command("SHOW CREATE TABLE snapshots")
            if "TTL" in str(create):
                self.client.command("ALTER TABLE snapshots REMOVE TTL")

    # -- writes -----------------------------------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        """Insert the batch and recompute its days; idempotent, retried until ClickHouse takes it."""
        if not batch:
            return
        days = sorted(batch.days())

        def _do() -> None:
            if batch.snapshots:
                self.client.insert("snapshots", [snapshot_values(r) for r in batch.snapshots], column_names=SNAPSHOT_COLUMNS)
            if batch.rejections:
                self.client.insert("rejections", [rejection_values(r) for r in batch.rejections], column_names=REJECTION_COLUMNS)
            self._refresh(days)

        self._retrying(f"write of {len(batch)} rows", _do)
        self.last_write_at = time.time()

    def refresh_days(self, days: Iterable[date]) -> None:
        self._retrying("refresh", lambda: self._refresh(sorted(set(days))))

    def _refresh(self, days: Sequence[date]) -> None:
        if self.snapshot_ttl_days > 0:
            # Snapshots of days beyond the TTL are gone: recomputing such a day would zero its aggregates.
            horizon = datetime.now(UTC).date() - timedelta(days=self.snapshot_ttl_days)
            days = [d for d in days if d > horizon]
        if not days:
            return
        c = self.client
        params = {"days": list(days)}
        rows = {r[0]: list(r) for r in c.query(ROLLUP_SQL, parameters=params).result_rows}
        rejected = dict(c.query(REJECTED_SQL, parameters=params).result_rows)
        computed_at = next(iter(rows.values()))[-1] if rows else None
        if computed_at is None:
            computed_at = c.query("SELECT now64(6, 'UTC')").result_rows[0][0]
        out = []
        for day in days:
            row = rows.get(day) or [day, *([0] * 14), *([{}] * 8), computed_at]
            out.append([*row[:-1], computed_at, rejected.get(day, {})])
        c.insert("daily_rollup", out, column_names=ROLLUP_COLUMNS)

    # -- reads ------------------------------------------------------------------------------------------------

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
                return list(result.column_names), list(result.result_rows)
            except Exception:
                # A refused write can leave a chDB session stuck at readonly=1, an over-limit result leaves unread
                # data: start the next query on a fresh session.
                self._reader.close()
                self._reader = None
                raise


def redact(dsn: str) -> str:
    """The DSN with its password replaced by ***."""
    url = urlparse(dsn)
    if url.password:
        return dsn.replace(f":{url.password}@", ":***@")
    return dsn
