"""The sink's checkpoint: batches per source partition, prepared and written by a `Sink`, and only then acknowledged.

In the shape of quix-streams' `sinks/base` and `checkpointing/checkpoint.py`:
- a batch holds, per source partition, the rows one take of the stream produced (`PartitionBatch`);
- at the checkpoint, the sink (sinks/base.py) `prepare`s them into what to write (the processors' roll-up) and
  `write`s the batch in one go; only after the write are its events acknowledged, and faust commits only
  acknowledged offsets: a flush always precedes the commit of its offsets;
- the next batch is prepared while the previous one is written (one write in flight);
- a sink that does not take a batch raises SinkBackpressureError (the ClickHouse sink: after `clickhouse.retry_s`):
  the partitions of the failed and the next batch are paused, the sink drops what it prepared of them, and they are
  rewound to the first position not yet written; after a back-off (core/retry.py `RetryPolicy`) they resume, and
  the records are processed again from a state rebuilt from the store. Nothing is retried forever in a thread;
  stopping and rebalancing wait for the write in flight at most `deadline_s`.

One checkpoint for the in-worker sink (`is-telemetry worker`) and the separate one (`is-telemetry sink`): both are
consumer loops of sinks/loop.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core import gctuning
from core.retry import RetryPolicy
from core.rows import PartitionBatch
from sinks import metrics
from sinks.base import Sink, SinkBackpressureError

log = logging.getLogger(__name__)

#: After a failed write: 2 s, then twice as long each time in a row, at most a minute.
BACKOFF = RetryPolicy(initial_s=2.0, maximum_s=60.0)


class Consumer(Protocol):
    """What the checkpoint needs from the consumer (sinks/loop.py adapts faust's)."""

    def pause(self, partitions: set[int]) -> None: ...

    async def rewind(self, partition: int, position: int) -> None:
        """Read `partition` again from `position`; drop what was fetched beyond it before."""
        ...

    def resume(self, partitions: set[int]) -> None: ...

    def discard(self, events: list[Any]) -> None:
        """Events that will not be acknowledged: they are read again after the rewind."""
        ...

    async def ack(self, events: Sequence[Any], bodies: int) -> None:
        """The events are stored (they held `bodies` bodies): their offsets may be committed."""
        ...


class PositionsLog(Protocol):
    """Told what is written, before it is acknowledged (the embedded broker's loss ledger, core/ledger.py)."""

    def record(self, written: dict[int, int]) -> None: ...


@dataclass
class _Pending:
    parts: list[PartitionBatch]
    events: list[Any]
    sends: list[Awaitable[Any]]
    bodies: int
    batch: Any = None
    prepared: bool = False


class Checkpoint:
    """Prepare, write, then acknowledge; one write in flight; pause and rewind on a lasting failure."""

    def __init__(
        self,
        sink: Sink[Any],
        consumer: Consumer,
        deadline_s: float = 30.0,
        backoff: RetryPolicy = BACKOFF,
        positions: PositionsLog | None = None,
    ) -> None:
        """`deadline_s`: the longest a stop or a rebalance waits for the write in flight. `positions`: told `written`
        after each batch is stored, before its events are acknowledged."""
        self.sink, self.consumer, self.deadline_s = sink, consumer, deadline_s
        self.backoff, self.positions = backoff, positions
        self.written: dict[int, int] = {}  # partition -> the first position not yet written
        self._failures = 0  # batches in a row the sink did not take
        self._set_up = False
        self._inflight: asyncio.Task[bool] | None = None
        self._loading: asyncio.Future[None] | None = None  # the state of partitions taken on, being rebuilt
        self._resume: asyncio.TimerHandle | None = None
        self.paused: set[int] = set()
        self.failing: set[int] = set()  # partitions whose last batch the sink did not take, until one is written

    async def taken_on(self, partitions: Iterable[int]) -> None:
        """Partitions assigned to this process: their state is rebuilt off the event loop, in one go, rather than
        by their first batches (each of which would wait for it, behind the write in flight). It runs in the
        background: the assignment callback returns at once (the consumer sends no heartbeat until it has returned,
        and a group takes a member that misses its session out), and the next batch, or drain, waits for it. If
        ClickHouse does not answer, the first batch of each partition loads it instead (and rewinds if that fails
        too)."""
        wanted = sorted(set(partitions))
        if not wanted:
            return
        self._loading = asyncio.ensure_future(self._load_taken(wanted, self._loading))

    async def _load_taken(self, wanted: list[int], before: asyncio.Future[None] | None) -> None:
        if before is not None:
            await before
        if not self._set_up:
            await asyncio.to_thread(self.sink.setup)
            self._set_up = True
        try:
            await asyncio.to_thread(self.sink.load, wanted)
        except SinkBackpressureError as exc:
            log.warning(
                "the state of partitions %s was not loaded on assignment (%s): their first batch loads it", wanted, exc
            )

    async def _loaded(self) -> None:
        """Wait for the state of the partitions taken on (a load cannot be interrupted: it runs on a thread)."""
        task, self._loading = self._loading, None
        if task is not None:
            await task

    def first_seen(self, partition: int, position: int) -> None:
        """Where a partition's reading starts (its committed offset), the first time it is seen."""
        self.written.setdefault(partition, position)

    async def submit(
        self, parts: list[PartitionBatch], events: list[Any], sends: list[Awaitable[Any]], bodies: int | None = None
    ) -> None:
        """Prepare this batch while the previous one is written, wait for that write, then start this one's.
        `bodies`: how many bodies the events hold (a Kafka record may hold many), for the acknowledgement."""
        await self._loaded()
        pending = _Pending(parts, events, sends, len(events) if bodies is None else bodies)
        try:
            if self.sink.prepare_blocks(parts):  # state to load from the store first: off the event loop
                pending.batch = await asyncio.to_thread(self.sink.prepare, parts)
            else:
                pending.batch = self.sink.prepare(parts)
            pending.prepared = True
        except SinkBackpressureError as exc:
            await self._wait_inflight()
            await self._fail([pending], exc)
            return
        if not await self._wait_inflight():
            # the previous batch failed and was rewound; this one was prepared on its state: rewind it too
            await self._fail([pending], SinkBackpressureError("the previous batch was not written"))
            return
        self._inflight = asyncio.ensure_future(self._complete(pending))

    async def _complete(self, pending: _Pending) -> bool:
        """Write, wait for this batch's sends, acknowledge its events; on failure rewind. True if written."""
        assert pending.prepared
        try:
            await asyncio.to_thread(self._write, pending.batch)
            for send in pending.sends:  # dead letters and re-keyed records: stored before the offsets move on
                await send
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - SinkBackpressureError, or a dead-letter/re-key send that failed
            await self._fail([pending], exc)
            return False
        for part in pending.parts:
            self.written[part.partition] = max(self.written.get(part.partition, 0), part.position + 1)
        self.failing -= {part.partition for part in pending.parts}
        self._count_held()
        if self.positions is not None:
            try:
                self.positions.record(self.written)
            except OSError as exc:  # the records are stored: only the loss report would be off
                log.error("the stored positions could not be recorded (%s): a broker loss would be over-reported", exc)
        await self.consumer.ack(pending.events, pending.bodies)
        self._failures = 0
        return True

    def _write(self, batch: Any) -> None:
        started = time.perf_counter()
        with gctuning.paused():
            self.sink.write(batch)
        metrics.SINK_SECONDS.observe(time.perf_counter() - started)
        metrics.LAST_WRITE.set(time.time())

    async def _wait_inflight(self, timeout_s: float | None = None) -> bool:
        """Wait for the batch in flight to be written and acknowledged (or rewound); False if it was not."""
        task, self._inflight = self._inflight, None
        if task is None:
            return True
        try:
            if timeout_s is None:
                return await asyncio.shield(task)
            return await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            log.warning(
                "a write to the store did not finish within %.0fs: its records are not acknowledged and will "
                "be processed again",
                timeout_s,
            )
            return False

    async def _fail(self, batches: list[_Pending], exc: BaseException) -> None:
        """Pause and rewind every partition of `batches`; resume after a back-off."""
        partitions = {p.partition for b in batches for p in b.parts}
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        self._failures += 1
        wait = self.backoff.delay(self._failures)
        log.warning(
            "the store did not take a batch (%s): pausing partitions %s and rewinding them to the last "
            "written position; resuming in %.0fs",
            reason,
            sorted(partitions),
            wait,
        )
        metrics.REWINDS.inc()
        self.consumer.pause(partitions)
        self.paused |= partitions
        self.failing |= partitions
        self._count_held()
        self.sink.drop(partitions)
        for b in batches:
            self.consumer.discard(b.events)
        for p in sorted(partitions):
            first = min((part.position for b in batches for part in b.parts if part.partition == p), default=0)
            await self.consumer.rewind(p, self.written.get(p, first))
        if self._resume is not None:
            self._resume.cancel()
        self._resume = asyncio.get_running_loop().call_later(wait, self._resume_all)

    def _count_held(self) -> None:
        metrics.PAUSED.set(len(self.paused | self.failing))

    def _resume_all(self) -> None:
        self._resume = None
        partitions, self.paused = self.paused, set()
        log.info("resuming partitions %s", sorted(partitions))
        self.consumer.resume(partitions)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Finish (or give up on) the write in flight: before stopping, and before partitions are revoked."""
        await self._loaded()
        await self._wait_inflight(self.deadline_s if timeout_s is None else timeout_s)

    def revoked(self, partitions: set[int]) -> None:
        """`partitions` were revoked (after `drain`): what was written and prepared of them is forgotten."""
        self.sink.drop(partitions)
        for p in partitions:
            self.written.pop(p, None)
            self.paused.discard(p)
            self.failing.discard(p)
        self._count_held()
        if self._resume is not None and not self.paused:
            self._resume.cancel()
            self._resume = None
