"""ClickHouse, as the pipeline writes and reads it: `ClickHouseStore`, composed of the parts of this folder.

    sinks/connection.py     the sessions (chDB or a server) and the writer's retries; SinkUnavailable, StoreRefused
    sinks/migrate.py        the migrations (sinks/migrations) and the snapshots' TTL
    sinks/inserts.py        inserts of typed rows (core/rows.py): JSON columns, or the Native encoding
    sinks/rollup_state.py   the roll-up's reads: a partition's state, a day recomputed from the snapshots
    sinks/repartition.py    the raw topic's partition count and the repartition

Writes of typed rows are idempotent:
- snapshots: ReplacingMergeTree(version) keyed (day, uid); version = receive ms << 64 | source offset, so a
  re-written snapshot collapses and the latest received wins;
- rejections: ReplacingMergeTree keyed by source position and receive time: a re-processed record counts once;
- rollup_partitions: the processors' day aggregates per source partition (processors/rollup.py), versioned by
  roll-up generation and sequence; the views sum the partitions;
- analyst_events: the analysts' figures, brought in step with the snapshots written by the applier
  (sinks/analysts.py, a thread of the writing process: `start_applier`), from the queue ClickHouse fills on insert.
A write retries while ClickHouse is unavailable, for at most `retry_s`; then it raises `SinkUnavailable` and the
caller pauses and rewinds (sinks/checkpoint.py). Offsets are committed only after a write succeeded, so nothing is
lost and nothing is counted twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date

from core.clickhouse_client import connect, redact
from core.rows import Batch, RejectionRow, RollupRow, SnapshotRow
from sinks import analysts, erasure
from sinks.connection import TRANSIENT_CODES, Connection, SinkUnavailable, StoreRefused
from sinks.inserts import Inserter
from sinks.migrate import TTL_TABLES, Migrator, migrations, ttl_horizon
from sinks.repartition import PartitionCountChanged, Partitioning
from sinks.retention import Retention
from sinks.rollup_state import RollupState

__all__ = [
    "TRANSIENT_CODES",
    "TTL_TABLES",
    "ClickHouseStore",
    "PartitionCountChanged",
    "SinkUnavailable",
    "StoreRefused",
    "migrations",
    "redact",
]


class ClickHouseStore(Connection):
    """The pipeline's ClickHouse: migrations, idempotent writes, the roll-up's state source (processors/rollup.py
    `StateSource`), the partition count, and the project's own reads (`query`)."""

    def __init__(
        self,
        dsn: str,
        snapshot_ttl_days: int = 0,
        retry_s: float = 30.0,
        retry_max_s: float = 8.0,
        retention: Retention | None = None,
    ) -> None:
        super().__init__(dsn, retry_s, retry_max_s)
        self.snapshot_ttl_days = snapshot_ttl_days
        self.erasures = erasure.InWrite()  # erasures the roll-up found still counted (sinks/erasure.py)
        self.last_write_at: float | None = None
        self._applier: analysts.Applier | None = None
        self.migrator = Migrator(self, snapshot_ttl_days, retention)
        self.inserter = Inserter(self)
        self.rollup_state = RollupState(self)
        self.partitioning = Partitioning(self, self.rollup_state, self.inserter, snapshot_ttl_days)

    def open(self) -> ClickHouseStore:
        """Connect and apply the migrations. Only connection errors (and ClickHouse's load errors) are retried, each
        attempt logged; an error ClickHouse answers otherwise, or a chDB directory that cannot be opened, raises
        StoreRefused at once with the reason."""
        self.retrying("connect and migrate", self.migrator.migrate_or_refuse, deadline_s=None)
        return self

    # -- the analysts' applier (sinks/analysts.py) ------------------------------------------------------------------

    def start_applier(self, owned: analysts.Owned, interval_s: float = 1.0) -> None:
        """Keep the analysts' figures in step with the snapshots written (of the partitions `owned` answers), on a
        session and thread of its own, until close()."""
        if self._applier is None:
            self._applier = analysts.Applier(lambda: connect(self.dsn), owned, self._writing, interval_s).start()

    def _writing(self) -> bool:
        """Whether this process wrote within the last 2 seconds (its applier then leaves it most of the time)."""
        return self.last_write_at is not None and time.time() - self.last_write_at < 2.0

    def apply_analysts(self) -> int:
        """Apply every queued UID now (tests, benches); how many."""
        return analysts.drain(self.client)

    def close(self) -> None:
        if self._applier is not None:
            self._applier.stop()
            self._applier = None
        super().close()

    def migrate(self) -> list[str]:
        return self.migrator.migrate()

    # -- writes -----------------------------------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        """Insert the batch (snapshots, rejections, then the aggregate rows); idempotent. Retries for `retry_s`,
        then raises SinkUnavailable."""
        if not batch:
            return
        self.retrying(f"write of {len(batch)} rows", lambda: self._write(batch), deadline_s=self.retry_s)
        self.last_write_at = time.time()

    def _write(self, batch: Batch) -> None:
        self.inserter.insert(batch.snapshots)
        self.inserter.insert(batch.rejections)
        erasing = self.erasures.pending()  # after the inserts: a batch prepared before an erasure (sinks/erasure.py)
        rollups = list(batch.rollups) + (self.erasures.run(self.client, self.recompute) if erasing else [])
        horizon = ttl_horizon(self.snapshot_ttl_days)
        for day, partition, version in batch.recompute:
            if horizon is None or day > horizon:  # beyond the TTL the snapshots are gone: keep the day's rows
                rollups.append(self.recompute(day, partition, batch.partitions_total, version))
        self.inserter.insert(rollups)
        self.erasures.done(erasing)

    def recompute(self, day: date, partition: int, partitions_total: int, version: int) -> RollupRow:
        return self.rollup_state.recompute(day, partition, partitions_total, version)

    # -- the roll-up's state source (processors/rollup.py) ------------------------------------------------------

    def newest_days(self, partitions: list[int]) -> dict[int, date]:
        return self.rollup_state.newest_days(partitions)

    def allocate_generation(self) -> int:
        return self.rollup_state.allocate_generation()

    def latest_snapshots(
        self, partitions: list[int], partitions_total: int, since: date
    ) -> Iterator[tuple[SnapshotRow, int]]:
        return self.rollup_state.latest_snapshots(partitions, partitions_total, since)

    def rejections_since(self, partitions: list[int], since: date) -> Iterator[RejectionRow]:
        return self.rollup_state.rejections_since(partitions, since)

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
        return self.partitioning.recorded_partitions()

    def record_partitions(self, partitions: int) -> None:
        self.partitioning.record_partitions(partitions)

    def check_partitions(self, partitions: int, topic: str) -> None:
        self.partitioning.check_partitions(partitions, topic)

    def repartition(self, partitions: int) -> int:
        return self.partitioning.repartition(partitions)
