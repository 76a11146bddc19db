"""The sink process's handler (sinks/consumer.py `SnapshotsReader`): a snapshots-topic record weighs the rows it
holds (its batch ends at `sink.batch_size` rows, not records), is decoded once, and a record it cannot read is
skipped."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime

from core.rows import SnapshotRow, encode_payloads
from sinks.consumer import SnapshotsReader


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass
class Event:
    message: Msg


def row(partition: int, offset: int, uid: str) -> SnapshotRow:
    return SnapshotRow(
        date(2026, 12, 1), uid, "is", datetime(2026, 12, 1, tzinfo=UTC), offset, partition, offset, 0, False, [],
        "linux", "amd64", "3.30.0", "3.30", "go1.23",
    )  # fmt: skip


def record(partition: int, offset: int, rows: int) -> Event:
    (payload,) = encode_payloads([row(partition, offset, f"uid-{i}") for i in range(rows)], [], 10_000_000)
    return Event(Msg("snapshots", partition, offset, payload))


def test_a_record_weighs_its_rows_and_is_read_back() -> None:
    reader = SnapshotsReader()
    events = [record(0, 7, 40), record(0, 8, 2), record(1, 3, 0), Event(Msg("snapshots", 1, 4, b"not json"))]
    assert [reader.weight(e) for e in events] == [40, 2, 1, 1]  # an empty or unreadable record counts as one
    take = asyncio.run(reader.handle(events))
    assert take.bodies == 4
    assert [(p.partition, p.position, len(p.snapshots), len(p.bodies)) for p in take.parts] == [
        (0, 8, 42, 42),
        (1, 4, 0, 0),  # the unreadable record is skipped, its position consumed
    ]
    assert reader._decoded == {}  # nothing kept past its take


def test_a_record_not_weighed_is_decoded_when_handled() -> None:
    take = asyncio.run(SnapshotsReader().handle([record(2, 1, 3)]))
    assert [(p.partition, len(p.snapshots)) for p in take.parts] == [(2, 3)]
