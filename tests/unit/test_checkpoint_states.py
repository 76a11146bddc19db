"""The checkpoint's state machine (sinks/checkpoint.py), with a fake sink and a fake consumer: a batch is written
before its events are acknowledged (flush before commit), one write is in flight while the next batch is prepared,
a batch the sink does not take pauses and rewinds its partitions (and the next batch's) to the first position not
yet written, they resume after the back-off of core/retry.py, and a revoked partition is forgotten."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY

from core.retry import RetryPolicy
from core.rows import PartitionBatch
from sinks.base import Sink, SinkBackpressureError
from sinks.checkpoint import Checkpoint

Log = list[tuple[str, Any]]


class FakeSink(Sink[list[tuple[int, int]]]):
    """Prepares a batch into its (partition, position) pairs; `write` blocks while `hold` is clear."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.fail_prepare = 0  # how many of the next prepares raise SinkBackpressureError
        self.fail_write = 0  # how many of the next writes raise it
        self.fail_load = False
        self.hold = threading.Event()
        self.hold.set()

    def setup(self) -> None:
        self.log.append(("setup", None))

    def load(self, partitions: list[int]) -> None:
        self.log.append(("load", partitions))
        if self.fail_load:
            raise SinkBackpressureError("the store does not answer")

    def prepare(self, parts: list[PartitionBatch]) -> list[tuple[int, int]]:
        prepared = [(p.partition, p.position) for p in parts]
        self.log.append(("prepare", prepared))
        if self.fail_prepare:
            self.fail_prepare -= 1
            raise SinkBackpressureError("the state could not be loaded")
        return prepared

    def write(self, batch: list[tuple[int, int]]) -> None:
        self.log.append(("write started", batch))
        assert self.hold.wait(10), "a write was held for 10 s"
        if self.fail_write:
            self.fail_write -= 1
            raise SinkBackpressureError("ClickHouse is down")
        self.log.append(("written", batch))

    def drop(self, partitions: set[int]) -> None:
        self.log.append(("drop", sorted(partitions)))


class FakeConsumer:
    def __init__(self, log: Log) -> None:
        self.log = log

    def pause(self, partitions: set[int]) -> None:
        self.log.append(("pause", sorted(partitions)))

    async def rewind(self, partition: int, position: int) -> None:
        self.log.append(("rewind", (partition, position)))

    def resume(self, partitions: set[int]) -> None:
        self.log.append(("resume", sorted(partitions)))

    def discard(self, events: list[Any]) -> None:
        self.log.append(("discard", list(events)))

    async def ack(self, events: Sequence[Any], bodies: int) -> None:
        self.log.append(("ack", (list(events), bodies)))


class Positions:
    def __init__(self, log: Log) -> None:
        self.log = log

    def record(self, written: dict[int, int]) -> None:
        self.log.append(("positions", dict(written)))


@dataclass(frozen=True)
class CountingPolicy(RetryPolicy):
    """Back-off of no length that records how many failures in a row each wait was asked for."""

    asked: list[int] | None = None

    def delay(self, failures: int) -> float:
        assert self.asked is not None
        self.asked.append(failures)
        return 0.0


@dataclass
class Rig:
    log: Log
    sink: FakeSink
    cp: Checkpoint
    asked: list[int]

    def of(self, kind: str) -> list[Any]:
        return [value for k, value in self.log if k == kind]

    def index(self, kind: str, value: Any) -> int:
        return self.log.index((kind, value))

    async def submit(
        self, *positions: tuple[int, int], events: list[Any], sends: Sequence[Awaitable[Any]] = ()
    ) -> None:
        for partition, position in positions:
            self.cp.first_seen(partition, position)
        parts = [PartitionBatch(partition, position) for partition, position in positions]
        await self.cp.submit(parts, events, list(sends))


def run(test: Callable[[Rig], Coroutine[Any, Any, None]], deadline_s: float = 5.0) -> Rig:
    log: Log = []
    asked: list[int] = []
    sink = FakeSink(log)

    async def main() -> Rig:
        cp = Checkpoint(
            sink,
            FakeConsumer(log),
            deadline_s=deadline_s,
            backoff=CountingPolicy(asked=asked),
            positions=Positions(log),
        )
        rig = Rig(log, sink, cp, asked)
        await test(rig)
        return rig

    return asyncio.run(main())


def paused_gauge() -> float | None:
    return REGISTRY.get_sample_value("is_telemetry_sink_paused_partitions")


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.005)


def test_a_batch_is_written_before_its_events_are_acknowledged() -> None:
    async def test(rig: Rig) -> None:
        await rig.submit((0, 10), (1, 20), events=["a", "b"])
        await rig.cp.drain()

    rig = run(test)
    batch = [(0, 10), (1, 20)]
    assert rig.of("ack") == [(["a", "b"], 2)]
    # written, then the positions recorded, then acknowledged: a flush precedes the commit of its offsets
    assert rig.index("written", batch) < rig.index("positions", {0: 11, 1: 21}) < rig.index("ack", (["a", "b"], 2))
    assert rig.cp.written == {0: 11, 1: 21}
    assert rig.of("pause") == [] and rig.of("rewind") == []


def test_the_next_batch_is_prepared_while_one_write_is_in_flight() -> None:
    async def test(rig: Rig) -> None:
        rig.sink.hold.clear()
        await rig.submit((0, 10), events=["a"])
        await until(lambda: ("write started", [(0, 10)]) in rig.log, "the first write started")
        second = asyncio.ensure_future(rig.submit((0, 11), events=["b"]))
        await until(lambda: ("prepare", [(0, 11)]) in rig.log, "the second batch prepared")
        assert ("write started", [(0, 11)]) not in rig.log  # one write in flight
        assert rig.of("ack") == []  # nothing acknowledged before its write
        rig.sink.hold.set()
        await second
        await rig.cp.drain()

    rig = run(test)
    assert rig.of("ack") == [(["a"], 1), (["b"], 1)]
    assert rig.index("written", [(0, 10)]) < rig.index("write started", [(0, 11)])


def test_sends_are_awaited_before_the_acknowledgement() -> None:
    async def test(rig: Rig) -> None:
        sent = asyncio.get_running_loop().create_future()
        await rig.submit((0, 10), events=["a"], sends=[sent])
        await until(lambda: ("written", [(0, 10)]) in rig.log, "the write")
        await asyncio.sleep(0.05)
        assert rig.of("ack") == []  # the dead letters are not stored yet
        sent.set_result(None)
        await rig.cp.drain()

    assert run(test).of("ack") == [(["a"], 1)]


def test_a_failed_write_pauses_and_rewinds_its_partitions_and_the_next_batchs() -> None:
    async def test(rig: Rig) -> None:
        await rig.submit((0, 10), (1, 20), events=["a"])  # written
        await rig.cp.drain()
        rig.sink.fail_write = 1
        rig.sink.hold.clear()
        await rig.submit((0, 12), events=["b"])  # fails
        await until(lambda: ("write started", [(0, 12)]) in rig.log, "the failing write started")
        third = asyncio.ensure_future(rig.submit((0, 15), (2, 30), events=["c"]))  # prepared on the failed state
        await until(lambda: ("prepare", [(0, 15), (2, 30)]) in rig.log, "the next batch prepared")
        rig.sink.hold.set()
        await third
        await rig.cp.drain()
        assert rig.cp.failing == {0, 2}
        assert paused_gauge() == 2  # counted until a batch of theirs is written

    rig = run(test)
    assert rig.of("ack") == [(["a"], 1)]  # nothing of the failed batch or the next one
    assert rig.of("pause") == [[0], [0, 2]]
    assert rig.of("drop") == [[0], [0, 2]]  # what was prepared of them is dropped, to be rebuilt
    assert rig.of("discard") == [["b"], ["c"]]
    # back to the first position not written: 11 after the written batch; 30 for a partition never written
    assert rig.of("rewind") == [(0, 11), (0, 11), (2, 30)]
    assert rig.of("written") == [[(0, 10), (1, 20)]]
    assert rig.cp.written == {0: 11, 1: 21, 2: 30}


def test_rewound_partitions_resume_after_the_back_off_and_a_written_batch_clears_them() -> None:
    async def test(rig: Rig) -> None:
        rig.sink.fail_write = 2
        await rig.submit((3, 5), events=["a"])
        await rig.cp.drain()
        await until(lambda: rig.of("resume") == [[3]], "the resume after the first failure")
        await rig.submit((3, 5), events=["a"])  # read again from the rewind position: fails again
        await rig.cp.drain()
        await until(lambda: rig.of("resume") == [[3], [3]], "the resume after the second failure")
        assert rig.cp.failing == {3} and rig.cp.paused == set()
        await rig.submit((3, 5), events=["a"])  # written at last
        await rig.cp.drain()
        assert rig.cp.failing == set()
        assert paused_gauge() == 0
        rig.sink.fail_write = 1
        await rig.submit((3, 6), events=["b"])
        await rig.cp.drain()

    rig = run(test)
    assert rig.asked == [
        1,
        2,
        1,
    ]  # core/retry.py's back-off: longer each failure in a row, from the start after a write
    assert rig.of("ack") == [(["a"], 1)]
    assert rig.of("rewind") == [(3, 5), (3, 5), (3, 6)]


def test_a_batch_whose_state_cannot_be_loaded_is_rewound() -> None:
    async def test(rig: Rig) -> None:
        rig.sink.fail_prepare = 1
        await rig.submit((4, 7), events=["a"])
        await rig.cp.drain()

    rig = run(test)
    assert rig.of("write started") == [] and rig.of("ack") == []
    assert rig.of("pause") == [[4]] and rig.of("rewind") == [(4, 7)] and rig.of("drop") == [[4]]


def test_partitions_taken_on_are_loaded_once_the_sink_is_set_up(caplog: pytest.LogCaptureFixture) -> None:
    async def test(rig: Rig) -> None:
        await rig.cp.taken_on([2, 1, 2])
        await rig.submit((1, 0), events=["a"])  # waits for the load
        await rig.cp.drain()
        rig.sink.fail_load = True
        await rig.cp.taken_on([5])
        await rig.cp.drain()  # a load that failed is logged: the first batch loads it

    with caplog.at_level(logging.WARNING, logger="sinks.checkpoint"):
        rig = run(test)
    assert rig.of("setup") == [None]  # once
    assert rig.of("load") == [[1, 2], [5]]
    assert rig.index("load", [1, 2]) < rig.index("prepare", [(1, 0)])
    assert "were not loaded on assignment" not in caplog.text
    assert "the state of partitions [5] was not loaded on assignment" in caplog.text


def test_a_write_that_outlasts_the_deadline_is_not_acknowledged() -> None:
    async def test(rig: Rig) -> None:
        rig.sink.hold.clear()
        await rig.submit((0, 1), events=["a"])
        await rig.cp.drain()  # gives up after deadline_s
        assert rig.of("ack") == []
        rig.sink.hold.set()  # the thread's write ends; nothing waits for it
        await asyncio.sleep(0)

    run(test, deadline_s=0.05)


def test_a_revoked_partition_is_forgotten() -> None:
    async def test(rig: Rig) -> None:
        await rig.submit((0, 3), (1, 4), events=["a"])
        await rig.cp.drain()
        rig.cp.revoked({1})
        assert rig.cp.written == {0: 4}
        rig.sink.fail_write = 1
        await rig.submit((0, 5), events=["b"])
        await rig.cp.drain()
        rig.cp.revoked({0})
        assert rig.cp.paused == set() and rig.cp.failing == set() and rig.cp.written == {}

    rig = run(test)
    assert rig.of("drop") == [[1], [0], [0]]
