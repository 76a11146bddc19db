"""`generate()`: the deliveries of a fleet over days, a pure function of its arguments (seeded `random.Random`; the
wall clock only through `now_ms` for today), with what each malformed one must be rejected for.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from producers.fleet_lifecycle import Outages, jump
from producers.simulator.bodies import build_body, changed_object, cli_object, is_object, key_of
from producers.simulator.corruption import MALFORMED_KINDS_CLI, MALFORMED_KINDS_IS, corrupt, make_inconsistent
from producers.simulator.deliveries import DAY_MS, Delivery
from producers.simulator.fleet import CLI_USAGE_MIN_MINOR, COUNT_CAP, Deployment, build_fleet
from producers.truth_rules import utc_day


@dataclass
class Simulation:
    """Deliveries sorted by receive time (stable: the send order), with what each malformed one must be rejected for."""

    deliveries: list[Delivery]
    intended: list[str | None]  # parallel to deliveries: the reason a malformed body must be rejected for, else None
    days: list[str]
    stats: dict[str, int]


def utc_today(now_ms: int | None = None) -> date:
    return utc_day(now_ms if now_ms is not None else int(time.time() * 1000))


def day_start_ms(d: date) -> int:
    return d.toordinal() * DAY_MS - date(1970, 1, 1).toordinal() * DAY_MS


class _Evolution:
    """Per-deployment day-by-day factors, walked backwards from the end day (where the counts are the fleet's),
    and the version it runs each day (its lifecycle: upgrades after releases)."""

    def __init__(self, dep: Deployment, days: int, rng: random.Random) -> None:
        self.dev = [1.0] * days
        self.org = [1.0] * days
        self.version = [dep.life.version((dep.minor, dep.patch), days - 1 - i) for i in range(days)]
        for i in range(days - 2, -1, -1):
            self.dev[i] = self.dev[i + 1] / (1.0 + rng.gauss(dep.device_growth, 0.004))
            step = rng.gauss(0.01, 0.02) if rng.random() < 0.1 else 0.0
            self.org[i] = self.org[i + 1] / (1.0 + step)


def _counts(dep: Deployment, ev: _Evolution, i: int, rng: random.Random) -> dict[str, int]:
    def scaled(base: int, f: float) -> int:
        return min(COUNT_CAP, max(0, int(round(base * f))))

    devices = scaled(dep.end_devices, ev.dev[i])
    active = int(devices * min(1.0, dep.ratio_active * rng.uniform(0.97, 1.03)))
    month = int(active * min(1.0, dep.ratio_month * rng.uniform(0.95, 1.05)))
    week = int(month * min(1.0, dep.ratio_week * rng.uniform(0.92, 1.08)))
    day = int(week * min(1.0, dep.ratio_day * rng.uniform(0.85, 1.15)))
    return {
        "gateways": scaled(dep.gateways, ev.org[i]),
        "end_devices": devices,
        "active_end_devices": active,
        "active_last_day": day,
        "active_last_week": week,
        "active_last_month": month,
        "applications": scaled(dep.applications, ev.org[i]),
        "users_standard": scaled(dep.users_standard, ev.org[i]),
        "users_admin": max(1, scaled(dep.users_admin, ev.org[i])),
        "organizations": scaled(dep.organizations, ev.org[i]),
    }


def generate(
    deployments: int,
    cli_installs: int,
    days: int,
    seed: int,
    end_day: date | str | None = None,
    *,
    resend_rate: float = 0.05,
    changed_rate: float = 0.03,
    missed_rate: float = 0.05,
    malformed_rate: float = 0.01,
    inconsistent_rate: float = 0.02,
    default_uid_rate: float = 0.04,
    jump_rate: float = 0.001,
    lifecycle: bool = True,
    now_ms: int | None = None,
) -> Simulation:
    """Deliveries of the fleet over `days` days ending `end_day` (default: today, UTC).

    Deterministic for the same arguments; for a window that includes today only receive times up to
    `now_ms` (default: the wall clock) are produced. `lifecycle=False` leaves out churn and outages (every
    sender that has started sends); upgrades after releases and jumps (`jump_rate`) happen either way.
    """
    for name, rate in (
        ("resend_rate", resend_rate),
        ("changed_rate", changed_rate),
        ("missed_rate", missed_rate),
        ("malformed_rate", malformed_rate),
        ("inconsistent_rate", inconsistent_rate),
        ("default_uid_rate", default_uid_rate),
        ("jump_rate", jump_rate),
    ):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], not {rate}")
    if days < 1 or deployments < 0 or cli_installs < 0:
        raise ValueError("days must be >= 1, deployments and cli_installs >= 0")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    today = utc_today(now_ms)
    end = date.fromisoformat(end_day) if isinstance(end_day, str) else (end_day or today)
    if end > today:
        raise ValueError(f"end day {end} is after today ({today}, UTC)")

    fleet = build_fleet(deployments, cli_installs, seed, default_uid_rate)
    rng_ev = random.Random(f"simulator:{seed}:evolution:{days}")
    evolutions = [_Evolution(dep, days, rng_ev) for dep in fleet.deployments]
    rng_val = random.Random(f"simulator:{seed}:values:{days}:{end.isoformat()}")
    rng = random.Random(f"simulator:{seed}:events:{days}:{end.isoformat()}")
    rng_life = random.Random(f"simulator:{seed}:life:{days}:{end.isoformat()}")
    outages = Outages()

    out: list[tuple[int, Delivery, str | None]] = []
    stats: Counter[str] = Counter()

    def emit(t: int, obj: dict[str, Any], limit: int, kind_list: list[str]) -> None:
        stats["primary"] += 1
        if rng.random() < malformed_rate:
            kind = rng.choice(kind_list)
            body = corrupt(obj, kind, rng)
            out.append((t, Delivery(t, key_of(body), body), kind))
            stats["malformed"] += 1
            stats[f"malformed_{kind}"] += 1
            return
        body = build_body(obj)
        key = obj["uid"].encode()
        out.append((t, Delivery(t, key, body), None))
        if rng.random() < resend_rate:  # exact re-send (restart, several IS instances), later that day
            t2 = rng.randint(t + 1, limit) if limit > t else t
            out.append((t2, Delivery(t2, key, body), None))
            stats["resend"] += 1
        if rng.random() < changed_rate:  # a later, different body the same day
            t3 = rng.randint(t + 1, limit) if limit > t else t
            body3 = build_body(changed_object(obj, rng))
            out.append((t3, Delivery(t3, key, body3), None))
            stats["changed"] += 1

    day_list = [end - timedelta(days=days - 1 - i) for i in range(days)]
    # CLI installs whose 2025 UID has reported: its first report has nothing yet (bodies.usage_report). Known for an
    # install that starts, or runs an older CLI, within the window; one on a 2025 CLI before it reported earlier.
    reported_2025 = {
        ci.index
        for ci in fleet.cli_installs
        if ci.age_days > days and ci.life.version((ci.minor, ci.patch), days - 1)[0] >= CLI_USAGE_MIN_MINOR
    }
    for i, d in enumerate(day_list):
        back = days - 1 - i  # days before the end day
        start = day_start_ms(d)
        limit = min(start + DAY_MS - 1, now_ms) if d == today else start + DAY_MS - 1
        for dep, ev in zip(fleet.deployments, evolutions):
            if back >= dep.age_days:
                continue  # not started yet
            if lifecycle and dep.life.stopped(back):
                stats["churned"] += 1  # stopped for good
                continue
            if lifecycle and outages.silent(dep.index, rng_life, dep.life.outage_rate):
                stats["outage"] += 1  # silent for a few days, back later
                continue
            counts = _counts(dep, ev, i, rng_val)
            if rng_life.random() < jump_rate:
                counts = jump(counts, rng_life, COUNT_CAP)
                stats["jump"] += 1
            jitter = rng.randint(-120_000, 120_000)
            stats["is_slots"] += 1
            if rng.random() < missed_rate:
                stats["missed"] += 1
                continue
            t = min(max(start, start + dep.time_of_day_ms + jitter), start + DAY_MS - 1)
            if t > limit:
                stats["pending"] += 1  # today, not yet
                continue
            minor, patch = ev.version[i]
            obj = is_object(dep, minor, patch, counts)
            if rng.random() < inconsistent_rate:
                make_inconsistent(obj["entities_count"], rng)
                stats["inconsistent"] += 1
            stats["is_messages"] += 1
            emit(t, obj, limit, MALFORMED_KINDS_IS)
        for ci in fleet.cli_installs:
            if back >= ci.age_days or (lifecycle and ci.life.stopped(back)):
                continue
            used = rng.random() < ci.use_probability or back == ci.age_days - 1  # first use sends
            t = start + rng.randrange(DAY_MS)
            if not used or t > limit:
                continue
            stats["cli_messages"] += 1
            minor = ci.life.version((ci.minor, ci.patch), back)[0]
            first = minor >= CLI_USAGE_MIN_MINOR and ci.index not in reported_2025
            if first:
                reported_2025.add(ci.index)
            emit(t, cli_object(ci, back, t, rng, first), limit, MALFORMED_KINDS_CLI)

    out.sort(key=lambda x: x[0])  # stable: at equal times, the order sent
    stats["deliveries"] = len(out)
    return Simulation([d for _, d, _ in out], [k for _, _, k in out], [d.isoformat() for d in day_list], dict(stats))
