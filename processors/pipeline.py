"""One batch of raw records through the first stages: validate -> (re-key) -> dedup. Pure logic; the faust agent
drives it (processors/worker.py), the roll-up follows (processors/rollup.py, applied where the rows are written).

Input: raw records as they sit in the raw topic. Output: the snapshot and rejection rows, the dead-letter records,
and the records to re-key. The day of a record is the UTC day of the receive time the collector stamped (header
`received_at_ms`, else the record timestamp), never the processing time, so a replay gives the same answer.
A body the collector marked `rate_limited` (its client was over its new-UID budget, core/envelope.py) is
rejected with that reason before it is read.

One UID, one partition: a valid record whose key is not its UID, or that is not in the partition Kafka's default
partitioner gives its UID (a third-party producer, a null key, another partitioner), is not rolled up where it is:
it is listed in `rekey`, and the worker publishes it again keyed by its UID, so all of a UID's messages meet in one
partition, in order. A body of a many-bodies record (core/envelope.py) has no key of its own: only its
partition is checked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from core.envelope import HEADER_FORMAT, is_rate_limited
from core.kafka import HEADER_RECEIVED_AT
from core.partitioning import partitions_of
from core.rows import RejectionRow, SnapshotRow
from core.schema import PLAUSIBILITY_LIMIT
from processors.fastpath import row as fast_row
from processors.snapshot import rejection_row, snapshot_row
from processors.validate import Reason, Rejection, inconsistencies, validate


@dataclass(slots=True)
class RawRecord:
    """One body as the raw topic holds it: a single-body record, or one frame of a many-bodies record (`batched`,
    `index` its place in the record). Not frozen: one is made per body, and a frozen dataclass's constructor costs
    four times as much (each field set through object.__setattr__)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    headers: dict[str, bytes]
    value: bytes
    key: bytes | None = None
    index: int = 0
    batched: bool = False
    error: str | None = None  # a many-bodies record that could not be read: rejected whole as `bad_batch`
    # headers: a record's own; a body of a many-bodies record gets its user_agent and the record's rate_limited mark

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


@dataclass(frozen=True, slots=True)
class Rekey:
    """A valid record to publish again, keyed by its UID (headers kept: the receive time stays the collector's)."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


RATE_LIMITED_MESSAGE = (
    "its client had sent collector.max_new_uids_per_client_per_day new UIDs today (docs/collector.md)"
)


class Dedup(Protocol):
    def is_duplicate(self, day: date, uid: str, body: bytes) -> bool: ...


@dataclass
class Outcome:
    snapshots: list[SnapshotRow] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # the raw body of each snapshot, for the roll-up's body hash
    rejections: list[RejectionRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    rekey: list[Rekey] = field(default_factory=list)
    valid: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def _reject(out: Outcome, r: RawRecord, reason: str, message: str) -> None:
    received = r.received_at_ms
    out.rejected[reason] += 1
    out.rejections.append(rejection_row(reason, message, r.value, received, r.topic, r.partition, r.offset, r.index))
    out.dead_letters.append(
        DeadLetter(
            key=None,
            value=r.value,
            headers=[
                ("reason", reason.encode()),
                ("message", message.encode("utf-8", "replace")),
                ("source_topic", r.topic.encode()),
                ("source_partition", str(r.partition).encode()),
                ("source_offset", str(r.offset).encode()),
                ("source_index", str(r.index).encode()),
                (HEADER_RECEIVED_AT, str(received).encode()),
            ],
        )
    )


def process(
    records: list[RawRecord], partitions: int, dedup: Dedup | None = None, plausibility_limit: int = PLAUSIBILITY_LIMIT
) -> Outcome:
    """Validate `records`; `partitions` is the raw topic's partition count (for the one-UID-one-partition check);
    `dedup` drops exact re-sends early (workers that publish rows for a separate sink)."""
    out = Outcome()
    # Each message becomes its row at once, while it is fresh in the CPU's caches (holding a batch of parsed
    # messages until a second pass cost a third more); the partition check follows for the whole batch. The usual
    # body (an Identity Server's, nothing odd in it) takes the fast path (processors/fastpath.py), every other the
    # usual one, which names a rejection's reason.
    valid: list[tuple[RawRecord, SnapshotRow, bytes]] = []
    for r in records:
        if r.error is not None:
            _reject(out, r, Reason.BAD_BATCH, r.error)
            continue
        if is_rate_limited(r.headers):  # decided before the body is read: none of it counts
            _reject(out, r, Reason.RATE_LIMITED, RATE_LIMITED_MESSAGE)
            continue
        received_at_ms = r.received_at_ms
        row = fast_row(r.value, received_at_ms, r.partition, r.offset, r.index, plausibility_limit)
        if row is None:  # not the usual body: the usual path accepts it or names its reason
            result = validate(r.value, plausibility_limit)
            if isinstance(result, Rejection):
                _reject(out, r, result.reason, result.message)
                continue
            row = snapshot_row(result, r.value, received_at_ms, r.partition, r.offset, inconsistencies(result), r.index)
        valid.append((r, row, row.uid.encode("utf-8", "surrogatepass")))
    homes = partitions_of([uid for _r, _row, uid in valid], partitions)  # one numpy pass for the batch
    for (r, row, uid), home in zip(valid, homes):
        if r.partition != home or (not r.batched and r.key != uid):
            headers = [(k, v) for k, v in r.headers.items() if k not in (HEADER_RECEIVED_AT, HEADER_FORMAT)]
            out.rekey.append(Rekey(uid, r.value, [(HEADER_RECEIVED_AT, str(r.received_at_ms).encode()), *headers]))
            continue
        out.valid += 1
        if dedup is not None and dedup.is_duplicate(row.day, row.uid, r.value):
            out.duplicates += 1
            continue
        out.snapshots.append(row)
        out.bodies.append(r.value)
    return out
