"""The analysts' figures kept in step with the snapshots, at a cost in proportion to what changed
(sinks/migrations/0009_incremental_analysts.sql, docs/analysts.md "How the figures are kept").

Each UID's share of every figure is stored as events (`analyst_events`: where a contribution starts, +value, and
ends, -value); a day's figure is the sum of the events up to it. Every snapshot written queues its UID
(`analyst_dirty`, fed by ClickHouse from the insert); the applier (`Applier`, a thread of the process that writes)
takes up to CHUNK queued UIDs at a time, computes their events from their history alone (`analyst_uid_events`) and
inserts the difference with the events already stored for them, in one INSERT ... SELECT; the same for their
day-over-day jumps. Then it deletes exactly the queue rows it took: a UID written again meanwhile stays queued.

Exact under at-least-once delivery and crashes: the difference is taken against what is stored, so applying a UID
again inserts nothing, and a UID whose apply did not finish is still queued. One applier runs at a time per process
(`LOCK`, which erasures take too). A UID with no history left (forgotten, or beyond the snapshots' TTL) keeps only
the events of days that are no longer recomputed: they move to an anonymous key, in the same INSERT that takes them
from the UID. Days whose look-back reaches past the snapshots' TTL keep their events (`analyst_daily_state`).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from clickhouse_connect.driver.client import Client

from core.retry import first_line

log = logging.getLogger(__name__)

_SYNC = {"mutations_sync": 2}

#: UIDs per INSERT ... SELECT: bounds the memory of one apply (a write's batch is at most `sink.batch_size` bodies)
CHUNK = 5_000

# The first event day that may change: every day when the snapshots are kept for ever, else the days whose figures can
# be recomputed (their look-back, and within the snapshots' TTL, as analyst_daily_state.recomputable).
_SINCE = (
    "(SELECT if(ttl = 0, toDate(0), today() - ttl + 29) FROM "
    "(SELECT toUInt32OrZero(extract(engine_full, 'toIntervalDay\\\\((\\\\d+)\\\\)')) AS ttl FROM system.tables "
    "WHERE database = currentDatabase() AND name = 'snapshots'))"
)

_KEYS = "(SELECT key FROM analyst_apply_keys WHERE token = {token:UInt64})"

APPLY_JUMPS = f"""
INSERT INTO analyst_jumps (day, key, written_at, jumps)
SELECT day, key, now64(6, 'UTC'), n.jumps
FROM (SELECT day, key, jumps FROM analyst_uid_jumps(token = {{token:UInt64}}) WHERE notEmpty(jumps)) AS n
FULL OUTER JOIN
(
    SELECT day, key, jumps FROM analyst_jumps FINAL WHERE key IN {_KEYS} AND notEmpty(jumps)
) AS o USING (day, key)
WHERE n.jumps != o.jumps AND day > {_SINCE}
"""

APPLY_EVENTS = f"""
INSERT INTO analyst_events (kind, key, metric, label, label2, bucket, day, value)
SELECT kind, key, metric, label, label2, bucket, day, n.value - o.value AS delta
FROM (SELECT * FROM analyst_uid_events(token = {{token:UInt64}})) AS n
FULL OUTER JOIN
(
    SELECT kind, key, metric, label, label2, bucket, day, sum(value) AS value
    FROM analyst_events
    WHERE key IN {_KEYS}
    GROUP BY kind, key, metric, label, label2, bucket, day
) AS o USING (kind, key, metric, label, label2, bucket, day)
WHERE delta != 0 AND day > {_SINCE}
"""


def _apply(client: Client, uids: Iterable[str]) -> None:
    """Bring the figures' events (and jumps) of these UIDs in step with their stored history; a UID with no history
    left gives its remaining (frozen) events to the anonymous key. Idempotent. The events go last: their insert counts
    as the change that makes the days due (analyst_daily_pending). Callers hold LOCK."""
    for chunk in _chunks(sorted(set(uids)), CHUNK):
        with _keys(client, chunk) as params:
            client.command(APPLY_JUMPS, parameters=params)
            client.command(APPLY_EVENTS, parameters=params)
            client.command(MOVE_FROZEN, parameters=params)


@contextmanager
def _keys(client: Client, uids: list[str]) -> Iterator[dict[str, Any]]:
    """The UIDs' keys, and their history read once (the views read it several times), under a token of their own
    (the UIDs are sent once); removed after."""
    params: dict[str, Any] = {"token": secrets.randbits(64)}
    client.command(
        "INSERT INTO analyst_apply_keys SELECT {token:UInt64}, sipHash128(arrayJoin({uids:Array(String)}))",
        parameters={**params, "uids": uids},
    )
    try:
        client.command(
            f"INSERT INTO analyst_apply_history SELECT {{token:UInt64}}, * FROM analyst_history FINAL WHERE key IN {_KEYS}",
            parameters=params,
        )
        yield params
    finally:
        for table in ("analyst_apply_keys", "analyst_apply_history"):
            client.command(
                f"ALTER TABLE {table} DELETE WHERE token = {{token:UInt64}}", parameters=params, settings=_SYNC
            )


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


TAKE = (
    "SELECT key, any(uid), max(version) FROM analyst_dirty "
    "WHERE {everyone:Bool} OR kafkaMurmurHash(uid) % {total:UInt32} IN {owned:Array(UInt32)} "
    "GROUP BY key ORDER BY key LIMIT {n:UInt32}"
)

#: The raw topic's partitions a writer holds, and their count: its applier takes the UIDs of those partitions only
#: (their records come to it alone, as Kafka's default partitioner places them: kafkaMurmurHash), so the appliers of
#: several writers do not apply one UID side by side. None: every UID (one writer, tests).
Owned = Callable[[], "tuple[list[int], int] | None"]

#: Serialises the applies of one process (the applier's rounds, erasures): two applies of one UID at the same moment
#: would each insert the same difference.
LOCK = threading.Lock()


def apply_queued(client: Client, limit: int = CHUNK, owned: tuple[list[int], int] | None = None) -> int:
    """One round: apply up to `limit` queued UIDs (of the `owned` partitions), then take them off the queue; how many
    it applied."""
    partitions, total = owned if owned is not None else ([], 1)
    with LOCK:
        taken = client.query(
            TAKE, parameters={"n": limit, "everyone": owned is None, "total": max(total, 1), "owned": partitions}
        ).result_rows
        if not taken:
            return 0
        uids = sorted({str(r[1]) for r in taken})
        _apply(client, uids)
        # exactly what was taken: a UID's rows up to the version seen (one written meanwhile has a higher version)
        client.command(
            "ALTER TABLE analyst_dirty DELETE WHERE "
            "version <= toUInt128OrZero(transform(uid, {uids:Array(String)}, {versions:Array(String)}, '0'))",
            parameters={"uids": [str(r[1]) for r in taken], "versions": [str(int(r[2])) for r in taken]},
            settings=_SYNC,
        )
        return len(taken)


def pending(client: Client) -> int:
    """UIDs queued for the applier."""
    return int(client.query("SELECT uniqExact(key) FROM analyst_dirty").result_rows[0][0])


def drain(client: Client) -> int:
    """Apply until the queue is empty (tests, benches); how many UIDs. Nothing on a schema before migration 0009."""
    present = client.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'analyst_dirty'"
    ).result_rows[0][0]
    if not present:
        return 0
    total = 0
    while n := apply_queued(client):
        total += n
    return total


#: While the process also writes, the applier's share of the time: its rounds are spaced so that it works at most
#: this fraction (storing comes first; the figures follow within seconds of a burst). Idle writer: no spacing.
BUSY_SHARE = 0.25


class Applier:
    """The applier thread of a writing process: a round every `interval_s` while the queue has UIDs, at once again
    while a round was full; while `busy()` (the process wrote within the last seconds), spaced to BUSY_SHARE of the
    time. `stop()` finishes the round in flight."""

    def __init__(
        self, connect: Callable[[], Client], owned: Owned, busy: Callable[[], bool], interval_s: float = 1.0
    ) -> None:
        self._connect, self.owned, self.busy, self.interval_s = connect, owned, busy, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="analyst-applier", daemon=True)
        self.failures = 0

    def start(self) -> Applier:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        client = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                client = client or self._connect()
                full = apply_queued(client, owned=self.owned()) >= CHUNK
                self.failures = 0
            except Exception as exc:  # noqa: BLE001 - logged; the UIDs stay queued and the next round retries
                self.failures += 1
                full = False
                log.warning("the analysts' applier failed (%s); the queued UIDs stay queued: retrying", first_line(exc))
            took = time.monotonic() - started
            wait = 0.0 if full else self.interval_s * min(self.failures + 1, 30)
            if self.busy():
                wait = max(wait, took * (1 - BUSY_SHARE) / BUSY_SHARE)
            self._stop.wait(wait)
        if client is not None:
            client.close()


#: The key frozen events move to when their UID is forgotten (`forget`): they stay in the sums, no longer anyone's.
ANONYMOUS = "toFixedString('', 16)"


# A UID with no history left: its remaining events (of days no longer recomputed) go to the anonymous key, taken from
# it in the same INSERT (one part: the sums never see them twice or not at all).
MOVE_FROZEN = f"""
INSERT INTO analyst_events (kind, key, metric, label, label2, bucket, day, value)
SELECT kind, m.1, metric, label, label2, bucket, day, m.2
FROM
(
    SELECT kind, key, metric, label, label2, bucket, day, sum(value) AS total
    FROM analyst_events
    WHERE key IN {_KEYS} AND key != {ANONYMOUS}
      AND key NOT IN (SELECT key FROM analyst_apply_history WHERE token = {{token:UInt64}})
    GROUP BY kind, key, metric, label, label2, bucket, day
    HAVING total != 0
)
ARRAY JOIN [({ANONYMOUS}, total), (key, -total)] AS m
"""


def forget(client: Client, uids: list[str]) -> None:
    """After the UIDs' history was removed (sinks/erasure.py): their events and jumps follow what is left of it at
    once (their jumps are deleted first: they name the UID)."""
    if not uids:
        return
    with LOCK:
        client.command(
            "ALTER TABLE analyst_jumps DELETE WHERE key IN (SELECT sipHash128(arrayJoin({uids:Array(String)})))",
            parameters={"uids": uids},
            settings=_SYNC,
        )
        _apply(client, uids)
