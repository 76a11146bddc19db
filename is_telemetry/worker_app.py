"""The worker processes, composed from the stages: `is-telemetry processors` (processors/worker.py with the sink of
sinks/checkpoint.py in the same process, optionally serving the API of dashboard/) and `is-telemetry sink` (the
sink as its own process, rolling the snapshots topic up with processors/rollup.py).

This is the one place where the processors, the sinks and the query side meet; the stages themselves do not import
each other (pyproject.toml `[tool.importlinter]`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mode import Service

from core.config import Settings, check_api_exposure
from core.errors import ConfigError, RequestRefused
from core.kafka import ensure_topics, topic_partitions
from core.ledger import StoredPositions
from core.streaming import FaustRewinder, faust_app, run_faust, take_bodies
from processors.rollup import Rollups, preparer
from processors.worker import Ack, Processors, SinkFactory
from sinks import erasure
from sinks.checkpoint import Checkpoint
from sinks.clickhouse import ClickHouseStore
from sinks.consumer import partition_batches
from sinks.retention import Retention


class ApiService(Service):
    """Serves the HTTP API/dashboard from the worker (chDB can only be read by the process that writes it), on a
    thread and event loop of its own, with its queries on their own read-only ClickHouse sessions. The query side
    is imported and set up on that thread: the consumer joins its group meanwhile (a restarted worker consumes again
    that much sooner)."""

    def __init__(
        self, settings: Settings, log_level: str, ready: Callable[[], None] = lambda: None, **kwargs: Any
    ) -> None:
        """`ready`: waits until the store is open (its migrations applied) before the API starts."""
        super().__init__(**kwargs)
        check_api_exposure(settings)  # a refusal ends the process now (exit code 2), not on the API's thread
        self.settings, self.log_level, self.ready = settings, log_level, ready
        self.api: Any = None  # dashboard.server.ApiThread, once set up
        self.starting: threading.Thread | None = None

    async def on_start(self) -> None:
        def start() -> None:
            from dashboard import forget_route
            from dashboard.server import ApiThread

            self.ready()
            forget_route.install(forgetter(self.settings))
            self.api = ApiThread(self.settings, self.log_level).start()

        self.starting = threading.Thread(target=start, name="api-start", daemon=True)
        self.starting.start()

    async def on_stop(self) -> None:
        def stop() -> None:
            if self.starting is not None:
                self.starting.join(30)
            if self.api is not None:
                self.api.stop(5.0)

        await asyncio.get_running_loop().run_in_executor(None, stop)


def checkpoint(
    settings: Settings,
    store: ClickHouseStore,
    rollups: Rollups,
    rewinder: FaustRewinder,
    ack: Ack,
    on_written: Callable[[dict[int, int]], None] | None = None,
    ready: Callable[[], None] | None = None,
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
        ready=ready,
    )


def in_process_sink(
    settings: Settings, store: ClickHouseStore, ledger_dir: Path | None = None, ready: Callable[[], None] | None = None
) -> SinkFactory:
    """The processors worker's sink (processors/worker.py `SinkFactory`), writing to `store` (once `ready` returns);
    with `ledger_dir`, it records there what it stored of the raw topic (core/ledger.py)."""
    positions = StoredPositions(ledger_dir, settings.kafka.raw_topic) if ledger_dir is not None else None
    on_written = positions.record if positions is not None else None
    return lambda rollups, rewinder, ack: checkpoint(settings, store, rollups, rewinder, ack, on_written, ready)


def forgetter(settings: Settings) -> Callable[[list[str]], list[dict[str, Any]]]:
    """POST /api/forget's erasure (dashboard/forget_route.py, sinks/erasure.py): every UID checked first (nothing
    changes if one is not a UID), then erased with the writing ClickHouse user, on a store opened for the call (the
    migrations are the writer's)."""

    def forget(uids: list[str]) -> list[dict[str, Any]]:
        bad = [u for u in uids if not erasure.is_uid(u)]
        if bad:
            raise RequestRefused(erasure.Erasure(bad[0], erasure.Outcome.NOT_A_UID).message())
        store = ClickHouseStore(settings.clickhouse_dsn)
        try:
            return [
                {"uid": e.uid, "outcome": str(e.outcome), "message": e.message()} for e in erasure.erase(store, uids)
            ]
        finally:
            store.close()

    return forget


def new_store(settings: Settings) -> ClickHouseStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ttl = settings.clickhouse.snapshot_ttl_days
    return ClickHouseStore(
        settings.clickhouse_dsn, ttl, settings.clickhouse.retry_s, retention=Retention.of(settings.clickhouse)
    )


def open_store(settings: Settings) -> ClickHouseStore:
    return new_store(settings).open()


class OpeningStore:
    """The embedded chDB, opened (migrations applied, the raw topic's partition count checked) on a thread of its
    own while the worker's consumer joins its group: a worker started again consumes that much sooner. The sink and
    the API wait for it (`wait`). What it refuses ends the process as a refusal before any record is processed (exit
    code 2, one `error:` line), what else it raises with exit code 1. Not for a ClickHouse server: one that does not
    answer yet is waited for before the worker joins its group (it would hold partitions it cannot store)."""

    def __init__(self, store: ClickHouseStore, partitions: int | None, topic: str) -> None:
        self.store, self.partitions, self.topic = store, partitions, topic
        self.done = threading.Event()
        threading.Thread(target=self._open, name="store-open", daemon=True).start()

    def _open(self) -> None:
        try:
            self.store.open()
            if self.partitions is not None:
                self.store.check_partitions(self.partitions, self.topic)
        except ConfigError as exc:
            _end(2, f"error: {exc}")
        except Exception as exc:
            logging.getLogger(__name__).exception("the store could not be opened")
            _end(1, f"error: the store could not be opened: {exc}")
        finally:
            self.done.set()

    def wait(self) -> None:
        self.done.wait()


def _open() -> None:
    """A store opened before the worker starts is ready at once."""


def _end(code: int, line: str) -> None:
    print(line, file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(code)  # from the opening thread: nothing was consumed, nothing committed


def _services(
    settings: Settings, serve_api: bool, log_level: str, ready: Callable[[], None] = lambda: None
) -> list[Service]:
    return [ApiService(settings, log_level, ready)] if serve_api else []


def _closer(store: ClickHouseStore | None, ready: Callable[[], None] = lambda: None) -> Callable[[], None] | None:
    if store is None:
        return None

    def close() -> None:
        ready()
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
    `ledger_dir`: where the sink records what it stored (`up` on the embedded broker, core/ledger.py)."""
    ensure_topics(settings)
    topic = settings.kafka.raw_topic
    partitions_total = topic_partitions(settings, topic)
    store = None
    ready = _open
    if with_sink or serve_api:
        if settings.clickhouse_dsn.startswith("chdb:"):  # local: opened while the consumer joins its group
            store = new_store(settings)
            ready = OpeningStore(store, partitions_total if with_sink else None, topic).wait
        else:
            store = open_store(settings)
            if with_sink:
                store.check_partitions(partitions_total, topic)
    sink = in_process_sink(settings, store, ledger_dir, ready) if with_sink and store is not None else None
    processors = Processors(settings, sink, partitions_total)
    services = _services(settings, serve_api, log_level, ready)
    return run_faust(processors.app, settings, services, _closer(store, ready), log_level)


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
