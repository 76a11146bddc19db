"""faust plumbing shared by the processors worker and the sink process."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import faust
from faust.types import TP
from mode import Service

from is_telemetry.config import Settings
from sinks.clickhouse import ClickHouseStore


def faust_app(app_id: str, settings: Settings, **overrides: Any) -> faust.App:
    """A faust app with the settings every worker here needs (Tansu-friendly timeouts, no changelogs)."""
    config: dict[str, Any] = dict(
        broker=[f"kafka://{s.strip()}" for s in settings.bootstrap_servers.split(",") if s.strip()],
        store="memory://",
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        processing_guarantee="at_least_once",
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=1.0,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        producer_linger=0.01,
        consumer_auto_offset_reset="earliest",
        web_enabled=bool(settings.processors.web_port),
        web_port=settings.processors.web_port or 6066,
        web_host="127.0.0.1",
        stream_buffer_maxsize=max(4096, settings.processors.batch_size * 2),
        logging_config=None,
    )
    config.update(overrides)
    return faust.App(app_id, **config)


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
            event.message.acked = True

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


class ApiService(Service):
    """Serves the HTTP API/dashboard from the worker (chDB can only be read by the process that writes it), on a
    thread and event loop of its own, with its queries on their own read-only ClickHouse sessions."""

    def __init__(self, settings: Settings, log_level: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from dashboard.server import ApiThread

        self.api = ApiThread(settings, log_level)

    async def on_start(self) -> None:
        self.api.start()

    async def on_stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.api.stop, 5.0)


def run_faust(app: faust.App, settings: Settings, store: ClickHouseStore | None, serve_api: bool, log_level: str) -> int:
    """Run a faust app as a worker until SIGTERM/SIGINT (graceful), optionally serving the API from it."""
    services: list[Service] = []
    if serve_api:
        services.append(ApiService(settings, log_level))
    worker = faust.Worker(app, *services, loglevel=log_level.upper(), quiet=True, override_logging=False)
    worker.spinner = None  # faust's spinner sets the root logger to DEBUG: costly, and noise in services
    # Per-event objects churn the young generation; fewer full collections: +12% msgs/s (docs/benchmarks.md).
    gc.set_threshold(50_000, 20, 10)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if store is not None:
            store.stopping.set()
            store.close()
    return 0
