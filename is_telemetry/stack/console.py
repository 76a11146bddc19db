"""The console of `up` while it watches: a progress line, the moment the first rows of this start reach
ClickHouse, and a fleet summary.

- progress: on a terminal, rewritten in place every second; otherwise (a pipe, a file) a plain line, without
  control characters, every PLAIN_EVERY_S seconds while it changes (every QUIET_EVERY_S when it does not);
- first rows: when the worker of this start has stored its first records (its own counter: rows that were in
  ClickHouse before this start do not count);
- summary: the last finished UTC day (today's counts grow until midnight), once it is complete (none while the
  simulator's history is still being stored: the progress line shows that), or, before any day has finished,
  today's so far, said to be partial; printed when it changes, at most every summary_every_s seconds;
- the worker up but consuming nothing (it answers, but its group has given it no partition: after a restart, while
  it joins; or some of its partitions are paused: ClickHouse did not take their last batch; nothing is stored from
  them meanwhile), and when it consumes again: a line each, when it happens (at start-up only if its first join
  takes longer than FIRST_JOIN_S)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from is_telemetry.stack.output import rewrite, say

PLAIN_EVERY_S = 5.0  # the progress line when not on a terminal, while its counts change
QUIET_EVERY_S = 60.0  # ... and when they do not
FIRST_JOIN_S = 15.0  # at start-up, a worker that consumes nothing for longer than this is said to


def progress_line(stored: tuple[int, int, int], simulate: bool, backfilled: int, live_posted: int | None) -> str:
    clickhouse = f"ClickHouse: {stored[0]} snapshots (UID-days), {stored[1]} rejected, {stored[2]} days"
    if not simulate:
        return clickhouse
    live = f"live {live_posted}" if live_posted is not None else "live -"
    return f"backfill {backfilled}  {live}  | {clickhouse}"


def summary_line(day: list[Any] | None, today: str, history_stored: bool) -> str | None:
    """One line about a day of fleet_daily (Readings.summary_day: the last finished day, else today's), with what
    kind of day it is: `today` is today's date (UTC), `history_stored` whether every earlier day is in ClickHouse.
    None while a finished day may still be incomplete."""
    if day is None:
        return "fleet: no data yet"
    d = day
    if str(d[0]) >= today:
        kind = "today so far: partial"
    elif history_stored:
        kind = "last full UTC day"
    else:
        return None
    return (
        f"{d[0]} ({kind}): {d[1]} deployments, {d[2]} CLI installs, {d[3]} gateways, {d[4]} end devices "
        f"(active day/week/month {d[5]}/{d[6]}/{d[7]}), {d[8]} applications, {d[9]} users, {d[10]} organizations"
    )


class ProgressConsole:
    """What the watch loop prints: called each second with the progress line."""

    def __init__(self, summary_every_s: float, started: float, tty: bool | None = None) -> None:
        self.summary_every_s = summary_every_s
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.started = started  # when `up` started (time.monotonic())
        self.first_row_at: float | None = None
        self.next_summary = time.monotonic() + 5
        self.last_summary = ""
        self.plain_line = ""
        self.plain_at = 0.0
        self.consumed = False  # the worker has consumed since `up` started
        self.idle_since: float | None = None  # the worker answers but consumes nothing, since then
        self.told_idle = False

    def first_rows(self, stored_by_this_start: float | None) -> None:
        """Say when the worker of this start stored its first records (its counter, None if unknown)."""
        if self.first_row_at is None and stored_by_this_start:
            self.first_row_at = time.monotonic()
            say(f"first rows in ClickHouse {self.first_row_at - self.started:.1f}s after start-up")

    def worker(self, consuming: tuple[int, int] | None) -> None:
        """What the worker's /metrics say it consumes: (partitions assigned, of them paused); None: it does not
        answer (a dead worker is reported by the supervisor)."""
        if consuming is None:
            return
        partitions, paused = consuming
        now = time.monotonic()
        if partitions == 0 or paused:
            self.idle_since = self.idle_since if self.idle_since is not None else now
            if self.told_idle or not (self.consumed or now - self.started > FIRST_JOIN_S):
                return
            if partitions == 0:
                say(
                    "worker: up, but consuming no partition of the raw topic (joining its consumer group): nothing "
                    "is stored meanwhile; records wait in the broker"
                )
            else:
                say(
                    f"worker: up, but {paused} of its {partitions} partitions are paused: ClickHouse did not take "
                    "their last batch (they resume after a back-off); records wait in the broker"
                )
            self.told_idle = True
            return
        if self.told_idle and self.idle_since is not None:
            say(f"worker: consuming again ({partitions} partitions), after {now - self.idle_since:.1f}s without")
        self.consumed, self.told_idle, self.idle_since = True, False, None

    def show(self, line: str, summary: Callable[[], str | None]) -> None:
        """`summary` is called only when a summary is due (it queries ClickHouse)."""
        now = time.monotonic()
        if self.tty:
            rewrite(line)
        elif now - self.plain_at >= (PLAIN_EVERY_S if line != self.plain_line else QUIET_EVERY_S):
            say(line)
            self.plain_line, self.plain_at = line, now
        if now >= self.next_summary:
            self.next_summary = now + self.summary_every_s
            text = summary()
            if text is not None and text != self.last_summary:
                say(text)
                self.last_summary = text
