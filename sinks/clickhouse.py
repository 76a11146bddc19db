"""ClickHouse access: one code path for chDB (`chdb:///path`) and a server (`http(s)://...`).

`ClickHouseStore` applies the migrations and writes batches of typed rows (core/rows.py) idempotently:
- snapshots: ReplacingMergeTree(version) keyed (day, uid); version = receive ms << 64 | source offset, so a
  re-written snapshot collapses and the latest received wins;
- rejections: ReplacingMergeTree keyed by source position and receive time: a re-processed record counts once;
- rollup_partitions: the processors' day aggregates per source partition (processors/rollup.py), versioned by
  roll-up generation and sequence; the views sum the partitions. No write reads a whole day back: the only reads
  are a late day's recompute (one day and partition) and a partition's state when it is taken on.
A write retries with backoff while ClickHouse is unavailable, for at most `retry_s`; then it raises
`SinkUnavailable` and the caller pauses and rewinds (sinks/checkpoint.py). Offsets are committed only after a
write succeeded, so nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import importlib.resources
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from core.clickhouse_client import connect, redact
from core.errors import ConfigError, TelemetryError
from core.rows import (
    COUNT_COLUMNS,
    MAP_COLUMNS,
    Batch,
    RejectionRow,
    RollupRow,
    SnapshotRow,
    columns,
    getters,
    ms_to_datetime,
    position,
)
from sinks import erasure, retention
from sinks.retention import Retention

log = logging.getLogger(__name__)


def _aggregates_sql(partition: str, where: str) -> str:
    """The day aggregates of snapshots per day and owning partition; `partition` and `where` are code constants
    (an expression, a WHERE clause with {name:Type} parameters), never values."""
    return f"""
SELECT day, {partition} AS part,
       countIf(kind = 'is'), countIf(kind = 'is' AND default_uid), countIf(kind = 'is' AND notEmpty(flags)),
       countIf(kind = 'cli'),
       sum(gateways), sum(end_devices), sum(active_end_devices), sum(active_last_day), sum(active_last_week),
       sum(active_last_month), sum(applications), sum(users_standard), sum(users_admin), sum(organizations),
       sumMap(gateways_by_frequency_plan),
       sumMapIf(map(version_major_minor, toUInt64(1)), kind = 'is'),
       sumMapIf(map(operating_system, toUInt64(1)), kind = 'is'),
       sumMapIf(map(arch, toUInt64(1)), kind = 'is'),
       sumMapIf(map(golang_version, toUInt64(1)), kind = 'is'),
       sumMapIf(map(version_major_minor, toUInt64(1)), kind = 'cli'),
       sumMapIf(map(operating_system, toUInt64(1)), kind = 'cli'),
       sumMapIf(map(arch, toUInt64(1)), kind = 'cli')
FROM snapshots FINAL
WHERE {where}
GROUP BY day, part
"""


def _rejected_sql(where: str) -> str:
    return f"""
SELECT day, source_partition, sumMap(map(reason, toUInt64(1)))
FROM rejections FINAL
WHERE {where}
GROUP BY day, source_partition
"""


_OWNER = "kafkaMurmurHash(uid) % {n:UInt32}"  # the partition Kafka's default partitioner gives the UID
#: The tables `clickhouse.snapshot_ttl_days` applies to: the snapshots and every CLI report (migration 0006).
TTL_TABLES = ("snapshots", "cli_reports")


class StoreRefused(ConfigError):
    """ClickHouse answered with an error that waiting cannot mend (a migration's SQL, authentication, an unknown
    database), or the chDB directory cannot be opened: raised at once, never retried."""


#: ClickHouse error codes that are about load or the network, not the request: retried like a lost connection.
TRANSIENT_CODES = frozenset({3, 159, 160, 202, 203, 209, 210, 241, 242, 252, 425, 999})


class SinkUnavailable(TelemetryError):
    """ClickHouse did not take a write within the retry time; the caller rewinds and tries again later."""


class PartitionCountChanged(ConfigError):
    """The raw topic's partition count differs from the one the roll-up in ClickHouse was built for."""


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
    """The pipeline's ClickHouse: migrations, idempotent writes, and the roll-up's state source (processors/rollup.py
    `StateSource`)."""

    def __init__(
        self,
        dsn: str,
        snapshot_ttl_days: int = 0,
        retry_s: float = 30.0,
        retry_max_s: float = 8.0,
        retention: Retention | None = None,
    ) -> None:
        self.dsn = dsn
        self.snapshot_ttl_days = snapshot_ttl_days
        self.retention = retention or Retention()  # the other TTLs (sinks/retention.py)
        self.erasures = erasure.InWrite()  # erasures the roll-up found still counted (sinks/erasure.py)
        self.retry_s = retry_s  # how long one write retries before SinkUnavailable
        self.retry_max_s = retry_max_s  # the longest pause between two attempts
        self._client: Client | None = None
        self._reader: Client | None = None  # query() has a session of its own: reads never wait for the writer
        self._lock = threading.RLock()  # serialises the writer's calls on its session
        self._read_lock = threading.Lock()
        self.stopping = threading.Event()
        self.last_write_at: float | None = None
        self._wire_types: dict[str, list[str]] = {}  # table -> the types its inserts are sent as
        self._native_tables: set[str] = set()  # tables whose rows fell back to the Native encoding (warned once)
        self._migrating = ""  # the migration being applied (for the error of one that fails)

    # -- connection -------------------------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = connect(self.dsn)
        return self._client

    def open(self) -> ClickHouseStore:
        """Connect and apply the migrations. Only connection errors (and ClickHouse's load errors) are retried, each
        attempt logged; an error ClickHouse answers otherwise, or a chDB directory that cannot be opened, raises
        StoreRefused at once with the reason."""
        self._retrying("connect and migrate", self._migrate_or_refuse, deadline_s=None)
        return self

    def _migrate_or_refuse(self) -> list[str]:
        try:
            return self.migrate()
        except DatabaseError as exc:
            where = f" (migration {self._migrating})" if self._migrating else ""
            reason = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
            code = getattr(exc, "code", None)
            if self.dsn.startswith("chdb:") and self._client is None and not isinstance(exc, OperationalError):
                raise StoreRefused(_chdb_unusable(self.dsn, reason)) from exc  # the directory could not be opened
            if code is not None and code not in TRANSIENT_CODES:
                raise StoreRefused(f"ClickHouse at {redact(self.dsn)} refused the set-up{where}: {reason}") from exc
            raise
        finally:
            self._migrating = ""

    def close(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
            self._reader = None
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    def _retrying(self, what: str, fn: Callable[[], Any], deadline_s: float | None) -> Any:
        """Run fn, backing off while ClickHouse is unavailable, until it succeeds, `stopping` is set (the error is
        raised) or `deadline_s` has passed (SinkUnavailable is raised)."""
        delay, attempt, started = 0.5, 0, time.monotonic()
        while True:
            try:
                with self._lock:
                    result = fn()
                if attempt:
                    log.warning("ClickHouse %s succeeded after %d failed attempts: recovered", what, attempt)
                return result
            except (TypeError, KeyError, AttributeError, ValueError):
                raise  # our bug, not ClickHouse's availability: fail loudly at once
            except Exception as exc:
                attempt += 1
                if self.stopping.is_set():
                    raise
                reason = str(exc).splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                if deadline_s is not None and time.monotonic() - started + delay > deadline_s:
                    raise SinkUnavailable(
                        f"ClickHouse {what} failed for {time.monotonic() - started:.0f}s ({attempt} attempts): {reason}"
                    ) from exc
                level = (
                    logging.WARNING if attempt < 10 else logging.ERROR
                )  # a lasting failure may be ours, not ClickHouse's
                log.log(
                    level,
                    "ClickHouse %s failed (attempt %d, %s): %s; offsets are held, retrying in %.1fs",
                    what,
                    attempt,
                    redact(self.dsn),
                    reason,
                    delay,
                )
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
            self._migrating = name
            for statement in statements:
                c.command(statement)
            c.insert(
                "schema_migrations",
                [[version, name, datetime.now(UTC)]],
                column_names=["version", "name", "applied_at"],
            )
            applied.append(name)
            log.info("applied migration %s", name)
        self._apply_ttl()
        return applied

    def _apply_ttl(self) -> None:
        present = {
            str(r[0])
            for r in self.client.query(
                "SELECT name FROM system.tables WHERE database = currentDatabase() AND name IN {names:Array(String)}",
                parameters={"names": list(TTL_TABLES)},
            ).result_rows
        }
        for table in (t for t in TTL_TABLES if t in present):  # a table a later migration adds is not there yet
            if self.snapshot_ttl_days > 0:
                self.client.command(
                    f"ALTER TABLE {table} MODIFY TTL day + toIntervalDay({int(self.snapshot_ttl_days)})"
                )
            else:
                create = self.client.command(f"SHOW CREATE TABLE {table}")
                if "TTL" in str(create):
                    self.client.command(f"ALTER TABLE {table} REMOVE TTL")
        retention.apply(self.client, self.retention)

    # -- writes -----------------------------------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        """Insert the batch (snapshots, rejections, then the aggregate rows); idempotent. Retries for `retry_s`,
        then raises SinkUnavailable."""
        if not batch:
            return
        self._retrying(f"write of {len(batch)} rows", lambda: self._write(batch), deadline_s=self.retry_s)
        self.last_write_at = time.time()

    def _insert(self, rows: Sequence[Any]) -> None:
        """One insert, column by column, as one JSON object of columns (ClickHouse's `JSONColumns`): orjson writes it
        in C, and ClickHouse parses it in C++, off the GIL. clickhouse-connect's Native encoding is done in Python,
        holding the GIL against the worker's event loop (~6 us a snapshot row against ~2.3). UInt128 columns go as
        strings (JSON numbers stop at 64 bits here). A value orjson cannot write falls back to the Native insert
        (LowCardinality columns sent as plain strings, encoded by ClickHouse)."""
        if not rows:
            return
        row_type: Any = type(rows[0])
        table, names = _TABLES[row_type], columns(row_type)
        types = self._wire_types.get(table)
        if types is None:
            described = {
                str(name): str(type_)
                for name, type_ in self.client.query(
                    "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
                    parameters={"t": table},
                ).result_rows
            }
            types = self._wire_types[table] = [described[n].replace("LowCardinality(String)", "String") for n in names]
        data = [[get(r) for r in rows] for get in getters(row_type)]
        try:
            body = _json_columns(names, types, data)
        except (TypeError, orjson.JSONEncodeError) as exc:  # e.g. an integer beyond 64 bits where none was expected
            if table not in self._native_tables:
                self._native_tables.add(table)
                log.warning(
                    "rows of %s sent in the Native encoding (slower): JSON could not hold them (%s)", table, exc
                )
            self.client.insert(table, data, column_names=names, column_type_names=types, column_oriented=True)
            return
        self.client.raw_insert(table, names, body, settings=_JSON_INSERT, fmt="JSONColumns")

    def _write(self, batch: Batch) -> None:
        self._insert(batch.snapshots)
        self._insert(batch.rejections)
        erasing = self.erasures.pending()  # after the inserts: a batch prepared before an erasure (sinks/erasure.py)
        rollups = list(batch.rollups) + (self.erasures.run(self.client, self.recompute) if erasing else [])
        horizon = self._ttl_horizon()
        for day, partition, version in batch.recompute:
            if horizon is None or day > horizon:  # beyond the TTL the snapshots are gone: keep the day's rows
                rollups.append(self.recompute(day, partition, batch.partitions_total, version))
        self._insert(rollups)
        self.erasures.done(erasing)

    def _ttl_horizon(self) -> date | None:
        if self.snapshot_ttl_days <= 0:
            return None
        return datetime.now(UTC).date() - timedelta(days=self.snapshot_ttl_days)

    def recompute(self, day: date, partition: int, partitions_total: int, version: int) -> RollupRow:
        """The aggregate row of (day, partition) computed from ClickHouse (a late record's day)."""
        params = {"day": day, "p": partition, "n": partitions_total}
        rows = self._aggregates(
            f"day = {{day:Date}} AND {_OWNER} = {{p:UInt32}}",
            "day = {day:Date} AND source_partition = {p:UInt32}",
            _OWNER,
            params,
            version,
        )
        return rows.get((day, partition)) or RollupRow(day, partition, version, datetime.now(UTC))

    def _aggregates(
        self, where: str, rejections_where: str, partition: str, params: dict[str, Any], version: int
    ) -> dict[tuple[date, int], RollupRow]:
        c = self.client
        now = datetime.now(UTC)
        out: dict[tuple[date, int], RollupRow] = {}
        for r in c.query(_aggregates_sql(partition, where), parameters=params).result_rows:
            counts, maps = r[2 : 2 + len(COUNT_COLUMNS)], r[2 + len(COUNT_COLUMNS) :]
            out[(r[0], int(r[1]))] = RollupRow(r[0], int(r[1]), version, now, *counts, **dict(zip(MAP_COLUMNS, maps)))
        for day, part, rejected in c.query(_rejected_sql(rejections_where), parameters=params).result_rows:
            row = out.get((day, int(part)))
            if row is None:
                row = out[(day, int(part))] = RollupRow(day, int(part), version, now)
            row.rejected_by_reason = dict(rejected)
        return out

    # -- the roll-up's state source (processors/rollup.py) ------------------------------------------------------

    def newest_days(self, partitions: list[int]) -> dict[int, date]:
        """The newest day of each partition's aggregate rows: where its roll-up window ended (partitions never
        written are absent)."""
        with self._lock:
            rows = self.client.query(
                "SELECT source_partition, max(day) FROM rollup_partitions WHERE source_partition "
                "IN {parts:Array(UInt32)} GROUP BY source_partition",
                parameters={"parts": partitions},
            ).result_rows
        return {int(p): d for p, d in rows}

    def allocate_generation(self) -> int:
        """A roll-up generation above every one in `rollup_partitions`: rows written under it replace older ones."""
        with self._lock:
            top = self.client.query("SELECT max(version) FROM rollup_partitions").result_rows[0][0]
        return (int(top) >> 64) + 1

    def latest_snapshots(
        self, partitions: list[int], partitions_total: int, since: date
    ) -> Iterator[tuple[SnapshotRow, int]]:
        """(row, body hash) of the latest snapshot of every UID-day from `since` that `partitions` own; the row's
        `source_partition` is the owning partition. Only what the roll-up needs is read (no body)."""
        sql = (
            "SELECT day, uid, kind, toUnixTimestamp64Milli(received_at), source_offset, default_uid, notEmpty(flags), "
            "version_major_minor, operating_system, arch, golang_version, gateways, gateways_by_frequency_plan, "
            "end_devices, active_end_devices, active_last_day, active_last_week, active_last_month, applications, "
            f"users_standard, users_admin, organizations, reinterpretAsUInt64(MD5(body)), {_OWNER} AS owner, "
            "source_index FROM snapshots FINAL WHERE day >= {since:Date} AND owner IN {parts:Array(UInt32)}"
        )
        with self._lock:
            result = self.client.query(sql, parameters={"since": since, "n": partitions_total, "parts": partitions})
        for r in result.result_rows:
            ms, offset, index = int(r[3]), int(r[4]), int(r[24])
            row = SnapshotRow(  # type: ignore[call-arg]  # positional, with a starred run of counts
                r[0],
                r[1],
                r[2],
                ms_to_datetime(ms),
                (ms << 64) | position(offset, index),
                int(r[23]),
                offset,
                index,
                bool(r[5]),
                ["flagged"] if r[6] else [],
                r[8],
                r[9],
                "",
                r[7],
                r[10],
                int(r[11]),
                dict(r[12]),
                *(int(x) for x in r[13:19]),  # type: ignore[arg-type]
                int(r[19]),
                int(r[20]),
                None,
                int(r[21]),
            )
            yield row, int(r[22])

    def rejections_since(self, partitions: list[int], since: date) -> Iterator[RejectionRow]:
        with self._lock:
            result = self.client.query(
                "SELECT day, received_at, reason, source_partition, source_offset, source_index FROM rejections FINAL "
                "WHERE day >= {since:Date} AND source_partition IN {parts:Array(UInt32)}",
                parameters={"since": since, "parts": partitions},
            )
        for day, received_at, reason, partition, offset, index in result.result_rows:
            yield RejectionRow(day, received_at, reason, "", "", int(partition), int(offset), int(index), "")

    def erased(self) -> dict[str, int]:
        """The erasure register (sinks/erasure.py): uid -> when it was last erased (ms); read before a batch is counted."""
        with self._read_lock:
            if self._reader is None:
                self._reader = connect(self.dsn)
            return erasure.register(self._reader)

    def erase_in_write(self, uid: str, until_ms: int, partitions_total: int, version: int) -> None:
        """processors/erased.py `ErasureRegister`: done again by the next write (sinks/erasure.py `InWrite`)."""
        self.erasures.add(uid, until_ms, partitions_total, version)

    # -- the raw topic's partition count --------------------------------------------------------------------------

    def recorded_partitions(self) -> int | None:
        with self._lock:
            rows = self.client.query(
                "SELECT value FROM pipeline_settings FINAL WHERE name = 'raw_partitions'"
            ).result_rows
        return int(rows[0][0]) if rows else None

    def record_partitions(self, partitions: int) -> None:
        with self._lock:
            self.client.insert(
                "pipeline_settings",
                [["raw_partitions", str(partitions), datetime.now(UTC)]],
                column_names=["name", "value", "set_at"],
            )

    def check_partitions(self, partitions: int, topic: str) -> None:
        """Record the raw topic's partition count on first use; refuse (PartitionCountChanged) if it has changed."""
        recorded = self.recorded_partitions()
        if recorded is None:
            self.record_partitions(partitions)
        elif recorded != partitions:
            raise PartitionCountChanged(
                f"the raw topic {topic!r} has {partitions} partitions, but the roll-up in ClickHouse was built for "
                f"{recorded}: adding partitions moves UIDs to other partitions, and a day could count a UID twice. "
                "Stop every worker and sink, run `is-telemetry rollup repartition`, then start them again "
                '(docs/operations.md, "Adding partitions")'
            )

    def repartition(self, partitions: int) -> int:
        """Rewrite the aggregate rows of every day that still has snapshots for `partitions` partitions, under a new
        generation, and record the count. Returns the number of rows written. Run with every writer stopped."""
        with self._lock:
            version = self.allocate_generation() << 64
            horizon = self._ttl_horizon() or date(1970, 1, 1)
            days = [
                r[0]
                for r in self.client.query(
                    "SELECT DISTINCT day FROM snapshots WHERE day > {h:Date} ORDER BY day", parameters={"h": horizon}
                ).result_rows
            ]
            existing = self.client.query("SELECT max(source_partition) + 1 FROM rollup_partitions").result_rows[0][0]
            width = max(partitions, int(existing or 0))
            written = 0
            for day in days:  # one day at a time: bounded memory whatever the history
                rows = self._aggregates(
                    "day = {day:Date}", "day = {day:Date}", _OWNER, {"day": day, "n": partitions}, version
                )
                now = datetime.now(UTC)
                batch = [rows.get((day, p)) or RollupRow(day, p, version, now) for p in range(width)]
                self._insert(batch)
                written += len(batch)
            self.record_partitions(partitions)
        return written

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
                return list(result.column_names), [tuple(r) for r in result.result_rows]
            except Exception:
                # A refused write can leave a chDB session stuck at readonly=1, an over-limit result leaves unread
                # data: start the next query on a fresh session.
                self._reader.close()
                self._reader = None
                raise


_TABLES = {SnapshotRow: "snapshots", RejectionRow: "rejections", RollupRow: "rollup_partitions"}
# orjson writes a datetime as RFC 3339 ("2025-01-01T12:00:00.123000+00:00"), which ClickHouse reads in best-effort mode
_JSON_INSERT = {"date_time_input_format": "best_effort"}


def _json_columns(names: Sequence[str], types: Sequence[str], data: Sequence[list[Any]]) -> bytes:
    """The columns as one JSON object (ClickHouse's `JSONColumns` input); 128-bit integers as strings."""
    by_name = {n: [str(v) for v in col] if "Int128" in t else col for n, t, col in zip(names, types, data)}
    return orjson.dumps(by_name, option=orjson.OPT_NON_STR_KEYS)  # map keys may be str enums (rejection reasons)


def _chdb_unusable(dsn: str, reason: str) -> str:
    from core.preflight import check_chdb

    held = check_chdb(dsn)
    if not held.ok:
        return held.message
    return f"chDB cannot open {urlparse(dsn).path}: {reason} (is the directory writable?)"
