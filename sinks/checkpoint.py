"""The sink's checkpoint: batches per source partition, prepared (rolled up) and written, and only then acknowledged.

In the shape of quix-streams' `sinks/base` and `checkpointing/checkpoint.py`:
- a batch holds, per source partition, the rows one take of the stream produced (`PartitionBatch`);
- at the checkpoint, `prepare` turns them into what to write (the processors' roll-up, processors/rollup.py
  `roll_up`) and the batch is written in one go (`ClickHouseStore.write`); only after the write are its events
  acknowledged, and faust commits only acknowledged offsets: a flush always precedes the commit of its offsets;
- the next batch is prepared while the previous one is written (one write in flight);
- a write that fails for `clickhouse.retry_s` raises SinkUnavailable: the partitions of the failed and the next
  batch are paused, their prepared state dropped (`on_rewind`), and they are rewound to the first position not yet
  written; after a back-off they resume, and the records are processed again from a state rebuilt from ClickHouse.
  Nothing is retried forever in a thread; stopping and rebalancing wait for the write in flight at most
  `deadline_s`.

One write path for the in-worker sink (`is-telemetry worker`) and the separate one (`is-telemetry sink`): both feed
`Checkpoint.submit`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from clickhouse_connect.driver.exceptions import ClickHouseError

from core import gctuning
from core.rows import Batch, PartitionBatch
from sinks import metrics
from sinks.clickhouse import ClickHouseStore, SinkUnavailable

log = logging.getLogger(__name__)

Prepare = Callable[[list[PartitionBatch]], Batch]


class Rewinder(Protocol):
    """What the checkpoint needs from the consumer (processors/worker.py adapts faust's)."""

    def pause(self, partitions: set[int]) -> None: ...

    async def rewind(self, partition: int, position: int) -> None:
        """Read `partition` again from `position`; drop what was fetched beyond it before."""
        ...

    def resume(self, partitions: set[int]) -> None: ...

    def discard(self, events: list[Any]) -> None:
        """Events that will not be acknowledged: they are read again after the rewind."""
        ...


@dataclass
class _Pending:
    parts: list[PartitionBatch]
    events: list[Any]
    sends: list[Awaitable[Any]]
    bodies: int
    batch: Batch | None = None


class Checkpoint:
    """Prepare, write, then acknowledge; one write in flight; pause and rewind on a lasting failure."""

    def __init__(
        self,
        store: ClickHouseStore,
        prepare: Prepare,
        needs_io: Callable[[list[PartitionBatch]], bool],
        on_rewind: Callable[[set[int]], None],
        rewinder: Rewinder,
        ack: Callable[[Sequence[Any], int], Awaitable[None]],
        deadline_s: float = 30.0,
        backoff_s: tuple[float, float] = (2.0, 60.0),
        load: Callable[[list[int]], None] | None = None,
        on_written: Callable[[dict[int, int]], None] | None = None,
        ready: Callable[[], None] | None = None,
    ) -> None:
        """`load`: rebuilds the prepared state of partitions taken on (`taken_on`), before their first batch.
        `on_written`: told `written` after each batch is stored, before its events are acknowledged (the loss ledger
        of the embedded broker, core/ledger.py). `ready`: blocks until the store is open (it may be opened
        while the consumer joins its group); waited for when partitions are taken on, before their first batch."""
        self.store, self.prepare, self.needs_io, self.on_rewind = store, prepare, needs_io, on_rewind
        self.load, self.on_written, self.ready = load, on_written, ready
        self.rewinder, self.ack, self.deadline_s = rewinder, ack, deadline_s
        self.backoff_s, self._backoff = backoff_s, backoff_s[0]
        self.written: dict[int, int] = {}  # partition -> the first position not yet written
        self._inflight: asyncio.Task[bool] | None = None
        self._loading: asyncio.Future[None] | None = None  # the state of partitions taken on, being rebuilt
        self._resume: asyncio.TimerHandle | None = None
        self.paused: set[int] = set()
        self.failing: set[int] = set()  # partitions whose last batch ClickHouse did not take, until one is written

    async def taken_on(self, partitions: Iterable[int]) -> None:
        """Partitions assigned to this process: their state is rebuilt off the event loop, in one go, rather than
        by their first batches (each of which would wait for it, behind the write in flight). It runs in the
        background: the assignment callback returns at once (the consumer sends no heartbeat until it has returned,
        and a group takes a member that misses its session out), and the next batch, or drain, waits for it. If
        ClickHouse does not answer, the first batch of each partition loads it instead (and rewinds if that fails
        too)."""
        wanted = sorted(set(partitions))
        if (self.ready is None and self.load is None) or not wanted:
            return
        self._loading = asyncio.ensure_future(self._load_taken(wanted, self._loading))

    async def _load_taken(self, wanted: list[int], before: asyncio.Future[None] | None) -> None:
        if before is not None:
            await before
        if self.ready is not None:
            await asyncio.to_thread(self.ready)
            self.ready = None
        if self.load is None:
            return
        try:
            await asyncio.to_thread(self.load, wanted)
        except (SinkUnavailable, ClickHouseError, OSError) as exc:
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
            if self.needs_io(parts):  # state to load from ClickHouse first: off the event loop
                pending.batch = await asyncio.to_thread(self.prepare, parts)
            else:
                pending.batch = self.prepare(parts)
        except (SinkUnavailable, ClickHouseError, OSError) as exc:
            await self._wait_inflight()
            await self._fail([pending], exc)
            return
        if not await self._wait_inflight():
            # the previous batch failed and was rewound; this one was prepared on its state: rewind it too
            await self._fail([pending], SinkUnavailable("the previous batch was not written"))
            return
        self._inflight = asyncio.ensure_future(self._complete(pending))

    async def _complete(self, pending: _Pending) -> bool:
        """Write, wait for this batch's sends, acknowledge its events; on failure rewind. True if written."""
        assert pending.batch is not None
        try:
            await asyncio.to_thread(self._write, pending.batch)
            for send in pending.sends:  # dead letters and re-keyed records: stored before the offsets move on
                await send
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - SinkUnavailable, or a dead-letter/re-key send that failed
            await self._fail([pending], exc)
            return False
        for part in pending.parts:
            self.written[part.partition] = max(self.written.get(part.partition, 0), part.position + 1)
        self.failing -= {part.partition for part in pending.parts}
        self._count_held()
        if self.on_written is not None:
            try:
                self.on_written(self.written)
            except OSError as exc:  # the records are stored: only the loss report would be off
                log.error("the stored positions could not be recorded (%s): a broker loss would be over-reported", exc)
        await self.ack(pending.events, pending.bodies)
        self._backoff = self.backoff_s[0]
        return True

    def _write(self, batch: Batch) -> None:
        started = time.perf_counter()
        with gctuning.paused():
            self.store.write(batch)
        metrics.SINK_SECONDS.observe(time.perf_counter() - started)
        metrics.SINK_ROWS.labels("snapshots").inc(len(batch.snapshots))
        metrics.SINK_ROWS.labels("rejections").inc(len(batch.rejections))
        metrics.SINK_ROWS.labels("rollup_partitions").inc(len(batch.rollups) + len(batch.recompute))
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
                "a ClickHouse write did not finish within %.0fs: its records are not acknowledged and will "
                "be processed again",
                timeout_s,
            )
            return False

    async def _fail(self, batches: list[_Pending], exc: BaseException) -> None:
        """Pause and rewind every partition of `batches`; resume after a back-off."""
        partitions = {p.partition for b in batches for p in b.parts}
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        log.warning(
            "ClickHouse did not take a batch (%s): pausing partitions %s and rewinding them to the last "
            "written position; resuming in %.0fs",
            reason,
            sorted(partitions),
            self._backoff,
        )
        metrics.REWINDS.inc()
        self.rewinder.pause(partitions)
        self.paused |= partitions
        self.failing |= partitions
        self._count_held()
        self.on_rewind(partitions)
        for b in batches:
            self.rewinder.discard(b.events)
        for p in sorted(partitions):
            first = min((part.position for b in batches for part in b.parts if part.partition == p), default=0)
            await self.rewinder.rewind(p, self.written.get(p, first))
        if self._resume is not None:
            self._resume.cancel()
        self._resume = asyncio.get_running_loop().call_later(self._backoff, self._resume_all)
        self._backoff = min(self._backoff * 2, self.backoff_s[1])

    def _count_held(self) -> None:
        metrics.PAUSED.set(len(self.paused | self.failing))

    def _resume_all(self) -> None:
        self._resume = None
        partitions, self.paused = self.paused, set()
        log.info("resuming partitions %s", sorted(partitions))
        self.rewinder.resume(partitions)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Finish (or give up on) the write in flight: before stopping, and before partitions are revoked."""
        await self._loaded()
        await self._wait_inflight(self.deadline_s if timeout_s is None else timeout_s)

    def revoked(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.written.pop(p, None)
            self.paused.discard(p)
            self.failing.discard(p)
        self._count_held()
        if self._resume is not None and not self.paused:
            self._resume.cancel()
            self._resume = None
