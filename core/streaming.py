"""faust plumbing shared by the processors worker and the sink process: the app, the consumer controls a rewind
needs, batches measured in bodies, and the worker process (its services are given by is_telemetry/worker_app.py).
The faust internals it relies on are in core/faust_adapter.py."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.tables import TableManager
from faust.types import TP
from kafka.errors import KafkaError
from mode import Service
from mode.utils.futures import notify

from core import faust_adapter, gctuning
from core.config import Settings, group_instance_id
from core.kafka import leave_static, member_client_id
from core.rows import PartitionBatch


def _faust_dir(settings: Settings) -> Path:
    """data_dir/faust, its parents made: faust makes only the last level, and the data directory may not exist yet."""
    path = (settings.data_dir / "faust").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class NoTablesManager(TableManager):
    """faust's table manager, without the second it waits at start for tables to be declared: these apps declare
    none (their state is rebuilt from ClickHouse), and a restarted worker joins its group that much sooner."""

    async def on_start(self) -> None:
        await self._update_channels()
        await self.recovery.start()


def faust_app(app_id: str, settings: Settings, **overrides: Any) -> faust.App:
    """A faust app with the settings every worker here needs (Tansu-friendly timeouts, no changelogs). Its Kafka
    clients are named after this process (`member_client_id`: `up` removes the group member of a worker that died);
    with processors.group_instance_id, its group membership is static."""
    config: dict[str, Any] = dict(
        broker=[f"kafka://{s.strip()}" for s in settings.bootstrap_servers.split(",") if s.strip()],
        broker_client_id=member_client_id("worker"),
        consumer_group_instance_id=group_instance_id(settings.processors.group_instance_id, socket.gethostname()),
        TableManager=NoTablesManager,
        store="memory://",
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        processing_guarantee="at_least_once",
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=min(1.0, settings.kafka.session_timeout_s / 4),  # 3 or more per session
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        producer_linger=0.01,
        consumer_auto_offset_reset="earliest",
        web_enabled=bool(settings.processors.web_port),
        web_port=settings.processors.web_port or 6066,
        web_host="127.0.0.1",
        stream_buffer_maxsize=max(4096, settings.sink.batch_size * 2),
        # faust's 1 MiB a partition is ~20 records of the collector's 100 bodies: a backlog then waits on a fetch
        # round trip between batches (the worker 16k -> 21k msgs/s with 2-32 MiB, docs/benchmarks.md)
        consumer_max_fetch_size=settings.processors.fetch_bytes_per_partition,
        logging_config=None,
        datadir=str(_faust_dir(settings)),  # not `<app id>-data/` in the working directory
    )
    config.update(overrides)
    return faust.App(app_id, **config)


def bytes_topic(app: faust.App, name: str) -> Any:
    """A topic of raw bytes (keys and values are not decoded by faust)."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


@dataclass
class Take:
    """What a consumer's handler made of one take of the stream (sinks/loop.py): the rows per source partition to
    write, the sends (dead letters, re-keyed records) to wait for before its events are acknowledged, and how many
    bodies its events held."""

    parts: list[PartitionBatch]
    bodies: int
    sends: list[Awaitable[Any]] = field(default_factory=list)


class FaustRewinder:
    """The checkpoint's consumer controls (sinks/checkpoint.py `Rewinder`) on faust's consumer, for one topic.

    After a rewind, events of that partition already fetched beyond the rewind position still come out of faust's
    buffers: `accepted` drops them until the record at the rewind position arrives again."""

    def __init__(self, app: faust.App, topic: str) -> None:
        self.app, self.topic = app, topic
        self.rewinding: dict[int, int] = {}  # partition -> the position to read next

    def _tps(self, partitions: set[int]) -> set[TP]:
        return {TP(self.topic, p) for p in partitions}

    def pause(self, partitions: set[int]) -> None:
        self.app.consumer.pause_partitions(self._tps(partitions))

    async def rewind(self, partition: int, position: int) -> None:
        self.rewinding[partition] = position
        await self.app.consumer.seek(TP(self.topic, partition), position)

    def resume(self, partitions: set[int]) -> None:
        assigned = {tp for tp in self.app.consumer.assignment() if tp.topic == self.topic}
        self.app.consumer.resume_partitions(self._tps(partitions) & assigned)

    def forget(self, partitions: set[int]) -> None:
        for p in partitions:
            self.rewinding.pop(p, None)

    def discard(self, events: list[Any]) -> None:
        """Events that will not be acknowledged because they are read again: done for faust (its stop waits for
        every fetched message), but their offsets are not marked committable."""
        for event in events:
            faust_adapter.settle(event)

    def accepted(self, events: list[Any]) -> list[Any]:
        if not self.rewinding:
            return events
        out, stale = [], []
        for event in events:
            m = event.message
            expected = self.rewinding.get(m.partition)
            if expected is None:
                out.append(event)
            elif m.offset == expected:
                del self.rewinding[m.partition]
                out.append(event)
            else:
                stale.append(event)
        self.discard(stale)
        return out


async def take_bodies(
    stream: Any, max_bodies: int, within: float, idle: float, weight: Callable[[Any], int]
) -> AsyncIterator[list[Any]]:
    """faust's `Stream.noack_take` (faust/streams.py) with a batch measured in bodies, not records, and ended early
    when the stream goes quiet: a batch is yielded once it holds `max_bodies` bodies (`weight(event)`: how many an
    event carries), `within` seconds after its first event, or after `idle` seconds without a new event (the end of
    a backlog is written at once, not after `within`). Events are not acknowledged: the caller acknowledges them
    once they are stored."""
    loop = asyncio.get_running_loop()
    events: list[Any] = []
    state = {"bodies": 0, "first": 0.0, "last": 0.0}
    full, consumed = asyncio.Event(), asyncio.Event()
    consuming: asyncio.Future[None] | None = None

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:  # the batch is being handled: wait until it is handed over
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take buffer found current_event is None")
            now = loop.time()
            if not events:
                state["first"] = now
            events.append(event)
            state["bodies"] += weight(event)
            state["last"] = now
            if state["bodies"] >= max_bodies:
                full.set()
                consumed.clear()
                await stream.wait(consumed)  # never more than one batch buffered
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    stream.enable_acks = False
    faust_adapter.attach_passive(stream, add_to_buffer)
    try:
        while not stream.should_stop:
            due = min(state["first"] + within, state["last"] + idle) if events else loop.time() + idle
            timeout = due - loop.time()
            if timeout > 0 and not full.is_set():
                await stream.wait_for_stopped(full, timeout=timeout)
            if not events or (not full.is_set() and loop.time() < due):
                continue
            consuming = loop.create_future()
            try:
                yield list(events)
            finally:
                events.clear()
                state["bodies"] = 0
                notify(consuming)
                full.clear()
                consumed.set()
    finally:
        # Acks stay off for good. faust's noack_take restores them here; but when the agent stops, the stream goes on
        # passing the events it had already fetched until it stops too, and each one it passes with acks on is
        # acknowledged, so faust commits past records that were never stored (found: 228 of 2,000 lost on a SIGTERM
        # during a ClickHouse fault). Only the checkpoint acknowledges, once a batch is written.
        stream.enable_acks = False
        faust_adapter.detach(stream, add_to_buffer)


class Worker(faust.Worker):
    """faust's worker, plus: the objects alive once it has started are frozen out of the garbage collector's scans,
    and a stop that does not finish within `stop_timeout_s` (a broker that is gone: faust waits for it for ever)
    ends the process. Nothing is lost by that: offsets are committed only for stored records, the rest is read
    again."""

    stop_timeout_s = 30.0

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        gctuning.freeze()

    def _schedule_shutdown(self, signal: Any) -> None:
        timer = threading.Timer(self.stop_timeout_s, self._stop_timed_out)
        timer.daemon = True
        timer.start()
        super()._schedule_shutdown(signal)

    def _stop_timed_out(self) -> None:
        logging.getLogger(__name__).error(
            "the worker did not stop within %.0fs of the signal (is Kafka reachable?); exiting now: records not yet "
            "stored were not committed and will be read again",
            self.stop_timeout_s,
        )
        logging.shutdown()
        os._exit(1)


def run_faust(
    app: faust.App,
    settings: Settings,
    services: Sequence[Service] = (),
    on_stopped: Callable[[], None] | None = None,
    log_level: str = "warning",
) -> int:
    """Run a faust app as a worker, with `services` beside it, until SIGTERM/SIGINT (graceful, bounded by
    processors.stop_timeout_s); `on_stopped` runs once the worker has stopped (closing what the app wrote to)."""
    worker = Worker(app, *services, loglevel=log_level.upper(), quiet=True, override_logging=False)
    worker.stop_timeout_s = settings.processors.stop_timeout_s
    worker.spinner = None  # faust's spinner sets the root logger to DEBUG: costly, and noise in services
    gctuning.tune()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        leave_if_static(app, settings)
        if on_stopped is not None:
            on_stopped()
    return 0


def leave_if_static(app: faust.App, settings: Settings) -> None:
    """A static member that stops leaves its group (its partitions move at once); one that crashes does not, and its
    replacement takes them back without a rebalance."""
    instance_id = app.conf.consumer_group_instance_id
    if not instance_id:
        return
    try:
        leave_static(settings.bootstrap_servers, app.conf.id, instance_id)
    except (KafkaError, OSError) as exc:
        logging.getLogger(__name__).info("could not leave group %s as %s: %r", app.conf.id, instance_id, exc)
