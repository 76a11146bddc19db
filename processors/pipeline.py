"""One batch through the stages: validate -> dedup -> roll up. Pure logic; the faust agent drives it.

Input: raw records as they sit in the raw topic. Output: the rows the sink writes (snapshots and
rejections) and the dead-letter records to publish. The day of a record is the UTC day of the receive
time the collector stamped (header `received_at_ms`, else the record timestamp), never the
processing time, so a replay gives the same answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from is_telemetry.kafka import HEADER_RECEIVED_AT
from processors.dedup import Deduplicator
from processors.rollup import day_of, rejection_row, snapshot_row
from processors.validate import Rejection, inconsistencies, validate
from sinks.clickhouse import Batch


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    headers: dict[str, bytes]
    value: bytes

    @property
    def received_at_ms(self) -> int:
        raw = self.headers.get(HEADER_RECEIVED_AT)
        if raw:
            try:
                return int(raw)
            except ValueError:
                pass
        return self.timestamp_ms


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes  # the original bytes
    headers: list[tuple[str, bytes]]


@dataclass
class Outcome:
    batch: Batch = field(default_factory=Batch)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    valid: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def process(records: list[RawRecord], dedup: Deduplicator, plausibility_limit: int = 10**9) -> Outcome:
    out = Outcome()
    for r in records:
        received = r.received_at_ms
        result = validate(r.value, plausibility_limit)
        if isinstance(result, Rejection):
            out.rejected[result.reason] += 1
            out.batch.rejections.append(
                rejection_row(result.reason, result.message, r.value, received, r.topic, r.partition, r.offset)
            )
            out.dead_letters.append(
                DeadLetter(
                    key=None,
                    value=r.value,
                    headers=[
                        ("reason", result.reason.encode()),
                        ("message", result.message.encode("utf-8", "replace")),
                        ("source_topic", r.topic.encode()),
                        ("source_partition", str(r.partition).encode()),
                        ("source_offset", str(r.offset).encode()),
                        (HEADER_RECEIVED_AT, str(received).encode()),
                    ],
                )
            )
            continue
        out.valid += 1
        if dedup.is_duplicate(day_of(received), result.uid, r.value):
            out.duplicates += 1
            continue
        out.batch.snapshots.append(snapshot_row(result, r.value, received, r.partition, r.offset, inconsistencies(result)))
    return out
