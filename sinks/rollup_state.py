"""The roll-up's reads of ClickHouse (processors/rollup.py `StateSource`): a partition's state when it is taken on,
and a day's aggregate row computed from the snapshots (a late record's day, a repartition). No write reads a whole
day back: these are the only reads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

from core.rows import COUNT_COLUMNS, MAP_COLUMNS, RejectionRow, RollupRow, SnapshotRow, ms_to_datetime, position
from core.schema import SUMMED_COUNTS
from sinks.connection import Connection

OWNER = "kafkaMurmurHash(uid) % {n:UInt32}"  # the partition Kafka's default partitioner gives the UID
_SUMS = ", ".join(f"sum({name})" for name in SUMMED_COUNTS)
_SUMMED = ", ".join(SUMMED_COUNTS)


def _aggregates_sql(partition: str, where: str) -> str:
    """The day aggregates of snapshots per day and owning partition (COUNT_COLUMNS, then MAP_COLUMNS but the
    rejections); `partition` and `where` are code constants (an expression, a WHERE clause with {name:Type}
    parameters), never values."""
    return f"""
SELECT day, {partition} AS part,
       countIf(kind = 'is'), countIf(kind = 'is' AND default_uid), countIf(kind = 'is' AND notEmpty(flags)),
       countIf(kind = 'cli'),
       {_SUMS},
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


#: What the roll-up needs of a snapshot (no body): the row's fields, then its body hash, owner and index.
_LATEST_SQL = (
    "SELECT day, uid, kind, toUnixTimestamp64Milli(received_at), source_offset, default_uid, notEmpty(flags), "
    f"version_major_minor, operating_system, arch, golang_version, gateways_by_frequency_plan, {_SUMMED}, "
    f"reinterpretAsUInt64(MD5(body)), {OWNER} AS owner, source_index "
    "FROM snapshots FINAL WHERE day >= {since:Date} AND owner IN {parts:Array(UInt32)}"
)
_FIELDS = ("day", "uid", "kind", "version_major_minor", "operating_system", "arch", "golang_version")


class RollupState:
    """The roll-up's state source, read on the writer's session."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def newest_days(self, partitions: list[int]) -> dict[int, date]:
        """The newest day of each partition's aggregate rows: where its roll-up window ended (partitions never
        written are absent)."""
        with self.connection.lock:
            rows = self.connection.client.query(
                "SELECT source_partition, max(day) FROM rollup_partitions WHERE source_partition "
                "IN {parts:Array(UInt32)} GROUP BY source_partition",
                parameters={"parts": partitions},
            ).result_rows
        return {int(p): d for p, d in rows}

    def allocate_generation(self) -> int:
        """A roll-up generation above every one in `rollup_partitions`: rows written under it replace older ones."""
        with self.connection.lock:
            top = self.connection.client.query("SELECT max(version) FROM rollup_partitions").result_rows[0][0]
        return (int(top) >> 64) + 1

    def latest_snapshots(
        self, partitions: list[int], partitions_total: int, since: date
    ) -> Iterator[tuple[SnapshotRow, int]]:
        """(row, body hash) of the latest snapshot of every UID-day from `since` that `partitions` own; the row's
        `source_partition` is the owning partition. Only what the roll-up needs is read (no body)."""
        with self.connection.lock:
            result = self.connection.client.query(
                _LATEST_SQL, parameters={"since": since, "n": partitions_total, "parts": partitions}
            )
        n = len(SUMMED_COUNTS)
        for r in result.result_rows:
            day, uid, kind, ms, offset, default_uid, flagged, vmm, os_, arch, go, plans = r[:12]
            h, owner, index = r[12 + n :]
            ms, offset, index = int(ms), int(offset), int(index)
            fields: dict[str, Any] = dict(zip(SUMMED_COUNTS, map(int, r[12 : 12 + n])))
            fields.update(zip(_FIELDS, (day, uid, kind, vmm, os_, arch, go)))
            row = SnapshotRow(
                received_at=ms_to_datetime(ms),
                version=(ms << 64) | position(offset, index),
                source_partition=int(owner),
                source_offset=offset,
                source_index=index,
                default_uid=bool(default_uid),
                flags=["flagged"] if flagged else [],
                binary_version="",
                gateways_by_frequency_plan=dict(plans),
                **fields,
            )
            yield row, int(h)

    def rejections_since(self, partitions: list[int], since: date) -> Iterator[RejectionRow]:
        with self.connection.lock:
            result = self.connection.client.query(
                "SELECT day, received_at, reason, source_partition, source_offset, source_index FROM rejections FINAL "
                "WHERE day >= {since:Date} AND source_partition IN {parts:Array(UInt32)}",
                parameters={"since": since, "parts": partitions},
            )
        for day, received_at, reason, partition, offset, index in result.result_rows:
            yield RejectionRow(day, received_at, reason, "", "", int(partition), int(offset), int(index), "")

    def recompute(self, day: date, partition: int, partitions_total: int, version: int) -> RollupRow:
        """The aggregate row of (day, partition) computed from ClickHouse (a late record's day)."""
        params = {"day": day, "p": partition, "n": partitions_total}
        rows = self.aggregates(
            f"day = {{day:Date}} AND {OWNER} = {{p:UInt32}}",
            "day = {day:Date} AND source_partition = {p:UInt32}",
            params,
            version,
        )
        return rows.get((day, partition)) or RollupRow(day, partition, version, datetime.now(UTC))

    def aggregates(
        self, where: str, rejections_where: str, params: dict[str, Any], version: int
    ) -> dict[tuple[date, int], RollupRow]:
        """The aggregate rows of the snapshots and rejections `where` selects, by (day, owning partition)."""
        c = self.connection.client
        now = datetime.now(UTC)
        out: dict[tuple[date, int], RollupRow] = {}
        for r in c.query(_aggregates_sql(OWNER, where), parameters=params).result_rows:
            counts, maps = r[2 : 2 + len(COUNT_COLUMNS)], r[2 + len(COUNT_COLUMNS) :]
            out[(r[0], int(r[1]))] = RollupRow(r[0], int(r[1]), version, now, *counts, **dict(zip(MAP_COLUMNS, maps)))
        for day, part, rejected in c.query(_rejected_sql(rejections_where), parameters=params).result_rows:
            row = out.get((day, int(part)))
            if row is None:
                row = out[(day, int(part))] = RollupRow(day, int(part), version, now)
            row.rejected_by_reason = dict(rejected)
        return out
