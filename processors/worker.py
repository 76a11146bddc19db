"""The processors worker: the handler of a consumer loop over the raw topic (sinks/loop.py, composed in
is_telemetry/worker_app.py).

Each take of the stream (bounded by bodies and time) goes validate -> re-key -> roll up -> sink:
- records not keyed by their UID, or not in its partition, are published again keyed by their UID (pipeline.py);
- dead letters are published;
- with the sink in this process (the default), the handler returns the rows per source partition, and the loop's
  checkpoint (sinks/checkpoint.py) has the sink roll them up (processors/rollup.py) and write them to ClickHouse
  while the next batch is processed, and only then acknowledges its events, so faust commits an offset only once
  everything before it is stored;
- with `--no-sink`, exact re-sends are dropped here (processors/dedup.py) and the rows are published to the
  snapshots topic, one record per source partition and batch, into the same partition number, for `is-telemetry
  sink`, which rolls up and writes them through the same checkpoint. Events are acknowledged once the records are
  stored in Kafka.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import faust

from core import gctuning
from core.config import Settings
from core.envelope import (
    HEADER_RATE_LIMITED,
    RATE_LIMITED,
    EnvelopeError,
    bodies_in,
    is_batch,
    is_rate_limited,
    unpack,
)
from core.kafka import HEADER_USER_AGENT
from core.rows import PartitionBatch, encode_payloads
from core.streaming import Take, bytes_topic
from processors import metrics
from processors.dedup import Deduplicator
from processors.pipeline import Outcome, RawRecord, process

log = logging.getLogger(__name__)


def _headers(message: Any) -> dict[str, bytes]:
    raw = message.headers or {}
    items = raw.items() if isinstance(raw, dict) else raw
    return {k: (v if isinstance(v, bytes) else str(v).encode()) for k, v in items}


def records_of(event: Any) -> list[RawRecord]:
    """The bodies of one Kafka record: itself, or the frames of a many-bodies record (core/envelope.py)."""
    m = event.message
    value = m.value if isinstance(m.value, bytes) else (event.value or b"")
    key = m.key if isinstance(m.key, bytes) or m.key is None else str(m.key).encode()
    headers = _headers(m)
    timestamp_ms = int(m.timestamp * 1000)
    if not is_batch(headers):
        return [RawRecord(m.topic, m.partition, m.offset, timestamp_ms, headers, value, key)]
    try:
        frames = list(unpack(value))
    except EnvelopeError as exc:
        return [RawRecord(m.topic, m.partition, m.offset, timestamp_ms, headers, value[:4096], key, error=str(exc))]
    # a frame's receive time is its record's timestamp here (RawRecord.received_at_ms reads it when no header says)
    records = [
        RawRecord(
            m.topic, m.partition, m.offset, f.received_at_ms, {HEADER_USER_AGENT: f.user_agent}, f.body, None, i, True
        )
        for i, f in enumerate(frames)
    ]
    if is_rate_limited(headers):  # the record's mark is every body's
        for r in records:
            r.headers[HEADER_RATE_LIMITED] = RATE_LIMITED
    return records


def partition_batches(records: Sequence[RawRecord], outcome: Outcome) -> list[PartitionBatch]:
    """The outcome's rows per source partition, each with the last position the batch consumed there."""
    parts: dict[int, PartitionBatch] = {}
    for r in records:
        part = parts.get(r.partition)
        if part is None:
            parts[r.partition] = PartitionBatch(r.partition, r.offset)
        elif r.offset > part.position:
            part.position = r.offset
    for row, body in zip(outcome.snapshots, outcome.bodies):
        part = parts[row.source_partition]
        part.snapshots.append(row)
        part.bodies.append(body)
    for rejection in outcome.rejections:
        parts[rejection.source_partition].rejections.append(rejection)
    return sorted(parts.values(), key=lambda p: p.partition)


def _bodies(event: Any) -> int:
    return bodies_in(_headers(event.message), event.message.value)


class Processors:
    """The raw topic's handler (sinks/loop.py `Handler`): the pipeline, the dead letters, the re-keyed records."""

    def __init__(self, settings: Settings, app: faust.App, with_sink: bool, partitions_total: int) -> None:
        """`with_sink`: the loop has a sink; else the rows are published to the snapshots topic (`--no-sink`)."""
        self.settings, self.app = settings, app
        self.with_sink = with_sink
        self.partitions_total = partitions_total
        k = settings.kafka
        self.raw = bytes_topic(app, k.raw_topic)
        self.deadletter = bytes_topic(app, k.deadletter_topic)
        self.snapshots = bytes_topic(app, k.snapshots_topic)
        self.dedup = Deduplicator(keep_days=settings.processors.state_days)

    def weight(self, event: Any) -> int:
        return _bodies(event)

    def stored(self, bodies: int) -> None:
        metrics.STORED.inc(bodies)

    def assigned(self, partitions: set[int]) -> None:
        metrics.ASSIGNED.set(len(partitions))

    def revoked(self, partitions: set[int]) -> None:
        metrics.ASSIGNED.set(0)  # faust revokes every partition before a new assignment
        # Another worker may own these UIDs now: our memory of their last bodies can no longer be trusted.
        self.dedup.rollback()
        self.dedup = Deduplicator(keep_days=self.settings.processors.state_days)

    async def _send(
        self, topic: Any, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        """Publish now (not attached to a commit) and return the delivery future."""
        return await topic.send(key=key, value=value, headers=headers, force=True)

    async def handle(self, events: list[Any]) -> Take:
        with gctuning.paused():  # every row stays alive until written: no collector passes over them meanwhile
            records = [r for e in events for r in records_of(e)]
            outcome = process(
                records,
                self.partitions_total,
                None if self.with_sink else self.dedup,
                self.settings.processors.plausibility_limit,
            )
        metrics.RECORDS.inc(len(records))
        metrics.BATCH_SIZE.observe(len(records))
        sends = [await self._send(self.deadletter, dl.key, dl.value, dl.headers) for dl in outcome.dead_letters]
        sends += [await self._send(self.raw, r.key, r.value, r.headers) for r in outcome.rekey]
        metrics.VALID.inc(outcome.valid)
        metrics.REKEYED.inc(len(outcome.rekey))
        for reason, n in outcome.rejected.items():
            metrics.REJECTED.labels(reason).inc(n)
        parts = partition_batches(records, outcome)
        self._observe_lag(records)
        if self.with_sink:
            return Take(parts, len(records), sends)
        await self.publish(parts, sends)
        return Take([], len(records))

    async def publish(self, parts: list[PartitionBatch], sends: list[Awaitable[Any]]) -> None:
        """Separate sink process: one snapshots-topic record per batch and source partition, in that partition; returns
        once they and `sends` are stored in Kafka (the loop then acknowledges the events)."""
        # a batch's rows of one partition can exceed what the producer sends in one record (5,000 bodies of one
        # partition are ~5 MB): they go as several records, each under its limit
        max_bytes = int(self.app.conf.producer_max_request_size * 0.9)
        for part in parts:
            if part.snapshots or part.rejections:
                for payload in encode_payloads(part.snapshots, part.rejections, max_bytes):
                    sends.append(
                        await self.snapshots.send(
                            key=str(part.partition).encode(), value=payload, partition=part.partition, force=True
                        )
                    )
        try:
            for send in sends:
                await send
        except Exception:
            self.dedup.rollback()
            raise
        self.dedup.commit()

    def _observe_lag(self, records: list[RawRecord]) -> None:
        last: dict[int, int] = {}
        for r in records:
            last[r.partition] = max(r.offset, last.get(r.partition, -1))
        consumer = self.app.consumer
        for partition, offset in last.items():
            with contextlib.suppress(Exception):
                hw = consumer.highwater(faust.types.TP(self.settings.kafka.raw_topic, partition))
                if hw is not None:
                    metrics.LAG.labels(str(partition)).set(max(0, hw - offset - 1))
