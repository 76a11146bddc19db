"""The console of `up` while it watches: a progress line (rewritten in place on a terminal), the moment the
first rows reach ClickHouse, and a fleet summary every summary_every_s seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from is_telemetry.stack.output import say


def progress_line(stored: tuple[int, int, int], simulate: bool, backfilled: int, live_posted: int | None) -> str:
    clickhouse = f"ClickHouse: {stored[0]} snapshots (UID-days), {stored[1]} rejected, {stored[2]} days"
    if not simulate:
        return clickhouse
    live = f"live {live_posted}" if live_posted is not None else "live -"
    return f"backfill {backfilled}  {live}  | {clickhouse}"


def summary_line(day: list[Any] | None) -> str:
    """One line about the last day of fleet_daily (Readings.latest_fleet_day)."""
    if day is None:
        return "today: no data yet"
    d = day
    return (
        f"{d[0]}: {d[1]} deployments, {d[2]} CLI installs, {d[3]} gateways, {d[4]} end devices "
        f"(active day/week/month {d[5]}/{d[6]}/{d[7]}), {d[8]} applications, {d[9]} users, {d[10]} organizations"
    )


class ProgressConsole:
    """What the watch loop prints each second (on a terminal) and every summary_every_s seconds (always)."""

    def __init__(self, summary_every_s: float) -> None:
        self.summary_every_s = summary_every_s
        self.tty = sys.stdout.isatty()
        self.started = time.monotonic()
        self.first_row_at: float | None = None
        self.next_summary = time.monotonic() + 5

    def show(self, stored: tuple[int, int, int], line: str, summary: Callable[[], str]) -> None:
        """`summary` is called only when a summary is due (it queries ClickHouse)."""
        if self.first_row_at is None and stored[0] > 0:
            self.first_row_at = time.monotonic()
            say(f"\nfirst rows in ClickHouse {self.first_row_at - self.started:.1f}s after start-up")
        if self.tty:
            say("\r" + line[:160].ljust(160), end="")
        if time.monotonic() >= self.next_summary:
            say(("\n" if self.tty else "") + summary() + ("" if self.tty else f"\n  {line}"))
            self.next_summary = time.monotonic() + self.summary_every_s
