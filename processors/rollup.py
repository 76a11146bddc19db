"""The roll-up: per source partition and UTC day, the sums over the latest message of each UID, kept incrementally.

Exact under at-least-once delivery because nothing is ever just added: each UID has one counted contribution per
day, its latest message (greatest receive time, then position, as the `snapshots` table's version orders them).
A newer message replaces it (subtract the old contribution, add the new), an older one or an exact re-send changes
nothing. So processing a record twice, or processing the same records again from a state rebuilt from ClickHouse,
gives the same sums. Every figure the views show is kept: the fleet counts and sums, and per-key maps (gateways per
plan; deployments and CLI installs per version, OS, architecture, Go version; rejections per reason).

State per UID and day (about 230 bytes, bench/bench_state_memory.py): a 128-bit key of the UID -> one packed bytes
entry (receive time, position, body hash, and the contribution: flags, four interned strings, the summed counts,
the plan map). Days older than `state_days` behind the newest day seen are dropped; a record for such a day is *late*: its
snapshot is written and the sink recomputes that (day, partition) from ClickHouse (`ClickHouseStore.recompute`).

A partition's state is rebuilt from ClickHouse (the snapshots are the truth) when the partition is taken on:
`Rollups.load` reads the latest snapshot of every UID the partition owns (`kafkaMurmurHash(uid) % partitions`) for
the window's days (the window ends at the newest day of the partition's own aggregate rows), and the rejections. Each load takes a new *generation* above every one written so far, and
every row this state emits carries `generation << 64 | sequence`: a later row of one owner replaces an earlier
one, and rows of the current owner replace rows of any earlier one, whatever the Kafka positions (a replay from
offset 0, a broker that lost its topics, a stale owner still writing after a rebalance).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from functools import lru_cache
from operator import attrgetter
from typing import Protocol

from core.partitioning import partition_of
from core.rows import (
    COUNT_COLUMNS,
    MAP_COLUMNS,
    Batch,
    PartitionBatch,
    RejectionRow,
    RollupRow,
    SnapshotRow,
    datetime_to_ms,
    position,
)
from core.schema import SUMMED_COUNTS
from processors.erased import ErasureRegister, drop_erased

# The message's summed counts (core/schema.py); the rest of COUNT_COLUMNS are counts of deployments/installs.
SUMMED = tuple(SUMMED_COUNTS)
_summed = attrgetter(*SUMMED)
_FIRST_SUMMED = COUNT_COLUMNS.index(SUMMED[0])  # where they start in DayRollup.counts
_HEAD = struct.Struct("<QQQBIIII")  # received ms, position, body hash, flags, 4 string ids
_NARROW = struct.Struct(f"<{len(SUMMED)}I")
_WIDE = struct.Struct(f"<{len(SUMMED)}Q")
_IS, _DEFAULT, _INCONSISTENT, _WIDE_FLAG = 1, 2, 4, 8
_NO_PLANS = struct.pack("<I", 0)


@lru_cache(maxsize=256)
def _plans_struct(n: int, wide: bool) -> struct.Struct:
    """The plan map's packing: its length, then (plan id, count) pairs."""
    return struct.Struct(f"<I{2 * n}{'Q' if wide else 'I'}")


_U32 = 0xFFFFFFFF

# Indexes into DayRollup.counts (COUNT_COLUMNS order) and DayRollup.maps (MAP_COLUMNS order, without rejections).
_DEPLOYMENTS, _DEFAULT_UID, _INCONSISTENT_N, _CLI = 0, 1, 2, 3
_PLANS, _IS_VERSION, _IS_OS, _IS_ARCH, _IS_GO, _CLI_VERSION, _CLI_OS, _CLI_ARCH = range(8)


def uid_key(uid: str) -> int:
    """A 128-bit key for a UID (the state holds keys, not the 36-88 character UIDs)."""
    return int.from_bytes(hashlib.blake2b(uid.encode("utf-8", "surrogatepass"), digest_size=16).digest(), "little")


def body_hash(body: bytes) -> int:
    """The first 8 bytes of MD5, little-endian: what ClickHouse's `reinterpretAsUInt64(MD5(body))` gives."""
    return int.from_bytes(hashlib.md5(body).digest()[:8], "little")


class Interner:
    """Strings (versions, OS, architectures, Go versions, plan IDs) as small ids, shared by every partition."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.strings: list[str] = []
        self._tuples: dict[tuple[str, ...], tuple[int, ...]] = {}  # a row's four strings -> their ids, at once

    def id(self, s: str) -> int:
        i = self.ids.get(s)
        if i is None:
            i = self.ids[s] = len(self.strings)
            self.strings.append(s)
        return i

    def ids_of(self, strings: tuple[str, ...]) -> tuple[int, ...]:
        """The ids of `strings` (a row's version, OS, architecture, Go version): one lookup for the usual ones."""
        found = self._tuples.get(strings)
        if found is None:
            found = self._tuples[strings] = tuple(self.id(s) for s in strings)
        return found


class Applied(Enum):
    ADDED = "added"  # the first message of this UID on this day
    REPLACED = "replaced"  # newer than the counted one: replaces it
    DUPLICATE = "duplicate"  # the same body as the counted one: nothing changes, nothing to write
    OLDER = (
        "older"  # older than the counted one: nothing changes (ClickHouse keeps the newer too; a CLI one is written)
    )
    LATE = "late"  # a day before the state window: written, and the day recomputed from ClickHouse


@dataclass(slots=True)
class DayRollup:
    """One partition's state for one day."""

    uids: dict[int, bytes] = field(default_factory=dict)
    counts: list[int] = field(default_factory=lambda: [0] * len(COUNT_COLUMNS))
    maps: list[dict[str, list[int]]] = field(default_factory=lambda: [{} for _ in range(8)])  # key -> [sum, refs]
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_keys: set[tuple[int, int]] = field(default_factory=set)  # (position, received ms)


def _bump(m: dict[str, list[int]], key: str, value: int, sign: int) -> None:
    slot = m.get(key)
    if slot is None:
        m[key] = [value, 1]  # only ever reached with sign = +1
        return
    slot[0] += sign * value
    slot[1] += sign
    if slot[1] == 0:
        del m[key]


class PartitionRollup:
    """The roll-up state of one source partition."""

    def __init__(self, partition: int, generation: int, state_days: int, interner: Interner) -> None:
        self.partition, self.generation, self.state_days, self.strings = partition, generation, state_days, interner
        self.days: dict[int, DayRollup] = {}
        self.newest: int | None = None  # ordinal of the newest day seen
        self.seq = 0  # rows emitted under this generation: a later row always reflects more records

    def next_version(self) -> int:
        """generation << 64 | a sequence: a row emitted later replaces one emitted earlier, and a newer owner's rows
        (a higher generation) replace every row of an earlier one, whatever the Kafka positions."""
        self.seq += 1
        return (self.generation << 64) | self.seq

    # -- the window ---------------------------------------------------------------------------------------------

    def _day(self, day: date) -> DayRollup | None:
        """The state of `day`: held, or new if the day is in the window (a newer day moves the window forward);
        None if it is before the window and not held. Days are dropped by `evict`, after a batch's rows are out."""
        d = day.toordinal()
        state = self.days.get(d)
        if state is not None:
            if d > (self.newest or d - 1):
                self.newest = d
            return state
        if self.newest is None or d > self.newest:
            self.newest = d
        elif d <= self.newest - self.state_days:
            return None
        state = self.days[d] = DayRollup()
        return state

    def evict(self) -> None:
        """Drop the days before the window (after the batch that moved it has emitted its rows)."""
        if self.newest is not None:
            for old in [x for x in self.days if x <= self.newest - self.state_days]:
                del self.days[old]

    # -- contributions ------------------------------------------------------------------------------------------

    def _encode(self, row: SnapshotRow, h: int, state: DayRollup | None = None) -> bytes:
        """The packed entry of `row`; with `state`, its contribution is added to it too (without decoding)."""
        is_ = row.kind == "is"
        flags = (_IS if is_ else 0) | (_DEFAULT if row.default_uid else 0) | (_INCONSISTENT if row.flags else 0)
        counts = _summed(row)
        plans = row.gateways_by_frequency_plan
        names = (row.version_major_minor, row.operating_system, row.arch, row.golang_version)
        ids = self.strings.ids_of(names)
        if plans:
            sid = self.strings.id
            flat = [x for k, v in plans.items() for x in (sid(k), v)]
        else:
            flat = []
        n = len(plans)
        try:  # the usual case: every count fits 32 bits (struct refuses a larger one)
            tail = _NARROW.pack(*counts) + (_plans_struct(n, False).pack(n, *flat) if n else _NO_PLANS)
        except struct.error:
            flags |= _WIDE_FLAG
            tail = _WIDE.pack(*counts) + (_plans_struct(n, True).pack(n, *flat) if n else _NO_PLANS)
        if state is not None:
            self._add(state, flags, names if is_ else names[:3], counts, plans)
        return _HEAD.pack(row.received_at_ms, row.position, h, flags, *ids) + tail

    def _add(
        self, state: DayRollup, flags: int, names: Sequence[str], counts: Sequence[int], plans: dict[str, int]
    ) -> None:
        """`_contribute(..., +1)` of a row not packed yet, from its strings (the usual case: a new UID of the day)."""
        c, m = state.counts, state.maps
        if flags & _IS:
            c[_DEPLOYMENTS] += 1
            if flags & _DEFAULT:
                c[_DEFAULT_UID] += 1
            if flags & _INCONSISTENT:
                c[_INCONSISTENT_N] += 1
            first = _IS_VERSION
        else:
            c[_CLI] += 1
            first = _CLI_VERSION
        for i, name in enumerate(names, start=first):  # _bump(m[i], name, 1, +1), inlined
            slot = m[i].get(name)
            if slot is None:
                m[i][name] = [1, 1]
            else:
                slot[0] += 1
                slot[1] += 1
        for i, v in enumerate(counts, start=_FIRST_SUMMED):
            if v:
                c[i] += v
        if plans:
            plan_map = m[_PLANS]
            for plan, v in plans.items():
                slot = plan_map.get(plan)
                if slot is None:
                    plan_map[plan] = [v, 1]
                else:
                    slot[0] += v
                    slot[1] += 1

    def _apply(self, state: DayRollup, entry: bytes, sign: int) -> None:
        """Add (sign +1) or take away (-1) the contribution a packed entry holds."""
        _ms, _pos, _h, flags, *ids = _HEAD.unpack_from(entry)
        wide = flags & _WIDE_FLAG
        counts_struct = _WIDE if wide else _NARROW
        counts = counts_struct.unpack_from(entry, _HEAD.size)
        offset = _HEAD.size + counts_struct.size
        (n_plans,) = struct.unpack_from("<I", entry, offset)
        flat = _plans_struct(n_plans, bool(wide)).unpack_from(entry, offset)[1:]
        self._contribute(state, flags, ids, counts, list(zip(flat[::2], flat[1::2])), sign)

    def _contribute(
        self,
        state: DayRollup,
        flags: int,
        ids: Sequence[int],
        counts: Sequence[int],
        plans: list[tuple[int, int]],
        sign: int,
    ) -> None:
        c, m, strings = state.counts, state.maps, self.strings.strings
        if flags & _IS:
            c[_DEPLOYMENTS] += sign
            if flags & _DEFAULT:
                c[_DEFAULT_UID] += sign
            if flags & _INCONSISTENT:
                c[_INCONSISTENT_N] += sign
            first = _IS_VERSION
        else:
            c[_CLI] += sign
            first = _CLI_VERSION
        # version, OS, architecture (and the Go version of a deployment): one more or one fewer of each
        for i, string_id in enumerate(ids if flags & _IS else ids[:3], start=first):
            _bump(m[i], strings[string_id], 1, sign)
        for i, v in enumerate(counts, start=_FIRST_SUMMED):
            if v:
                c[i] += sign * v
        if plans:
            plan_map = m[_PLANS]
            for plan, v in plans:
                _bump(plan_map, strings[plan], v, sign)

    # -- applying records ---------------------------------------------------------------------------------------

    def apply_snapshot(self, row: SnapshotRow, body: bytes) -> Applied:
        state = self._day(row.day)
        if state is None:
            return Applied.LATE
        key = uid_key(row.uid)
        h = body_hash(body)
        current = state.uids.get(key)
        if current is not None:
            ms, pos, current_h = _HEAD.unpack_from(current)[:3]
            if h == current_h:  # an exact re-send (whenever it was received): nothing changes
                return Applied.DUPLICATE
            if (row.received_at_ms, row.position) <= (ms, pos):
                return Applied.OLDER
            self._apply(state, current, -1)
        state.uids[key] = self._encode(row, h, state)
        return Applied.ADDED if current is None else Applied.REPLACED

    def apply_rejection(self, row: RejectionRow) -> Applied:
        state = self._day(row.day)
        if state is None:
            return Applied.LATE
        key = (position(row.source_offset, row.source_index), datetime_to_ms(row.received_at))
        if key in state.rejected_keys:
            return Applied.DUPLICATE
        state.rejected_keys.add(key)
        state.rejected[row.reason] = state.rejected.get(row.reason, 0) + 1
        return Applied.ADDED

    # -- rows ---------------------------------------------------------------------------------------------------

    def row(self, day: date, computed_at: datetime | None = None) -> RollupRow:
        """The aggregate row of `day` (held in the window) as the state stands, for the sink to write."""
        state = self.days[day.toordinal()]
        maps = {name: {k: v[0] for k, v in m.items()} for name, m in zip(MAP_COLUMNS, state.maps)}
        return RollupRow(
            day,
            self.partition,
            self.next_version(),
            computed_at or datetime.now(UTC),
            *state.counts,  # type: ignore[arg-type]  # mypy cannot count a starred list against the fields
            **maps,  # type: ignore[arg-type]
            rejected_by_reason=dict(state.rejected),  # type: ignore[misc]
        )

    def uid_days(self) -> int:
        return sum(len(s.uids) for s in self.days.values())

    def take_out(self, uid: str, until_ms: int) -> list[date]:
        """Take an erased UID's messages received at or before `until_ms` out of the state (processors/erased.py);
        the days whose figures changed."""
        key, changed = uid_key(uid), []
        for d, state in self.days.items():
            entry = state.uids.get(key)
            if entry is not None and _HEAD.unpack_from(entry)[0] <= until_ms:
                self._apply(state, entry, -1)
                del state.uids[key]
                changed.append(date.fromordinal(d))
        return sorted(changed)


# -- rebuilding from the truth ------------------------------------------------------------------------------------


class StateSource(Protocol):
    """Where a partition's state comes from when it is taken on: ClickHouse (sinks/clickhouse.py)."""

    def newest_days(self, partitions: list[int]) -> dict[int, date]:
        """The newest day each partition has written aggregate rows for (absent: none yet)."""
        ...

    def allocate_generation(self) -> int: ...

    def latest_snapshots(
        self, partitions: list[int], partitions_total: int, since: date
    ) -> Iterator[tuple[SnapshotRow, int]]:
        """(row, body hash) of the latest snapshot of every UID-day from `since` whose UID the partitions own, with
        `source_partition` set to the owning partition (`kafkaMurmurHash(uid) % partitions_total`)."""
        ...

    def rejections_since(self, partitions: list[int], since: date) -> Iterator[RejectionRow]: ...


class Rollups:
    """The roll-up state of every partition this process owns."""

    def __init__(self, state_days: int, partitions_total: int) -> None:
        self.state_days, self.partitions_total = state_days, partitions_total
        self.strings = Interner()
        self.parts: dict[int, PartitionRollup] = {}

    def missing(self, partitions: Iterable[int]) -> list[int]:
        return sorted({p for p in partitions if p not in self.parts})

    def load(self, source: StateSource, partitions: list[int]) -> None:
        """Rebuild the state of `partitions` from `source`, under a new generation."""
        if not partitions:
            return
        generation = source.allocate_generation()
        parts = {p: PartitionRollup(p, generation, self.state_days, self.strings) for p in partitions}
        # Each partition's window ends where its own rows ended: partitions are read at their own pace (a worker
        # may have read one to the end of the month before it takes the next one on), and a window set by
        # another partition's newest day would make this one's every record late (each a recompute).
        newest = source.newest_days(partitions)
        if newest:
            for p, day in newest.items():
                parts[p]._day(day)
            loaded = sorted(newest)
            since = date.fromordinal(min(newest.values()).toordinal() - self.state_days + 1)
            for row, h in source.latest_snapshots(loaded, self.partitions_total, since):
                part = parts[row.source_partition]
                state = part._day(row.day)
                if state is not None:
                    state.uids[uid_key(row.uid)] = part._encode(row, h, state)
            for rejection in source.rejections_since(loaded, since):
                parts[rejection.source_partition].apply_rejection(rejection)
            for part in parts.values():
                part.evict()
        for p, part in parts.items():  # a state taken on meanwhile (a batch's load) may have applied rows since: kept
            self.parts.setdefault(p, part)

    def drop(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.parts.pop(p, None)

    def uid_days(self) -> int:
        return sum(p.uid_days() for p in self.parts.values())


def erased_in_state(rollups: Rollups, register: dict[str, int]) -> list[tuple[str, int]]:
    """(uid, erased at) of the erased UIDs whose messages received up to their erasure are still in the state held:
    counted before the register said so (a batch prepared before the erasure), or loaded from ClickHouse before the
    erasure was complete."""
    out = []
    for uid, until in register.items():
        roll = rollups.parts.get(partition_of(uid.encode(), rollups.partitions_total))
        if roll is None:
            continue
        key = uid_key(uid)
        if any(key in s.uids and _HEAD.unpack_from(s.uids[key])[0] <= until for s in roll.days.values()):
            out.append((uid, until))
    return out


def roll_up(rollups: Rollups, source: StateSource, parts: Iterable[PartitionBatch]) -> Batch:
    """Apply `parts` to the roll-up (loading the state of partitions not held yet) and return what to write: the
    new and late snapshots, the new rejections, the aggregate rows of the days touched, the late days to
    recompute. Exact re-sends and older messages change nothing and are not written, except an older CLI message:
    each CLI report counts in command usage (it resets its counts after each), so it is written too, and loses to
    the newer one under FINAL (sinks/migrations/0006_cli_reports.sql)."""
    parts = list(parts)
    register = source.erased() if isinstance(source, ErasureRegister) else {}
    parts, _ = drop_erased(parts, register)  # erased UIDs never come back (processors/erased.py)
    rollups.load(source, rollups.missing(p.partition for p in parts))
    b = Batch(partitions_total=rollups.partitions_total)
    for uid, until in erased_in_state(rollups, register):
        roll = rollups.parts[partition_of(uid.encode(), rollups.partitions_total)]
        b.rollups.extend(roll.row(day) for day in roll.take_out(uid, until))
        assert isinstance(source, ErasureRegister)
        source.erase_in_write(uid, until, rollups.partitions_total, roll.next_version())
    for part in parts:
        roll = rollups.parts[part.partition]
        touched: set[date] = set()
        late: set[date] = set()
        for row, body in zip(part.snapshots, part.bodies):
            applied = roll.apply_snapshot(row, body)
            if applied is Applied.ADDED or applied is Applied.REPLACED:
                b.snapshots.append(row)
                touched.add(row.day)
            elif applied is Applied.LATE:
                b.snapshots.append(row)
                late.add(row.day)
            elif applied is Applied.OLDER and row.kind == "cli":
                b.snapshots.append(row)  # a CLI report counts in command usage whatever its age (cli_reports)
            elif applied is Applied.DUPLICATE:
                b.duplicates += 1
        for rejection in part.rejections:
            applied = roll.apply_rejection(rejection)
            if applied is Applied.ADDED:
                b.rejections.append(rejection)
                touched.add(rejection.day)
            elif applied is Applied.LATE:
                b.rejections.append(rejection)
                late.add(rejection.day)
        b.rollups.extend(roll.row(day) for day in sorted(touched))
        b.recompute.extend((day, part.partition, roll.next_version()) for day in sorted(late - touched))
        roll.evict()
    return b


def preparer(rollups: Rollups, source: StateSource) -> Callable[[list[PartitionBatch]], Batch]:
    """The sink checkpoint's `prepare` (sinks/checkpoint.py): roll a batch up, counting exact re-sends."""
    from core import gctuning
    from processors import metrics

    def prepare(parts: list[PartitionBatch]) -> Batch:
        with gctuning.paused():
            batch = roll_up(rollups, source, parts)
        metrics.DUPLICATES.inc(batch.duplicates)
        metrics.STATE_UID_DAYS.set(rollups.uid_days())
        return batch

    return prepare
