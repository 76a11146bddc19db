"""`is-telemetry sink`: the sink as its own process, for processors running with --no-sink.

Consumes the snapshots topic (one record per processed batch and source partition), writes each batch
of records with ClickHouseStore.write (idempotent) and only then acks them, so offsets are committed
only for what ClickHouse holds. Quix-streams' sinks/base does the same: batch, flush, then commit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from is_telemetry.config import Settings
from is_telemetry.kafka import ensure_topics
from is_telemetry.streaming import faust_app, run_faust
from processors import metrics
from sinks.clickhouse import Batch, ClickHouseStore


def batch_of(values: list[bytes]) -> Batch:
    batch = Batch()
    for value in values:
        part = orjson.loads(value)
        batch.snapshots.extend(part.get("snapshots", []))
        batch.rejections.extend(part.get("rejections", []))
    return batch


def run_sink(settings: Settings, serve_api: bool = False, log_level: str = "warning") -> int:
    ensure_topics(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = ClickHouseStore(settings.clickhouse_dsn, settings.clickhouse.snapshot_ttl_days).open()
    app = faust_app(settings.processors.sink_group_id, settings)
    topic = app.topic(settings.kafka.snapshots_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw")

    async def sink(stream: Any) -> None:
        async for events in stream.noack_take(200, within=settings.processors.batch_seconds):
            batch = batch_of([e.message.value for e in events])
            started = time.perf_counter()
            await asyncio.to_thread(store.write, batch)
            metrics.SINK_SECONDS.observe(time.perf_counter() - started)
            metrics.SINK_ROWS.labels("snapshots").inc(len(batch.snapshots))
            metrics.SINK_ROWS.labels("rejections").inc(len(batch.rejections))
            metrics.LAST_WRITE.set(time.time())
            for event in events:
                await stream.ack(event)

    app.agent(topic, name="sink")(sink)
    return run_faust(app, settings, store, serve_api, log_level)
