"""The one consumer loop: a faust agent over one topic, taking batches of bodies off the stream, handing each to a
handler, and the handler's rows to the checkpoint (sinks/checkpoint.py), which writes them through a `Sink`
(sinks/base.py) and only then acknowledges them.

It serves both processes (composed in is_telemetry/worker_app.py):
- `is-telemetry worker`: the raw topic; the handler is the processors (processors/worker.py: validate, re-key, dead
  letters); the sink rolls up and writes to ClickHouse. With `--no-sink` there is no sink: the handler publishes the
  rows to the snapshots topic and the loop acknowledges once they are sent;
- `is-telemetry sink`: the snapshots topic; the handler reads the rows back (sinks/consumer.py); same sink.

A batch ends at `sink.batch_size` bodies (the handler's `weight` of an event), `processors.batch_seconds` after its
first event, or `processors.batch_idle_seconds` without a new one (core/streaming.py `take_bodies`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

import faust

from core.config import Settings
from core.streaming import FaustRewinder, Take, bytes_topic, take_bodies
from sinks.base import Sink
from sinks.checkpoint import Checkpoint, PositionsLog


class Handler(Protocol):
    """What a consumer loop does with each take of its stream."""

    def weight(self, event: Any) -> int:
        """How many bodies `event` carries (a batch ends at `sink.batch_size` of them)."""
        ...

    async def handle(self, events: list[Any]) -> Take: ...

    def assigned(self, partitions: set[int]) -> None: ...

    def revoked(self, partitions: set[int]) -> None: ...

    def stored(self, bodies: int) -> None:
        """`bodies` were stored (written, or published for the sink process) and acknowledged."""
        ...


class ConsumerLoop:
    """One agent over `topic` of `app`: take, handle, write through the checkpoint, acknowledge. The consumer
    controls of the checkpoint (`Consumer`: pause, rewind, resume, discard, ack) are this loop's."""

    def __init__(
        self,
        app: faust.App,
        topic: str,
        name: str,
        handler: Handler,
        sink: Sink[Any] | None,
        settings: Settings,
        positions: PositionsLog | None = None,
    ) -> None:
        """`sink`: None acknowledges each take once its sends are done (the handler stored it); `positions`: told
        what was written (core/ledger.py)."""
        self.app, self.topic, self.handler, self.settings = app, topic, handler, settings
        self.rewinder = FaustRewinder(app, topic)
        self.checkpoint = (
            Checkpoint(sink, self, deadline_s=settings.clickhouse.retry_s, positions=positions)
            if sink is not None
            else None
        )
        self._stream: Any = None
        app.agent(bytes_topic(app, topic), name=name)(self._agent)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]  # faust accepts coroutines
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    # the checkpoint's consumer controls (sinks/checkpoint.py `Consumer`)
    def pause(self, partitions: set[int]) -> None:
        self.rewinder.pause(partitions)

    async def rewind(self, partition: int, position: int) -> None:
        await self.rewinder.rewind(partition, position)

    def resume(self, partitions: set[int]) -> None:
        self.rewinder.resume(partitions)

    def discard(self, events: list[Any]) -> None:
        self.rewinder.discard(events)

    async def ack(self, events: Sequence[Any], bodies: int) -> None:
        for event in events:
            await self._stream.ack(event)
        self.handler.stored(bodies)

    def _mine(self, tps: Any) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == self.topic}  # faust passes every topic's

    async def _on_assigned(self, app: Any, assigned: Any, **kwargs: Any) -> None:
        partitions = self._mine(assigned)
        self.handler.assigned(partitions)
        if self.checkpoint is not None:  # the sink's state of the partitions taken on, before their first batch
            await self.checkpoint.taken_on(partitions)

    async def _on_revoked(self, app: Any, revoked: Any, **kwargs: Any) -> None:
        partitions = self._mine(revoked)
        if self.checkpoint is not None:
            await self.checkpoint.drain()  # the write in flight finishes (or gives up) before another owner reads
            self.checkpoint.revoked(partitions)
        self.rewinder.forget(partitions)
        self.handler.revoked(partitions)

    async def _agent(self, stream: Any) -> None:
        self._stream = stream
        p = self.settings.processors
        batches = take_bodies(
            stream, self.settings.sink.batch_size, p.batch_seconds, p.batch_idle_seconds, self.handler.weight
        )
        try:
            async for events in batches:
                events = self.rewinder.accepted(events)
                if events:
                    await self._take(events)
        finally:
            if self.checkpoint is not None:
                with contextlib.suppress(Exception):
                    await self.checkpoint.drain()

    async def _take(self, events: list[Any]) -> None:
        take = await self.handler.handle(events)
        if self.checkpoint is None:
            for send in take.sends:
                await send
            await self.ack(events, take.bodies)
            return
        for event in events:
            self.checkpoint.first_seen(event.message.partition, event.message.offset)
        await self.checkpoint.submit(take.parts, events, take.sends, take.bodies)
