"""The processors worker: a faust agent over the raw topic.

Each take of the stream (`noack_take`: bounded by size and time) goes validate -> re-key -> roll up -> sink:
- records not keyed by their UID, or not in its partition, are published again keyed by their UID (pipeline.py);
- dead letters are published;
- with the sink in this process (the default), the checkpoint (sinks/checkpoint.py, given by the process's
  composition in is_telemetry/worker_app.py as a `BatchSink`) rolls the batch up per source partition
  (processors/rollup.py), writes it to ClickHouse while the next batch is processed, and only then acknowledges its
  events, so faust commits an offset only once everything before it is stored;
- with `--no-sink`, exact re-sends are dropped here (processors/dedup.py) and the rows are published to the
  snapshots topic, one record per source partition and batch, into the same partition number, for `is-telemetry
  sink`, which rolls up and writes them through the same checkpoint. Events are acknowledged once the records are
  stored in Kafka.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

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
from core.streaming import FaustRewinder, faust_app, take_bodies
from processors import metrics
from processors.dedup import Deduplicator
from processors.pipeline import Outcome, RawRecord, process
from processors.rollup import Rollups

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


Ack = Callable[[Sequence[Any], int], Awaitable[None]]


class BatchSink(Protocol):
    """Where the processed batches go when the sink runs in this process (sinks/checkpoint.py `Checkpoint`): it writes
    them, then acknowledges their events with `ack`."""

    def first_seen(self, partition: int, position: int) -> None: ...

    async def taken_on(self, partitions: Iterable[int]) -> None: ...

    async def submit(
        self, parts: list[PartitionBatch], events: list[Any], sends: list[Awaitable[Any]], bodies: int | None = None
    ) -> None: ...

    async def drain(self) -> None: ...

    def revoked(self, partitions: set[int]) -> None: ...


#: Makes the in-process sink from the worker's roll-up state, its consumer controls and its acknowledgement.
SinkFactory = Callable[[Rollups, FaustRewinder, Ack], BatchSink]


def _bodies(event: Any) -> int:
    return bodies_in(_headers(event.message), event.message.value)


class Processors:
    """Wires the raw topic to the pipeline and the sink."""

    def __init__(self, settings: Settings, sink: SinkFactory | None, partitions_total: int) -> None:
        """`sink`: the in-process sink's factory; None publishes the rows to the snapshots topic (`--no-sink`)."""
        self.settings = settings
        self.partitions_total = partitions_total
        p, k = settings.processors, settings.kafka
        self.app = faust_app(p.group_id, settings)
        raw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.raw = self.app.topic(k.raw_topic, **raw)
        self.deadletter = self.app.topic(k.deadletter_topic, **raw)
        self.snapshots = self.app.topic(k.snapshots_topic, **raw)
        self.rewinder = FaustRewinder(self.app, k.raw_topic)
        self.dedup = Deduplicator(keep_days=p.state_days)
        self.rollups = Rollups(p.state_days, partitions_total)
        self._stream: Any = None
        self.checkpoint = sink(self.rollups, self.rewinder, self._ack) if sink is not None else None
        self.app.agent(self.raw, name="process")(self._agent)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]  # faust accepts coroutines
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    async def _ack(self, events: Sequence[Any], bodies: int) -> None:
        for event in events:
            await self._stream.ack(event)
        metrics.STORED.inc(bodies)

    async def _on_assigned(self, app: Any, assigned: Any, **kwargs: Any) -> None:
        raw = self.settings.kafka.raw_topic
        metrics.ASSIGNED.set(sum(1 for tp in assigned if tp.topic == raw))  # faust passes the whole assignment
        if self.checkpoint is not None:  # the roll-up state of the partitions taken on, before their first batch
            await self.checkpoint.taken_on(tp.partition for tp in assigned if tp.topic == raw)

    async def _on_revoked(self, app: Any, revoked: Any, **kwargs: Any) -> None:
        partitions = {tp.partition for tp in revoked if tp.topic == self.settings.kafka.raw_topic}
        metrics.ASSIGNED.set(0)  # faust revokes every partition before a new assignment
        if self.checkpoint is not None:
            await self.checkpoint.drain()  # the write in flight finishes (or gives up) before another owner reads
            self.checkpoint.revoked(partitions)
        self.rollups.drop(partitions)
        self.rewinder.forget(partitions)
        # Another worker may own these UIDs now: our memory of their last bodies can no longer be trusted.
        self.dedup.rollback()
        self.dedup = Deduplicator(keep_days=self.settings.processors.state_days)

    async def _agent(self, stream: Any) -> None:
        self._stream = stream
        p = self.settings.processors
        try:
            async for events in take_bodies(stream, p.batch_size, p.batch_seconds, p.batch_idle_seconds, _bodies):
                events = self.rewinder.accepted(events)
                if events:
                    await self.handle(events)
        finally:
            if self.checkpoint is not None:
                with contextlib.suppress(Exception):
                    await self.checkpoint.drain()

    async def _send(
        self, topic: Any, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        """Publish now (not attached to a commit) and return the delivery future."""
        return await topic.send(key=key, value=value, headers=headers, force=True)

    async def handle(self, events: list[Any]) -> None:
        with gctuning.paused():  # every row stays alive until written: no collector passes over them meanwhile
            records = [r for e in events for r in records_of(e)]
            outcome = process(
                records,
                self.partitions_total,
                None if self.checkpoint else self.dedup,
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
        if self.checkpoint is not None:
            for r in records:
                self.checkpoint.first_seen(r.partition, r.offset)
            await self.checkpoint.submit(parts, events, sends, len(records))
        else:
            await self.publish(parts, events, sends, len(records))
        self._observe_lag(records)

    async def publish(
        self, parts: list[PartitionBatch], events: list[Any], sends: list[Awaitable[Any]], bodies: int
    ) -> None:
        """Separate sink process: one snapshots-topic record per batch and source partition, in that partition."""
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
        await self._ack(events, bodies)

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
