"""Records through the whole path in one process, synchronously: validate -> re-key -> roll up -> write.

What the worker does, without Kafka: for tests, benches and tools. A record that the worker would publish again
keyed by its UID is appended, with its headers, to the partition Kafka's default partitioner gives that UID (the
next offset there) and processed in the same call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from core.partitioning import partition_of
from core.rows import Batch
from core.schema import PLAUSIBILITY_LIMIT
from processors.pipeline import Outcome, RawRecord, process
from processors.rollup import Rollups, StateSource, roll_up
from processors.worker import partition_batches


class Store(StateSource, Protocol):
    """The roll-up's state source that also writes batches: ClickHouse (sinks/clickhouse.py `ClickHouseStore`)."""

    def write(self, batch: Batch) -> None: ...


class Replayer:
    def __init__(
        self, store: Store, partitions_total: int = 8, state_days: int = 3, plausibility_limit: int = PLAUSIBILITY_LIMIT
    ) -> None:
        self.store, self.partitions_total, self.plausibility_limit = store, partitions_total, plausibility_limit
        self.rollups = Rollups(state_days, partitions_total)
        self.next_offset: dict[int, int] = {}

    def feed(self, records: Iterable[RawRecord]) -> tuple[Outcome, Batch]:
        """Process and write one batch (and the records it re-keys); returns the last round's outcome and batch."""
        records = list(records)
        topic = records[0].topic if records else "tts-telemetry-raw"
        while True:
            for r in records:
                self.next_offset[r.partition] = max(self.next_offset.get(r.partition, 0), r.offset + 1)
            outcome = process(records, self.partitions_total, None, self.plausibility_limit)
            batch = roll_up(self.rollups, self.store, partition_batches(records, outcome))
            self.store.write(batch)
            if not outcome.rekey:
                return outcome, batch
            records = []
            for rekey in outcome.rekey:
                p = partition_of(rekey.key, self.partitions_total)
                offset = self.next_offset.get(p, 0)
                self.next_offset[p] = offset + 1
                headers = dict(rekey.headers)
                records.append(
                    RawRecord(
                        topic, p, offset, int(headers.get("received_at_ms", b"0")), headers, rekey.value, rekey.key
                    )
                )
