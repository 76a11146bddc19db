"""The life of a simulated fleet over time (docs/simulator.md, "Lifecycle").

Everything is counted in days before the simulation's end day (`back`: 0 is the end day), so a window ending
on any day sees the same kind of life: a release 30 days before its end, deployments upgrading after it.

- Releases: TTS 3.<minor>.<patch>; the newest minor (3.35) came out 30 days before the end day, each older
  minor 50 days before the next, patch releases every 12 days after their minor (up to .4).
- Upgrades: a deployment (or CLI install) starts on its base version (never one released later than the day:
  until then it runs the newest release there is, except -dev builds, which come before their release); an
  eager one upgrades to the newest release 0-7 days after it comes out, a regular one 8-45 days after, a
  laggard (and every -dev build, and the tiny deployments on the default UID) never.
- Churn: some stop sending for good (`stop_back`): nothing on the days after it.
- Outages: a deployment may go silent for 2-14 days in a row, then come back (a "returning" deployment when
  the outage is longer than the gap of the lifecycle views).
- Jumps: now and then a deployment reports figures 20-200 times too high for one day (a broken counter), then
  normal ones again: what the day-over-day jump views must find.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NEWEST_MINOR = 35
NEWEST_RELEASE_BACK = 30
MINOR_EVERY_DAYS = 50
PATCH_EVERY_DAYS = 12
MAX_PATCH = 4


def release_back(minor: int, patch: int) -> int:
    """Days before the end day that 3.<minor>.<patch> was released (negative: not yet)."""
    return NEWEST_RELEASE_BACK + (NEWEST_MINOR - minor) * MINOR_EVERY_DAYS - patch * PATCH_EVERY_DAYS


def newest_release(back: int) -> tuple[int, int]:
    """The newest (minor, patch) released on or before the day `back` days before the end day."""
    best = (0, 0)
    for minor in range(21, NEWEST_MINOR + 1):
        for patch in range(MAX_PATCH + 1):
            if release_back(minor, patch) >= back:
                best = max(best, (minor, patch))
    return best


@dataclass(frozen=True)
class Lifecycle:
    """How one sender lives: its upgrade lag (None: never upgrades), when it stops (None: never), outages."""

    upgrade_lag: int | None = None
    stop_back: int | None = None  # sends nothing on days with back < stop_back
    outage_rate: float = 0.0  # chance per day of starting an outage of 2-14 silent days
    prerelease: bool = False  # a -dev build: may run a version before its release

    def version(self, base: tuple[int, int], back: int) -> tuple[int, int]:
        """(minor, patch) it runs `back` days before the end day: its base (as released by then), or the newest
        release it upgraded to."""
        current = base if self.prerelease else min(base, newest_release(back))
        if self.upgrade_lag is None:
            return current
        return max(current, newest_release(back + self.upgrade_lag))

    def stopped(self, back: int) -> bool:
        return self.stop_back is not None and back < self.stop_back


def deployment_lifecycle(rng: random.Random, frozen: bool, dev: bool) -> Lifecycle:
    """An Identity Server deployment: 35% eager, 40% regular, 25% laggards; 10% stop within 120 days."""
    r = rng.random()
    lag = None if frozen or r >= 0.75 else rng.randint(0, 7) if r < 0.35 else rng.randint(8, 45)
    stop = rng.randint(1, 120) if rng.random() < 0.10 else None
    return Lifecycle(upgrade_lag=lag, stop_back=stop, outage_rate=0.004, prerelease=dev)


def cli_lifecycle(rng: random.Random) -> Lifecycle:
    """A CLI install: 40% eager (0-14 days), 30% regular (15-90), 30% never; 15% stop within 60 days."""
    r = rng.random()
    lag = None if r >= 0.7 else rng.randint(0, 14) if r < 0.4 else rng.randint(15, 90)
    stop = rng.randint(1, 60) if rng.random() < 0.15 else None
    return Lifecycle(upgrade_lag=lag, stop_back=stop)


class Outages:
    """Per sender: the days left of its current outage. `silent(i, rng, rate)` is called once per day in order."""

    def __init__(self) -> None:
        self.left: dict[int, int] = {}

    def silent(self, index: int, rng: random.Random, rate: float) -> bool:
        left = self.left.get(index, 0)
        if left > 0:
            self.left[index] = left - 1
            return True
        if rate and rng.random() < rate:
            self.left[index] = rng.randint(2, 14) - 1
            return True
        return False


def jump(counts: dict[str, int], rng: random.Random, cap: int) -> dict[str, int]:
    """One day's figures of a broken counter: end devices (and their activity windows) 20-200 times too high."""
    factor = rng.randint(20, 200)
    out = dict(counts)
    for name in ("end_devices", "active_end_devices", "active_last_day", "active_last_week", "active_last_month"):
        out[name] = min(cap, counts[name] * factor)
    return out
