"""The raw topic's partition count the roll-up in ClickHouse was built for: recorded on first use, checked by every
worker and sink, and changed only by rewriting the aggregate rows (`is-telemetry rollup repartition`)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from core.errors import ConfigError
from core.rows import RollupRow
from sinks.connection import Connection
from sinks.inserts import Inserter
from sinks.migrate import ttl_horizon
from sinks.rollup_state import RollupState


class PartitionCountChanged(ConfigError):
    """The raw topic's partition count differs from the one the roll-up in ClickHouse was built for."""


class Partitioning:
    """The recorded partition count (`pipeline_settings`), and the repartition that changes it."""

    def __init__(self, connection: Connection, state: RollupState, inserter: Inserter, snapshot_ttl_days: int) -> None:
        self.connection, self.state, self.inserter = connection, state, inserter
        self.snapshot_ttl_days = snapshot_ttl_days

    def recorded_partitions(self) -> int | None:
        with self.connection.lock:
            rows = self.connection.client.query(
                "SELECT value FROM pipeline_settings FINAL WHERE name = 'raw_partitions'"
            ).result_rows
        return int(rows[0][0]) if rows else None

    def record_partitions(self, partitions: int) -> None:
        with self.connection.lock:
            self.connection.client.insert(
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
        with self.connection.lock:
            client = self.connection.client
            version = self.state.allocate_generation() << 64
            horizon = ttl_horizon(self.snapshot_ttl_days) or date(1970, 1, 1)
            days = [
                r[0]
                for r in client.query(
                    "SELECT DISTINCT day FROM snapshots WHERE day > {h:Date} ORDER BY day", parameters={"h": horizon}
                ).result_rows
            ]
            existing = client.query("SELECT max(source_partition) + 1 FROM rollup_partitions").result_rows[0][0]
            width = max(partitions, int(existing or 0))
            written = 0
            for day in days:  # one day at a time: bounded memory whatever the history
                rows = self.state.aggregates(
                    "day = {day:Date}", "day = {day:Date}", {"day": day, "n": partitions}, version
                )
                now = datetime.now(UTC)
                batch = [rows.get((day, p)) or RollupRow(day, p, version, now) for p in range(width)]
                self.inserter.insert(batch)
                written += len(batch)
            self.record_partitions(partitions)
        return written
