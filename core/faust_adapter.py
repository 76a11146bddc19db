"""The few faust internals the streaming code relies on, in one place (tests/unit/test_faust_adapter.py fails if
an upgrade of faust-streaming changes them).

- a take's buffering processor is attached to a stream, and the stream drained passively, as faust's own
  `Stream.noack_take` does (`Stream._enable_passive`, `Stream._processors`);
- an event that will be read again after a rewind is settled without being acknowledged: `Message.acked` set, faust
  counts it done (its stop waits for every fetched message) but never marks its offset committable.
"""

from __future__ import annotations

from typing import Any

from mode.utils.aiter import aiter


def attach_passive(stream: Any, processor: Any) -> None:
    """Run `processor` on every value of `stream`, which is drained in the background (faust's `noack_take`)."""
    stream.add_processor(processor)
    stream._enable_passive(aiter(stream.channel))


def detach(stream: Any, processor: Any) -> None:
    """Stop running `processor` (attached by `attach_passive`) on the values of `stream`."""
    stream._processors.remove(processor)


def settle(event: Any) -> None:
    """Count `event` done for faust without acknowledging it: its offset is never committed by this read."""
    event.message.acked = True
