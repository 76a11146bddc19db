"""The Sink interface, in the shape of quix-streams' `sinks/base` (`BatchingSink.write(batch)`,
`SinkBackpressureError`): where the checkpoint (sinks/checkpoint.py) sends each batch, flushed before its offsets
are committed.

A take of the stream gives, per source partition, the rows it produced (`PartitionBatch`). The sink `prepare`s them
into what to write (the processors' roll-up, for the ClickHouse sink composed in is_telemetry/worker_app.py), then
`write`s that in one go; the next batch is prepared while the previous one is written. A sink that cannot take a
batch now raises `SinkBackpressureError`: the checkpoint then pauses the batch's partitions, rewinds them to the first
position not yet written, tells the sink to `drop` what it prepared of them, and resumes them after a back-off.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from core.errors import TelemetryError
from core.rows import PartitionBatch

Prepared = TypeVar("Prepared")


class SinkBackpressureError(TelemetryError):
    """The sink did not take a batch (its store is unavailable): its partitions are paused, rewound to the first
    position not yet written, and read again after a back-off. The message says why."""


class Sink(ABC, Generic[Prepared]):
    """A destination for the batches of a consumer loop (sinks/loop.py). `setup` and `load` block (the checkpoint
    runs them on a thread), `write` too; `prepare` runs on the event loop unless `prepare_blocks` says it does I/O."""

    def setup(self) -> None:
        """Block until the sink can be written (its store opened): run once, before the first batch."""

    def load(self, partitions: list[int]) -> None:
        """`partitions` were taken on: rebuild what `prepare` needs of them, before their first batch. Raise
        SinkBackpressureError if the store does not answer (their first batch then loads it)."""

    def prepare_blocks(self, parts: list[PartitionBatch]) -> bool:
        """True if preparing `parts` does I/O (state to load first): it then runs off the event loop."""
        return False

    @abstractmethod
    def prepare(self, parts: list[PartitionBatch]) -> Prepared:
        """What to write for one take (in order: each take is prepared on the state the previous ones left)."""

    @abstractmethod
    def write(self, batch: Prepared) -> None:
        """Store `batch` in one go, or raise SinkBackpressureError."""

    def drop(self, partitions: set[int]) -> None:
        """Forget what was prepared from `partitions` (quix-streams' `on_paused`): they were rewound (read again from
        the last written position) or revoked (another process owns them now)."""
