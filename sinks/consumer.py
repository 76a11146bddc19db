"""`is-telemetry sink`: the sink as its own process, for processors running with --no-sink.

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

from is_telemetry.config import Settings
from is_telemetry.kafka import ensure_topics, topic_partitions
from is_telemetry.rows import PartitionBatch, PayloadError, decode_payload
from is_telemetry.streaming import FaustRewinder, faust_app, run_faust
from processors.rollup import Rollups, preparer
from sinks.checkpoint import Checkpoint
from sinks.clickhouse import ClickHouseStore

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
                log.error("skipping a snapshot of source partition %d found in snapshots-topic partition %d",
                          row.source_partition, m.partition)
                continue
            part.snapshots.append(row)
            part.bodies.append(row.body.encode("utf-8", "surrogatepass"))
        part.rejections.extend(rejections)
    return sorted(parts.values(), key=lambda p: p.partition)


def run_sink(settings: Settings, serve_api: bool = False, log_level: str = "warning") -> int:
    ensure_topics(settings)
    k = settings.kafka
    partitions_total = topic_partitions(settings, k.raw_topic)
    snapshot_partitions = topic_partitions(settings, k.snapshots_topic)
    if snapshot_partitions != partitions_total:
        raise SystemExit(f"the snapshots topic {k.snapshots_topic!r} has {snapshot_partitions} partitions and the raw "
                         f"topic {k.raw_topic!r} {partitions_total}: they must be equal (one snapshots partition per "
                         "source partition)")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = ClickHouseStore(settings.clickhouse_dsn, settings.clickhouse.snapshot_ttl_days,
                            settings.clickhouse.retry_s).open()
    store.check_partitions(partitions_total, k.raw_topic)
    app = faust_app(settings.processors.sink_group_id, settings)
    topic = app.topic(k.snapshots_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    rollups = Rollups(settings.processors.state_days, partitions_total)
    rewinder = FaustRewinder(app, k.snapshots_topic)
    stream_ref: list[Any] = []

    async def ack(events: Sequence[Any], bodies: int) -> None:
        for event in events:
            await stream_ref[0].ack(event)

    checkpoint = Checkpoint(store, preparer(rollups, store),
                            needs_io=lambda parts: bool(rollups.missing(p.partition for p in parts)),
                            on_rewind=rollups.drop, rewinder=rewinder, ack=ack, deadline_s=settings.clickhouse.retry_s)

    async def on_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        partitions = {tp.partition for tp in revoked if tp.topic == k.snapshots_topic}
        await checkpoint.drain()
        checkpoint.revoked(partitions)
        rollups.drop(partitions)
        rewinder.forget(partitions)

    async def sink(stream: Any) -> None:
        stream_ref[:] = [stream]
        try:
            async for events in stream.noack_take(200, within=settings.processors.batch_seconds):
                events = rewinder.accepted(events)
                if not events:
                    continue
                for event in events:
                    checkpoint.first_seen(event.message.partition, event.message.offset)
                await checkpoint.submit(partition_batches(events), events, [])
        finally:
            await checkpoint.drain()

    app.agent(topic, name="sink")(sink)
    app.on_partitions_revoked.connect(on_revoked)
    return run_faust(app, settings, store, serve_api, log_level)
