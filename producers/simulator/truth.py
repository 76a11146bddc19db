"""The ground truth of the day aggregates (`ground_truth()`): what the pipeline must hold after exactly these
deliveries, and what ClickHouse holds once a simulation is stored
(`stored_expectation()`), computed with the oracle's own rules (producers/truth_rules.py), never the processors' code.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from core.schema import PLAUSIBILITY_LIMIT, SUMMED_COUNTS, TelemetryMessage
from producers.simulator.generation import Simulation
from producers.truth_rules import Rejected, judge, utc_day, version_of


def ground_truth(deliveries: Iterable[Sequence[Any]], plausibility_limit: int = PLAUSIBILITY_LIMIT) -> dict[str, Any]:
    """The day aggregates the pipeline must hold after consuming exactly these deliveries, in this order.

    Day = UTC day of received_at_ms. Rejected deliveries count once each under their reason. Per (day,
    uid) the snapshot is the valid body with the latest receive time (ties: the later in the list).
    """
    per_day: Counter[str] = Counter()
    rejected: Counter[tuple[str, str]] = Counter()
    latest: dict[tuple[str, str], tuple[int, TelemetryMessage]] = {}
    n = 0
    for received_at_ms, _key, body in deliveries:
        n += 1
        day = utc_day(received_at_ms).isoformat()
        per_day[day] += 1
        result = judge(body, plausibility_limit)
        if isinstance(result, Rejected):
            rejected[(day, result.reason)] += 1
            continue
        k = (day, result.uid)
        cur = latest.get(k)
        if cur is None or received_at_ms >= cur[0]:
            latest[k] = (received_at_ms, result)

    fleet: dict[str, dict[str, Any]] = {}
    plans: Counter[tuple[str, str]] = Counter()
    versions: Counter[tuple[str, str]] = Counter()
    for (day, _uid), (_t, m) in latest.items():
        row = fleet.setdefault(
            day, {"day": day, "deployments": 0, "cli_installs": 0, **dict.fromkeys(SUMMED_COUNTS, 0)}
        )
        ec = m.entities_count
        if ec is None:
            row["cli_installs"] += 1
            continue
        row["deployments"] += 1
        for name, count in zip(SUMMED_COUNTS, ec.summed()):
            row[name] += count
        for plan, g in ec.gateways.gateways_by_frequency_plan_id.items():
            plans[(day, plan)] += g
        versions[(day, version_of(m.os.binary_version if m.os else ""))] += 1

    return {
        "fleet_daily": [fleet[d] for d in sorted(fleet)],
        "gateways_by_frequency_plan_daily": [
            {"day": d, "frequency_plan_id": p, "gateways": g} for (d, p), g in sorted(plans.items())
        ],
        "deployments_by_version_daily": [
            {"day": d, "version": v, "deployments": c} for (d, v), c in sorted(versions.items())
        ],
        "rejected_daily": [{"day": d, "reason": r, "messages": c} for (d, r), c in sorted(rejected.items())],
        "messages": n,
        "per_day_messages": dict(sorted(per_day.items())),
    }


def write_ground_truth(truth: dict[str, Any], path: Path | str) -> None:
    Path(path).write_text(json.dumps(truth, indent=1) + "\n")


def stored_expectation(sim: Simulation, plausibility_limit: int = PLAUSIBILITY_LIMIT) -> dict[date, tuple[int, int]]:
    """Per day: (UID-days, rejected bodies) that ClickHouse holds (after duplicates collapse) once `sim` is stored."""
    uid_days: dict[date, set[str]] = {}
    rejected: Counter[date] = Counter()
    for received_at_ms, _key, body in sim.deliveries:
        day = utc_day(received_at_ms)
        result = judge(body, plausibility_limit)
        if isinstance(result, Rejected):
            rejected[day] += 1
        else:
            uid_days.setdefault(day, set()).add(result.uid)
    return {d: (len(uid_days.get(d, ())), rejected[d]) for d in sorted(set(uid_days) | set(rejected))}
