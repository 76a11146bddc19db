"""The worker processes, composed from the stages: `is-telemetry processors` (processors/worker.py with the sink of
sinks/checkpoint.py in the same process, optionally serving the API of dashboard/) and `is-telemetry sink` (the
sink as its own process, rolling the snapshots topic up with processors/rollup.py).

This is the one place where the processors, the sinks and the query side meet; the stages themselves do not import
each other (pyproject.toml `[tool.importlinter]`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mode import Service

from dashboard.server import ApiThread
from is_telemetry.config import Settings
from is_telemetry.kafka import ensure_topics, topic_partitions
from is_telemetry.ledger import StoredPositions
from is_telemetry.streaming import FaustRewinder, faust_app, run_faust, take_bodies
from processors.rollup import Rollups, preparer
from processors.worker import Ack, Processors, SinkFactory
from sinks.checkpoint import Checkpoint
from sinks.clickhouse import ClickHouseStore
from sinks.consumer import partition_batches


class ApiService(Service):
    """Serves the HTTP API/dashboard from the worker (chDB can only be read by the process that writes it), on a
    thread and event loop of its own, with its queries on their own read-only ClickHouse sessions."""

    def __init__(self, settings: Settings, log_level: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = ApiThread(settings, log_level)

    async def on_start(self) -> None:
        self.api.start()

    async def on_stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.api.stop, 5.0)


def checkpoint(
    settings: Settings,
    store: ClickHouseStore,
    rollups: Rollups,
    rewinder: FaustRewinder,
    ack: Ack,
    on_written: Callable[[dict[int, int]], None] | None = None,
) -> Checkpoint:
    """The sink: roll a batch up (processors/rollup.py), write it to `store`, then acknowledge its events."""
    return Checkpoint(
        store,
        preparer(rollups, store),
        needs_io=lambda parts: bool(rollups.missing(p.partition for p in parts)),
        on_rewind=rollups.drop,
        rewinder=rewinder,
        ack=ack,
        deadline_s=settings.clickhouse.retry_s,
        load=lambda partitions: rollups.load(store, rollups.missing(partitions)),
        on_written=on_written,
    )


def in_process_sink(settings: Settings, store: ClickHouseStore, ledger_dir: Path | None = None) -> SinkFactory:
    """The processors worker's sink (processors/worker.py `SinkFactory`), writing to `store`; with `ledger_dir`, it
    records there what it stored of the raw topic (is_telemetry/ledger.py)."""
    positions = StoredPositions(ledger_dir, settings.kafka.raw_topic) if ledger_dir is not None else None
    on_written = positions.record if positions is not None else None
    return lambda rollups, rewinder, ack: checkpoint(settings, store, rollups, rewinder, ack, on_written)


def open_store(settings: Settings) -> ClickHouseStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return ClickHouseStore(
        settings.clickhouse_dsn, settings.clickhouse.snapshot_ttl_days, settings.clickhouse.retry_s
    ).open()


def _services(settings: Settings, serve_api: bool, log_level: str) -> list[Service]:
    return [ApiService(settings, log_level)] if serve_api else []


def _closer(store: ClickHouseStore | None) -> Callable[[], None] | None:
    if store is None:
        return None

    def close() -> None:
        store.stopping.set()
        store.close()

    return close


def run_worker(
    settings: Settings,
    with_sink: bool = True,
    serve_api: bool = False,
    log_level: str = "warning",
    ledger_dir: Path | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; in-flight batches are finished and acked, unacked ones are re-delivered.
    `ledger_dir`: where the sink records what it stored (`up` on the embedded broker, is_telemetry/ledger.py)."""
    ensure_topics(settings)
    partitions_total = topic_partitions(settings, settings.kafka.raw_topic)
    store = None
    if with_sink or serve_api:
        store = open_store(settings)
        if with_sink:
            store.check_partitions(partitions_total, settings.kafka.raw_topic)
    sink = in_process_sink(settings, store, ledger_dir) if with_sink and store is not None else None
    processors = Processors(settings, sink, partitions_total)
    return run_faust(processors.app, settings, _services(settings, serve_api, log_level), _closer(store), log_level)


def run_sink(settings: Settings, serve_api: bool = False, log_level: str = "warning") -> int:
    """`is-telemetry sink`: consume the snapshots topic (records of processors running with --no-sink), roll each
    source partition up and write it through the same checkpoint as a worker's in-process sink. Positions are the
    snapshots topic's offsets."""
    ensure_topics(settings)
    k = settings.kafka
    partitions_total = topic_partitions(settings, k.raw_topic)
    snapshot_partitions = topic_partitions(settings, k.snapshots_topic)
    if snapshot_partitions != partitions_total:
        raise SystemExit(
            f"the snapshots topic {k.snapshots_topic!r} has {snapshot_partitions} partitions and the raw "
            f"topic {k.raw_topic!r} {partitions_total}: they must be equal (one snapshots partition per "
            "source partition)"
        )
    store = open_store(settings)
    store.check_partitions(partitions_total, k.raw_topic)
    app = faust_app(settings.processors.sink_group_id, settings)
    topic = app.topic(k.snapshots_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    rollups = Rollups(settings.processors.state_days, partitions_total)
    rewinder = FaustRewinder(app, k.snapshots_topic)
    stream_ref: list[Any] = []

    async def ack(events: Sequence[Any], bodies: int) -> None:
        for event in events:
            await stream_ref[0].ack(event)

    sink = checkpoint(settings, store, rollups, rewinder, ack)

    async def on_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        partitions = {tp.partition for tp in revoked if tp.topic == k.snapshots_topic}
        await sink.drain()
        sink.revoked(partitions)
        rollups.drop(partitions)
        rewinder.forget(partitions)

    async def consume(stream: Any) -> None:
        stream_ref[:] = [stream]
        try:
            # take_bodies, not faust's noack_take: acks stay off when the agent stops (see take_bodies); a record
            # of the snapshots topic counts as one
            p = settings.processors
            async for events in take_bodies(stream, 200, p.batch_seconds, p.batch_idle_seconds, lambda _event: 1):
                events = rewinder.accepted(events)
                if not events:
                    continue
                for event in events:
                    sink.first_seen(event.message.partition, event.message.offset)
                await sink.submit(partition_batches(events), events, [])
        finally:
            await sink.drain()

    async def on_assigned(app: Any, assigned: Any, **kwargs: Any) -> None:
        await sink.taken_on(tp.partition for tp in assigned if tp.topic == k.snapshots_topic)

    app.agent(topic, name="sink")(consume)
    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]  # faust accepts coroutines
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
    return run_faust(app, settings, _services(settings, serve_api, log_level), _closer(store), log_level)
