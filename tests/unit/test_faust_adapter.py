"""What core/faust_adapter.py and core/streaming.py rely on in faust-streaming: fails if an upgrade changes it.

Checked on the installed classes (names, and how they behave): the passive draining and the processors of a stream
(faust's private `_enable_passive` and `_processors`), the consumer controls of a rewind, and a settled message
that is never acknowledged. No broker: an agent's test context feeds the stream."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import faust
import pytest
from faust.streams import Stream
from faust.transport.consumer import Consumer
from faust.types import Message

from core import faust_adapter
from core.streaming import take_bodies

#: The stream's members take_bodies uses besides the adapter's (public in faust, but they are what it assumes).
STREAM_MEMBERS = ("add_processor", "current_event", "enable_acks", "wait", "wait_for_stopped", "crash", "should_stop")
#: The consumer's members FaustRewinder and the lag metric use.
CONSUMER_METHODS = ("pause_partitions", "resume_partitions", "seek", "assignment", "highwater")


def message(offset: int = 5) -> Message:
    return Message("topic", 0, offset, 0.0, 0, {}, b"key", b"value", None)


def test_the_members_the_adapter_uses_exist() -> None:
    assert callable(Stream._enable_passive)
    assert list(inspect.signature(Stream._enable_passive).parameters)[:2] == ["self", "channel"]
    for name in ("add_processor", "wait", "wait_for_stopped", "crash"):
        assert callable(getattr(Stream, name)), name
    for name in CONSUMER_METHODS:
        assert callable(getattr(Consumer, name, None)), f"faust's Consumer.{name} is gone"
    app = faust.App("adapter-members", store="memory://", web_enabled=False)
    stream = app.stream(app.channel())
    assert isinstance(stream._processors, list)  # detach removes from it
    for name in STREAM_MEMBERS:
        assert hasattr(stream, name), f"faust's Stream.{name} is gone"
    assert message().acked is False


def test_a_settled_message_is_never_acknowledged() -> None:
    m = message()

    class Event:
        message = m

    faust_adapter.settle(Event())
    assert m.acked is True
    # faust's final ack (which marks the offset committable in the consumer) no longer runs for it
    assert m.ack(consumer=None) is False  # type: ignore[arg-type]  # not reached: None would fail if it were


def test_take_bodies_buffers_through_the_adapter_and_detaches_its_processor() -> None:
    """The agent's stream is drained passively, batched by weight, acks kept off, and the processor detached."""
    batches: list[list[Any]] = []
    streams: list[Any] = []
    seen_processors: list[int] = []

    async def body(stream: Any) -> None:
        streams.append(stream)
        seen_processors.append(len(stream._processors))
        async for events in take_bodies(stream, 5, 10.0, 0.05, lambda event: event.value):
            batches.append([event.value for event in events])
            seen_processors.append(len(stream._processors))

    async def main() -> None:
        app = faust.App("adapter-take", store="memory://", web_enabled=False)
        agent = app.agent(name="take")(body)
        async with agent.test_context() as test_agent:
            for weight in (2, 3, 1, 1):  # 2 + 3 = 5 bodies: a full batch; then 1 + 1, ended by the quiet
                await test_agent.put(weight)
            deadline = time.monotonic() + 10
            while sum(map(len, batches)) < 4:
                assert time.monotonic() < deadline, f"batches so far: {batches}"
                await asyncio.sleep(0.01)
            stream = streams[0]
            assert stream._passive is True  # drained in the background, no one iterating it
            assert stream.enable_acks is False
        assert stream.enable_acks is False  # acks stay off once the take ends (core/streaming.py)

    asyncio.run(main())
    assert batches == [[2, 3], [1, 1]]
    assert seen_processors[1] == seen_processors[0] + 1  # the buffering processor attached while taking
    assert len(streams[0]._processors) == seen_processors[0]  # and detached when the take ended


def test_detach_of_a_processor_not_attached_raises() -> None:
    """detach relies on `_processors.remove`: removing twice must not pass silently."""
    app = faust.App("adapter-detach", store="memory://", web_enabled=False)
    stream = app.stream(app.channel())

    async def processor(value: Any) -> Any:
        return value

    stream.add_processor(processor)
    faust_adapter.detach(stream, processor)
    with pytest.raises(ValueError):
        faust_adapter.detach(stream, processor)
