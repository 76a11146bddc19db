"""Per-(day, UID) deduplication state, in memory, partition-local.

An exact re-send of the body a UID last sent that day is dropped (and counted). Anything else
passes on: the sink keeps the latest received snapshot per (day, UID) (ReplacingMergeTree), so
this state is an optimisation and a counter, not the source of truth. Lost on restart -> at most
some re-sends are written again, which collapse in ClickHouse. State is only committed once the
batch that produced it is flushed, so a failed flush never hides a message.

Memory: one dict entry per (day, UID) of two machine ints (~100-150 bytes), days beyond
`keep_days` behind the newest day seen are evicted.
"""

from __future__ import annotations

from datetime import date


class Deduplicator:
    def __init__(self, keep_days: int = 3) -> None:
        self.keep_days = keep_days
        self._days: dict[int, dict[int, int]] = {}  # day ordinal -> {hash(uid): hash(body)}
        self._pending: dict[tuple[int, int], int] = {}
        self.hits = 0

    def is_duplicate(self, day: date, uid: str, body: bytes) -> bool:
        """True if `body` equals what `uid` last sent on `day`; else remembers it as pending."""
        d, u, b = day.toordinal(), hash(uid), hash(body)
        last = self._pending.get((d, u))
        if last is None:
            last = self._days.get(d, {}).get(u)
        if last == b:
            self.hits += 1
            return True
        self._pending[(d, u)] = b
        return False

    def commit(self) -> None:
        """The pending batch reached the sink: make it part of the state; evict old days."""
        for (d, u), b in self._pending.items():
            self._days.setdefault(d, {})[u] = b
        self._pending.clear()
        if self._days:
            newest = max(self._days)
            for d in [d for d in self._days if d <= newest - self.keep_days]:
                del self._days[d]

    def rollback(self) -> None:
        self._pending.clear()

    def __len__(self) -> int:
        return sum(len(m) for m in self._days.values())
