"""Erasure of a deployment or CLI install: `is-telemetry forget UID...` (docs/privacy.md, "Erasure").

For each UID, in this order:
1. what is stored of it is looked up (its snapshot days received at or before now, its CLI reports, its analyst
   state, rejected bodies naming it). Nothing, and never erased: "unknown"; nothing, and erased before: "already
   erased". No data changes then (forgetting twice is harmless), but the cut is recorded all the same (step 2): a
   report the collector received before the request but the worker has not stored yet must not count either;
2. the register gets (uid, erased_at), always: from then on the roll-up drops every record of it received at or
   before erased_at (processors/erased.py), so a replay of the raw topic, a late re-send or a report still in flight
   never brings it back; a report received later is a new report and counts;
3. its snapshots and CLI reports received at or before erased_at are deleted, the bodies and messages of rejected
   records naming it are emptied (the rows stay: the rejected counts stay exact), its UID is taken out of the
   analyst rows that list UIDs (`behind_top`, `jumps`), and its analyst state (`uid_activity`, `analyst_history`,
   `analyst_first_seen`) is deleted (and rebuilt from any report received after erased_at); its analysts' events and
   jumps follow what is left (sinks/analysts.py `forget`). Mutations run synchronously (`mutations_sync = 2`): the parts
   are rewritten, the rows are gone from disk when the command returns.
4. every day aggregate that counted it is recomputed from what is left (the (day, partition) pairs of its days,
   one version above the newest of those rows), and the days it counted in are marked changed
   (`snapshot_changes`), so the analyst refresh recomputes them and the 29 days after (first-seen, returning,
   carried-forward fleet, retention cohorts) from what is left.
Days beyond the snapshots' TTL keep their aggregates: they hold no UID's row, and cannot be recomputed.

A UID is matched by its erasure key (core/uid.py `erasure_key`): a CLI install's UUID in any case (the collector
stores it as it was sent), a deployment's UID as written. A rejected record names it when its body or message holds
it (also JSON-escaped, `\\/`), or its body's parsed `uid` is it (`\\uXXXX` escapes too).

Writers may run meanwhile (POST /api/forget on a running stack): a worker reads the register before each batch,
takes the UID out of its roll-up state and erases it again in its next write, after that write's inserts
(`InWrite`, processors/rollup.py `roll_up`); the aggregate rows recomputed here are one version above the newest
of theirs, so the worker's next rows still win.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Protocol

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from core.errors import ConfigError
from core.partitioning import partition_of
from core.rows import Batch, RollupRow, datetime_to_ms, ms_to_datetime
from core.schema import _valid_cli_uid, _valid_is_uid
from core.uid import erasure_key, json_escaped
from sinks import analysts


class ClickHouseStore(Protocol):
    """What an erasure needs of the store (sinks/clickhouse.py `ClickHouseStore`), opened by the caller."""

    @property
    def client(self) -> Client: ...

    def recorded_partitions(self) -> int | None: ...

    def allocate_generation(self) -> int: ...

    def write(self, batch: Batch) -> None: ...


log = logging.getLogger(__name__)

_SYNC = {"mutations_sync": 2}
UNKNOWN_TABLE = 60  # ClickHouse's error code


class ErasureRefused(ConfigError):
    """What the erasure needs is missing; nothing was changed."""


class Outcome(StrEnum):
    ERASED = "erased"
    ALREADY_ERASED = "already_erased"
    UNKNOWN = "unknown"
    NOT_A_UID = "not_a_uid"


@dataclass(frozen=True)
class Erasure:
    uid: str
    outcome: Outcome
    erased_at: datetime | None = None  # this erasure's cut (recorded in the register)
    before: datetime | None = None  # the previous erasure's (already erased)
    days: int = 0  # days of snapshots removed
    reports: int = 0  # CLI reports removed
    rejections: int = 0  # rejected records whose body or message was emptied

    def message(self) -> str:
        if self.outcome is Outcome.NOT_A_UID:
            return (
                f"{self.uid[:100]!r} is not a UID (88-character base64 for a deployment, a UUID for a CLI install); "
                "nothing changed"
            )
        when = self.erased_at.isoformat() if self.erased_at else "?"
        cut = f"the erasure is recorded at {when} (table erasures): reports received before then will not be counted"
        if self.outcome is Outcome.UNKNOWN:
            return f"{self.uid}: nothing is stored for this UID and it was never erased; {cut}"
        if self.outcome is Outcome.ALREADY_ERASED:
            before = self.before.isoformat() if self.before else "?"
            return f"{self.uid}: already erased at {before}, nothing stored since; {cut}"
        return (
            f"{self.uid}: erased at {when}: {self.days} days of snapshots, {self.reports} CLI reports, "
            f"{self.rejections} rejected bodies; recorded in the register (table erasures)"
        )


def is_uid(uid: str) -> bool:
    """An allowlist: a deployment's UID (88-character base64 of a SHA-512 digest) or a CLI install's (a UUID)."""
    return _valid_is_uid(uid) or _valid_cli_uid(uid)


def register(client: Client) -> dict[str, int]:
    """erasure key of the uid -> when it was last erased (ms since the epoch, UTC)."""
    try:
        rows = client.query("SELECT uid, toUnixTimestamp64Milli(max(erased_at)) FROM erasures GROUP BY uid").result_rows
    except DatabaseError as exc:
        if getattr(exc, "code", None) == UNKNOWN_TABLE:
            return {}  # a store at an older migration (0008 adds the register): nothing was ever erased
        raise
    out: dict[str, int] = {}
    for uid, ms in rows:  # rows written before the key was lower case for a UUID: merged
        key = erasure_key(str(uid))
        out[key] = max(out.get(key, 0), int(ms))
    return out


def _params(uid: str, at: datetime) -> dict[str, Any]:
    """The bound parameters that name the UID in the statements: `u` its erasure key (core/uid.py), `ci` whether it
    compares in any case (a UUID: the stored UID is compared in lower case), `e` the key JSON-escaped."""
    key = erasure_key(uid)
    return {"u": key, "ci": _valid_cli_uid(key), "e": json_escaped(key), "t": at}


def erase(store: ClickHouseStore, uids: Sequence[str], now: datetime | None = None) -> list[Erasure]:
    """Erase every UID of `uids` (see the module's docstring); one Erasure per UID, in order. Values go to
    ClickHouse as bound parameters only."""
    at_ms = datetime_to_ms(now or datetime.now(UTC))
    out = []
    seen: set[str] = set()
    for uid in uids:  # each once (a UUID in any case), in order, as asked
        if erasure_key(uid) in seen:
            continue
        seen.add(erasure_key(uid))
        if not is_uid(uid):
            out.append(Erasure(uid, Outcome.NOT_A_UID))
            continue
        out.append(_erase_one(store, uid, ms_to_datetime(at_ms)))
    return out


def _days(c: Client, uid: str, p: dict[str, Any]) -> tuple[list[date], list[str]]:
    """The days of the UID's snapshots received up to the erasure, and how the UID is written in them (a UUID may be
    written in several cases: each spelling has its own partition)."""
    rows = c.query(
        "SELECT day, uid FROM snapshots WHERE if({ci:Bool}, lower(uid), uid) = {u:String} "
        "AND received_at <= {t:DateTime64(3, 'UTC')} "
        "GROUP BY day, uid ORDER BY day",
        parameters=p,
    ).result_rows
    return sorted({r[0] for r in rows}), sorted({str(r[1]) for r in rows})


def _erase_one(store: ClickHouseStore, uid: str, at: datetime) -> Erasure:
    c = store.client
    p = _params(uid, at)
    days, spellings = _days(c, uid, p)
    reports = _count(
        c,
        "SELECT count() FROM cli_reports WHERE if({ci:Bool}, lower(uid), uid) = {u:String} "
        "AND received_at <= {t:DateTime64(3, 'UTC')}",
        p,
    )
    rejected = _count(
        c,
        "SELECT count() FROM rejections WHERE received_at <= {t:DateTime64(3, 'UTC')} AND ("
        "position(if({ci:Bool}, lower(body), body), {u:String}) > 0 OR position(body, {e:String}) > 0 "
        "OR position(if({ci:Bool}, lower(message), message), {u:String}) > 0 OR position(message, {e:String}) > 0 "
        "OR if({ci:Bool}, lower(JSONExtractString(body, 'uid')), JSONExtractString(body, 'uid')) = {u:String})",
        p,
    )
    state = _count(c, "SELECT count() FROM uid_activity WHERE if({ci:Bool}, lower(uid), uid) = {u:String}", p)
    listed = _count(
        c,
        "SELECT count() FROM analyst_daily WHERE "
        "arrayExists(x -> if({ci:Bool}, lower(tupleElement(x, 'uid')), tupleElement(x, 'uid')) "
        "= {u:String}, behind_top) "
        "OR arrayExists(x -> if({ci:Bool}, lower(tupleElement(x, 'uid')), tupleElement(x, 'uid')) "
        "= {u:String}, jumps)",
        p,
    )
    total = store.recorded_partitions()
    if (
        days
        and total is None
        and _count(c, "SELECT count() FROM rollup_partitions WHERE day IN {days:Array(Date)}", {"days": days})
    ):
        raise ErasureRefused(
            f"{uid}: the day aggregates exist but the raw topic's partition count is not recorded in ClickHouse "
            "(pipeline_settings): start a worker once (it records it), or run `is-telemetry rollup repartition`, then "
            "forget again; nothing changed"
        )
    stored = bool(days or reports or rejected or state or listed)
    before = None if stored else register(c).get(erasure_key(uid))  # small: one row per erasure
    # 2. the register first, always: from here on the roll-up drops its records received up to `at`, those still in
    # flight (received, not stored yet) included
    c.insert(
        "erasures",
        [[erasure_key(uid), at, len(days), datetime.now(UTC)]],
        column_names=["uid", "erased_at", "days", "recorded_at"],
    )
    if not stored:  # no data to change
        if before is None:
            return Erasure(uid, Outcome.UNKNOWN, at)
        return Erasure(uid, Outcome.ALREADY_ERASED, at, ms_to_datetime(before))
    _remove(c, uid, p, days)
    if days and total is not None:
        _recompute(store, spellings, days, total)
    log.info("erased %s: %d days, %d CLI reports, %d rejected bodies", uid, len(days), reports, rejected)
    return Erasure(uid, Outcome.ERASED, at, days=len(days), reports=reports, rejections=rejected)


def _remove(c: Client, uid: str, p: dict[str, Any], days: list[date]) -> None:
    """Steps 3 and 4 but the day aggregates: idempotent."""
    c.command(
        "ALTER TABLE snapshots DELETE WHERE if({ci:Bool}, lower(uid), uid) = {u:String} "
        "AND received_at <= {t:DateTime64(3, 'UTC')}",
        parameters=p,
        settings=_SYNC,
    )
    c.command(
        "ALTER TABLE cli_reports DELETE WHERE if({ci:Bool}, lower(uid), uid) = {u:String} "
        "AND received_at <= {t:DateTime64(3, 'UTC')}",
        parameters=p,
        settings=_SYNC,
    )
    c.command(
        "ALTER TABLE rejections UPDATE body = '', message = '' WHERE received_at <= {t:DateTime64(3, 'UTC')} "
        "AND (position(if({ci:Bool}, lower(body), body), {u:String}) > 0 OR position(body, {e:String}) > 0 "
        "OR position(if({ci:Bool}, lower(message), message), {u:String}) > 0 OR position(message, {e:String}) > 0 "
        "OR if({ci:Bool}, lower(JSONExtractString(body, 'uid')), JSONExtractString(body, 'uid')) = {u:String})",
        parameters=p,
        settings=_SYNC,
    )
    c.command(
        "ALTER TABLE uid_activity DELETE WHERE if({ci:Bool}, lower(uid), uid) = {u:String}",
        parameters=p,
        settings=_SYNC,
    )
    # ... rebuilt from reports received after the erasure, if any (they count: new reports)
    c.command(
        "INSERT INTO uid_activity SELECT kind, uid, min(day), max(day), groupBitmapState(toUInt32(day)), "
        "groupBitmapState(toUInt32(toMonday(day))), groupBitmapState(toUInt32(toStartOfMonth(day))) "
        "FROM snapshots WHERE if({ci:Bool}, lower(uid), uid) = {u:String} GROUP BY kind, uid",
        parameters=p,
    )
    # its analysts' history, first day and events (sinks/analysts.py), every spelling of it
    spellings = [
        str(r[0])
        for r in c.query(
            "SELECT DISTINCT uid FROM analyst_history WHERE if({ci:Bool}, lower(uid), uid) = {u:String}", parameters=p
        ).result_rows
    ]
    c.command(
        "ALTER TABLE analyst_history DELETE WHERE if({ci:Bool}, lower(uid), uid) = {u:String} "
        "AND bitShiftRight(version, 64) <= toUInt128(toUnixTimestamp64Milli({t:DateTime64(3, 'UTC')}))",
        parameters=p,
        settings=_SYNC,
    )
    c.command(
        "ALTER TABLE analyst_first_seen DELETE WHERE key IN (SELECT sipHash128(arrayJoin({s:Array(String)})))",
        parameters={"s": spellings},
        settings=_SYNC,
    )
    c.command(
        "INSERT INTO analyst_first_seen SELECT kind, sipHash128(uid), min(day), max(day) "
        "FROM snapshots WHERE if({ci:Bool}, lower(uid), uid) = {u:String} GROUP BY kind, uid",
        parameters=p,
    )
    analysts.forget(c, spellings)
    empty = _analyst_days_due(c, days) if days else []  # what counted it: the analyst days, due again
    # A refresh that read the snapshots before they were deleted may still append rows naming the UID, or of a day
    # left empty: wait for it, then take them out (those that start from now on read what is left).
    c.command("SYSTEM WAIT VIEW analyst_daily_refresh")
    c.command("SYSTEM WAIT VIEW retention_refresh")
    if empty:
        c.command(
            "ALTER TABLE analyst_daily DELETE WHERE day IN {e:Array(Date)}", parameters={"e": empty}, settings=_SYNC
        )
    if not c.query("SELECT count() FROM snapshot_changes").result_rows[0][0]:
        c.command("TRUNCATE TABLE retention_cohorts")  # nothing left at all: no cohort either
    c.command(
        "ALTER TABLE analyst_daily UPDATE "
        "behind_top = arrayFilter(x -> if({ci:Bool}, lower(tupleElement(x, 'uid')), tupleElement(x, 'uid')) "
        "!= {u:String}, behind_top), "
        "jumps = arrayFilter(x -> if({ci:Bool}, lower(tupleElement(x, 'uid')), tupleElement(x, 'uid')) "
        "!= {u:String}, jumps) "
        "WHERE arrayExists(x -> if({ci:Bool}, lower(tupleElement(x, 'uid')), tupleElement(x, 'uid')) "
        "= {u:String}, behind_top) "
        "OR arrayExists(x -> if({ci:Bool}, lower(tupleElement(x, 'uid')), tupleElement(x, 'uid')) "
        "= {u:String}, jumps)",
        parameters=p,
        settings=_SYNC,
    )


def _analyst_days_due(c: Client, days: list[date]) -> list[date]:
    """Make the analyst refresh recompute every day the erased UID counted in, and the 29 after (its carried-forward
    look-back, first-seen and returning): a day is due when the changes of [D - 29, D] grow past what its row saw
    (sinks/migrations/0002_analyst_depth.sql). A day left without any snapshot is no longer a day with data: its
    changes go (its analyst row, returned, goes after the refresh in flight). The days with data in
    [first, last + 29] then get more changes than were taken away, so each of them is due."""
    d = {"days": days}
    empty = [
        r[0]
        for r in c.query(
            "SELECT day FROM (SELECT arrayJoin({days:Array(Date)}) AS day) "
            "WHERE day NOT IN (SELECT day FROM snapshots WHERE day IN {days:Array(Date)})",
            parameters=d,
        ).result_rows
    ]
    removed = 0
    if empty:
        e = {"empty": empty}
        removed = int(
            c.query(
                "SELECT sum(changes) FROM snapshot_changes WHERE day IN {empty:Array(Date)}", parameters=e
            ).result_rows[0][0]
            or 0
        )
        c.command("ALTER TABLE snapshot_changes DELETE WHERE day IN {empty:Array(Date)}", parameters=e, settings=_SYNC)
    # the days with data in [first, last + 29], or else the latest one (the retention cohorts, recomputed when the
    # total of the changes grows, must be recomputed too)
    due = [
        r[0]
        for r in c.query(
            "SELECT DISTINCT day FROM snapshot_changes WHERE day BETWEEN {first:Date} AND {last:Date} + 29",
            parameters={"first": min(days), "last": max(days)},
        ).result_rows
    ] or [r[0] for r in c.query("SELECT max(day) FROM snapshot_changes HAVING count() > 0").result_rows]
    if due:
        c.command(
            "INSERT INTO snapshot_changes SELECT arrayJoin({due:Array(Date)}), {n:UInt64}, now64(6, 'UTC')",
            parameters={"n": removed + 1, "due": due},
        )
    return empty


def _recompute(store: ClickHouseStore, spellings: list[str], days: list[date], total: int) -> None:
    """The aggregate rows of the UID's days and partitions (one per spelling of it), recomputed from what is left, one version above the
    newest of those rows: above every row written before them; a worker running meanwhile writes its next rows of
    them with higher versions still (its sequence only grows, and it took the UID out of its state first:
    processors/erased.py), and a worker started later takes a new generation above all."""
    partitions = sorted({partition_of(s.encode(), total) for s in spellings})
    top = store.client.query(
        "SELECT max(version) FROM rollup_partitions WHERE day IN {days:Array(Date)} "
        "AND source_partition IN {p:Array(UInt32)}",
        parameters={"days": days, "p": partitions},
    ).result_rows[0][0]
    version = int(top or 0) + 1
    store.write(Batch(recompute=[(d, p, version) for p in partitions for d in days], partitions_total=total))


class InWrite:
    """Erasures a worker found still counted in its state (processors/rollup.py `roll_up`): done again by its next
    write, after that write's inserts (a batch prepared before the erasure may have written the UID's rows again),
    with the aggregate rows of the UID's days recomputed under the version the roll-up reserved for them (above
    that batch's rows, below the next ones). Idempotent; kept until a write that ran them succeeded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, int, int]] = {}  # uid -> (erased at ms, partitions, version)

    def add(self, uid: str, until_ms: int, partitions_total: int, version: int) -> None:
        with self._lock:
            self._pending[uid] = (until_ms, partitions_total, version)

    def run(self, client: Client, recompute: Callable[[date, int, int, int], RollupRow]) -> list[RollupRow]:
        """Remove what the pending erasures name; the recomputed aggregate rows to insert."""
        with self._lock:
            pending = dict(self._pending)
        rows: list[RollupRow] = []
        for uid, (until_ms, total, version) in pending.items():
            p = _params(uid, ms_to_datetime(until_ms))
            days, spellings = _days(client, uid, p)
            _remove(client, uid, p, days)
            for partition in sorted({partition_of(s.encode(), total) for s in [uid, *spellings]}):
                rows.extend(recompute(day, partition, total, version) for day in days)
        return rows

    def done(self, uids: Iterable[str]) -> None:
        with self._lock:
            for uid in uids:
                self._pending.pop(uid, None)

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._pending)


def _count(client: Client, sql: str, parameters: dict[str, Any]) -> int:
    """The count a `SELECT count() ...` (a code constant with bound parameters) answers."""
    return int(client.query(sql, parameters=parameters).result_rows[0][0])
