"""The worker processes, composed from the stages: `is-telemetry worker` (a consumer loop of sinks/loop.py over the
raw topic, handled by processors/worker.py, with the roll-up sink in the same process, optionally serving the API of
dashboard/) and `is-telemetry sink` (the same loop over the snapshots topic, handled by sinks/consumer.py, with the
same sink). The roll-up sink (`RollupSink`, a sinks/base.py `Sink`) is the processors' roll-up (processors/rollup.py)
written to ClickHouse (sinks/clickhouse.py).

This is the one place where the processors, the sinks and the query side meet; the stages themselves do not import
each other (pyproject.toml `[tool.importlinter]`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError
from mode import Service

from core.config import Settings, check_api_exposure
from core.errors import ConfigError, RequestRefused
from core.kafka import ensure_topics, topic_partitions
from core.ledger import StoredPositions
from core.rows import Batch, PartitionBatch
from core.streaming import faust_app, run_faust
from processors.rollup import Rollups, preparer
from processors.worker import Processors
from sinks import erasure, metrics
from sinks.base import Sink, SinkBackpressureError
from sinks.clickhouse import ClickHouseStore, SinkUnavailable
from sinks.consumer import SnapshotsReader
from sinks.loop import ConsumerLoop
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


#: What ClickHouse raises when it does not take a read or a write: the checkpoint pauses and rewinds.
UNAVAILABLE = (SinkUnavailable, ClickHouseError, OSError)


class RollupSink(Sink[Batch]):
    """The sink of both processes: a batch rolled up (processors/rollup.py) on the state of its partitions, then
    written to `store`. The state of partitions taken on, or rewound, is rebuilt from the store."""

    def __init__(self, store: ClickHouseStore, rollups: Rollups, opening: OpeningStore | None = None) -> None:
        """`opening`: the store being opened meanwhile (its `wait` is the sink's `setup`)."""
        self.store, self.rollups, self.opening = store, rollups, opening
        self._prepare = preparer(rollups, store)
        # the partitions it holds (taken on or written, until dropped): their UIDs are its applier's (sinks/analysts.py)
        self._owned: set[int] = set()

    def setup(self) -> None:
        if self.opening is not None:
            self.opening.wait()
        self.store.start_applier(self.owned)

    def owned(self) -> tuple[list[int], int]:
        return sorted(self._owned), self.rollups.partitions_total

    def load(self, partitions: list[int]) -> None:
        self._owned.update(partitions)
        try:
            self.rollups.load(self.store, self.rollups.missing(partitions))
        except UNAVAILABLE as exc:
            raise SinkBackpressureError(str(exc) or type(exc).__name__) from exc

    def prepare_blocks(self, parts: list[PartitionBatch]) -> bool:
        return bool(self.rollups.missing(p.partition for p in parts))

    def prepare(self, parts: list[PartitionBatch]) -> Batch:
        self._owned.update(p.partition for p in parts)  # (again after a rewind dropped them)
        try:
            return self._prepare(parts)
        except UNAVAILABLE as exc:
            raise SinkBackpressureError(str(exc) or type(exc).__name__) from exc

    def write(self, batch: Batch) -> None:
        try:
            self.store.write(batch)
        except UNAVAILABLE as exc:
            raise SinkBackpressureError(str(exc) or type(exc).__name__) from exc
        metrics.SINK_ROWS.labels("snapshots").inc(len(batch.snapshots))
        metrics.SINK_ROWS.labels("rejections").inc(len(batch.rejections))
        metrics.SINK_ROWS.labels("rollup_partitions").inc(len(batch.rollups) + len(batch.recompute))

    def drop(self, partitions: set[int]) -> None:
        self._owned.difference_update(partitions)
        self.rollups.drop(partitions)


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
    `ledger_dir`: where the sink records what it stored of the raw topic (`up` on the embedded broker,
    core/ledger.py)."""
    ensure_topics(settings)
    topic = settings.kafka.raw_topic
    partitions_total = topic_partitions(settings, topic)
    store, opening = None, None
    if with_sink or serve_api:
        if settings.clickhouse_dsn.startswith("chdb:"):  # local: opened while the consumer joins its group
            store = new_store(settings)
            opening = OpeningStore(store, partitions_total if with_sink else None, topic)
        else:
            store = open_store(settings)
            if with_sink:
                store.check_partitions(partitions_total, topic)
    ready = opening.wait if opening is not None else _open
    sink = None
    if with_sink and store is not None:
        sink = RollupSink(store, Rollups(settings.processors.state_days, partitions_total), opening)
    positions = StoredPositions(ledger_dir, topic) if ledger_dir is not None and sink is not None else None
    app = faust_app(settings.processors.group_id, settings)
    processors = Processors(settings, app, sink is not None, partitions_total)
    ConsumerLoop(app, topic, "process", processors, sink, settings, positions)
    services = _services(settings, serve_api, log_level, ready)
    return run_faust(app, settings, services, _closer(store, ready), log_level)


def run_sink(settings: Settings, serve_api: bool = False, log_level: str = "warning") -> int:
    """`is-telemetry sink`: consume the snapshots topic (records of processors running with --no-sink), roll each
    source partition up and write it through the same consumer loop and sink as a worker's. Positions are the
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
    sink = RollupSink(store, Rollups(settings.processors.state_days, partitions_total))
    app = faust_app(settings.processors.sink_group_id, settings)
    ConsumerLoop(app, k.snapshots_topic, "sink", SnapshotsReader(), sink, settings)
    return run_faust(app, settings, _services(settings, serve_api, log_level), _closer(store), log_level)
