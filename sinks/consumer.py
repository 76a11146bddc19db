"""The snapshots topic's records read back into rows, for `is-telemetry sink` (the sink as its own process, for
processors running with --no-sink; composed in is_telemetry/worker_app.py `run_sink`).

Consumes the snapshots topic, where each record holds one batch's rows of one source partition, in the partition of
the same number (so this process sees every record of the source partitions it owns, in order). `SnapshotsReader`
is the handler of its consumer loop (sinks/loop.py), so it goes through the same checkpoint as a worker's
in-process sink (sinks/checkpoint.py): the processors' roll-up of those partitions, rebuilt from ClickHouse when a
partition is taken on, then one write, then the acknowledgement. Positions are the snapshots topic's offsets; a
record weighs the rows it holds (a batch ends at `sink.batch_size` rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from core.rows import PartitionBatch, PayloadError, RejectionRow, SnapshotRow, decode_payload
from core.streaming import Take

log = logging.getLogger(__name__)

Rows = tuple[list[SnapshotRow], list[RejectionRow]]


def _decode(message: Any) -> Rows | None:
    try:
        return decode_payload(message.value)
    except PayloadError as exc:
        log.error("skipping snapshots-topic record %s/%d@%d: %s", message.topic, message.partition, message.offset, exc)
        return None


class SnapshotsReader:
    """The handler of `is-telemetry sink`'s consumer loop. A record is decoded once, when the stream buffers it (its
    rows are its weight), and its rows kept until its take is handled (decoded again if they were not kept)."""

    def __init__(self) -> None:
        self._decoded: dict[tuple[int, int], Rows | None] = {}  # (partition, offset) -> rows, this take's only

    def weight(self, event: Any) -> int:
        m = event.message
        rows = self._decoded[(m.partition, m.offset)] = _decode(m)
        return max(1, len(rows[0]) + len(rows[1])) if rows is not None else 1

    async def handle(self, events: list[Any]) -> Take:
        decoded, self._decoded = self._decoded, {}

        def rows(message: Any) -> Rows | None:
            key = (message.partition, message.offset)
            return decoded[key] if key in decoded else _decode(message)

        return Take(partition_batches(events, rows), bodies=len(events))

    def assigned(self, partitions: set[int]) -> None:
        pass

    def revoked(self, partitions: set[int]) -> None:
        pass

    def stored(self, bodies: int) -> None:
        pass


def partition_batches(events: Sequence[Any], rows: Callable[[Any], Rows | None] = _decode) -> list[PartitionBatch]:
    """The rows of snapshots-topic events per partition (`rows` of a message: decoded; None for a record this
    version cannot read, which is skipped)."""
    parts: dict[int, PartitionBatch] = {}
    for event in events:
        m = event.message
        part = parts.get(m.partition)
        if part is None:
            part = parts[m.partition] = PartitionBatch(m.partition, m.offset)
        part.position = max(part.position, m.offset)
        decoded = rows(m)
        if decoded is None:
            continue
        snapshots, rejections = decoded
        for row in snapshots:
            if row.source_partition != m.partition:
                log.error(
                    "skipping a snapshot of source partition %d found in snapshots-topic partition %d",
                    row.source_partition,
                    m.partition,
                )
                continue
            part.snapshots.append(row)
            part.bodies.append(row.body.encode("utf-8", "surrogatepass"))
        part.rejections.extend(rejections)
    return sorted(parts.values(), key=lambda p: p.partition)
