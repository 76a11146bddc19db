"""The processors worker: a faust agent over the raw topic.

Each batch (`stream.noack_take`: bounded by size and time) goes validate -> dedup -> roll up, then
its dead letters are published and its rows are written by the sink (in this process) or published to
the snapshots topic (for a separate `is-telemetry sink`). Only then are the batch's events acked, so
faust commits an offset only once everything before it is stored: at-least-once delivery whose
re-deliveries collapse in ClickHouse (idempotent snapshots, recomputed day aggregates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import faust
import orjson

from is_telemetry.config import Settings
from is_telemetry.kafka import ensure_topics
from is_telemetry.streaming import ApiService, faust_app, run_faust
from processors import metrics
from processors.dedup import Deduplicator
from processors.pipeline import RawRecord, process
from sinks.clickhouse import Batch, ClickHouseStore

log = logging.getLogger(__name__)

def _headers(message: Any) -> dict[str, bytes]:
    raw = message.headers or {}
    items = raw.items() if isinstance(raw, dict) else raw
    return {k: (v if isinstance(v, bytes) else str(v).encode()) for k, v in items}


def _to_record(event: Any) -> RawRecord:
    m = event.message
    value = m.value if isinstance(m.value, bytes) else (event.value or b"")
    return RawRecord(m.topic, m.partition, m.offset, int(m.timestamp * 1000), _headers(m), value)


class Processors:
    """Wires the raw topic to the pipeline and the sink."""

    def __init__(self, settings: Settings, store: ClickHouseStore | None) -> None:
        self.settings = settings
        self.store = store
        p = settings.processors
        self.app = faust_app(settings.processors.group_id, settings)
        k = settings.kafka
        self.raw = self.app.topic(k.raw_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.deadletter = self.app.topic(k.deadletter_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.snapshots = self.app.topic(k.snapshots_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.dedup = Deduplicator(keep_days=p.dedup_days)
        self.processed = 0
        self.app.agent(self.raw, name="process")(self._agent)
        self.app.on_partitions_revoked.connect(self._on_revoked)

    async def _on_revoked(self, app: Any, revoked: Any, **kwargs: Any) -> None:
        # Another worker may own these UIDs now: our memory of their last bodies can no longer be trusted.
        self.dedup.rollback()
        self.dedup = Deduplicator(keep_days=self.settings.processors.dedup_days)

    async def _agent(self, stream: Any) -> None:
        p = self.settings.processors
        async for events in stream.noack_take(p.batch_size, within=p.batch_seconds):
            await self.handle(events)
            for event in events:
                await stream.ack(event)

    async def handle(self, events: list[Any]) -> None:
        records = [_to_record(e) for e in events]
        metrics.RECORDS.inc(len(records))
        metrics.BATCH_SIZE.observe(len(records))
        outcome = process(records, self.dedup, self.settings.processors.plausibility_limit)
        for dl in outcome.dead_letters:
            await self.deadletter.send(key=dl.key, value=dl.value, headers=dl.headers)
        try:
            await self.store_batch(outcome.batch, records)
        except BaseException:
            self.dedup.rollback()
            raise
        self.dedup.commit()
        metrics.VALID.inc(outcome.valid)
        metrics.DUPLICATES.inc(outcome.duplicates)
        for reason, n in outcome.rejected.items():
            metrics.REJECTED.labels(reason).inc(n)
        self.processed += len(records)
        self._observe_lag(records)

    async def store_batch(self, batch: Batch, records: list[RawRecord]) -> None:
        if not batch:
            return
        if self.store is not None:
            started = time.perf_counter()
            await asyncio.to_thread(self.store.write, batch)
            metrics.SINK_SECONDS.observe(time.perf_counter() - started)
            metrics.SINK_ROWS.labels("snapshots").inc(len(batch.snapshots))
            metrics.SINK_ROWS.labels("rejections").inc(len(batch.rejections))
            metrics.LAST_WRITE.set(time.time())
            return
        # Separate sink process: one record per batch and source partition (never one per event).
        for partition, part in _by_partition(batch):
            await self.snapshots.send(key=str(partition).encode(), value=orjson.dumps(part))

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


def _by_partition(batch: Batch) -> Iterator[tuple[int, dict[str, list[dict[str, Any]]]]]:
    parts: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for row in batch.snapshots:
        parts.setdefault(row["source_partition"], {"snapshots": [], "rejections": []})["snapshots"].append(row)
    for row in batch.rejections:
        parts.setdefault(row["source_partition"], {"snapshots": [], "rejections": []})["rejections"].append(row)
    yield from sorted(parts.items())


def run_worker(settings: Settings, with_sink: bool = True, serve_api: bool = False, log_level: str = "warning") -> int:
    """Run until SIGTERM/SIGINT; in-flight batches are finished and acked, unacked ones are re-delivered."""
    ensure_topics(settings)
    store = None
    if with_sink or serve_api:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = ClickHouseStore(settings.clickhouse_dsn, settings.clickhouse.snapshot_ttl_days).open()
    processors = Processors(settings, store if with_sink else None)
    return run_faust(processors.app, settings, store, serve_api, log_level)
