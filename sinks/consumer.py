"""The snapshots topic's records read back into rows, for `is-telemetry sink` (the sink as its own process, for
processors running with --no-sink; composed in is_telemetry/worker_app.py `run_sink`).

Consumes the snapshots topic, where each record holds one batch's rows of one source partition, in the partition of
the same number (so this process sees every record of the source partitions it owns, in order). It goes through the
same checkpoint as a worker's in-process sink (sinks/checkpoint.py): the processors' roll-up of those partitions,
rebuilt from ClickHouse when a partition is taken on, then one write, then the acknowledgement. Positions are the
snapshots topic's offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from core.rows import PartitionBatch, PayloadError, decode_payload

log = logging.getLogger(__name__)


def partition_batches(events: Sequence[Any]) -> list[PartitionBatch]:
    """The rows of snapshots-topic events per partition; a record this version cannot read is logged and skipped."""
    parts: dict[int, PartitionBatch] = {}
    for event in events:
        m = event.message
        part = parts.get(m.partition)
        if part is None:
            part = parts[m.partition] = PartitionBatch(m.partition, m.offset)
        part.position = max(part.position, m.offset)
        try:
            snapshots, rejections = decode_payload(m.value)
        except PayloadError as exc:
            log.error("skipping snapshots-topic record %s/%d@%d: %s", m.topic, m.partition, m.offset, exc)
            continue
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
