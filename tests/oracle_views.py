"""Expected views computed by the independent oracle (producers/truth_rules.py, producers/fleet_truth.py,
producers.simulator.ground_truth), never by the pipeline's own code."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date
from typing import Any

from core.schema import TelemetryMessage
from producers.fleet_truth import Snapshots
from producers.truth_rules import Rejected, judge, utc_day
from tests.store_names import EXTRA_VIEWS


def sorted_truth(truth: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name in ("fleet_daily", "gateways_by_frequency_plan_daily", "deployments_by_version_daily", "rejected_daily"):
        columns = list(truth[name][0]) if truth[name] else ["day"]
        out[name] = sorted(truth[name], key=lambda r: tuple(str(r[c]) for c in columns))
    return out


def latest_messages(deliveries: Sequence[Sequence[Any]]) -> dict[tuple[str, str], TelemetryMessage]:
    """Per (day, uid) the valid message with the latest receive time (ties: later in the list), as ground_truth():
    valid and day by the oracle's rules (`truth_rules.judge`, `truth_rules.utc_day`)."""
    latest: dict[tuple[str, str], tuple[int, TelemetryMessage]] = {}
    for received_at_ms, _key, body in deliveries:
        m = judge(body)
        if isinstance(m, Rejected):
            continue
        k = (utc_day(received_at_ms).isoformat(), m.uid)
        if k not in latest or received_at_ms >= latest[k][0]:
            latest[k] = (received_at_ms, m)
    return {k: m for k, (_t, m) in latest.items()}


def extra_truth(deliveries: Sequence[Sequence[Any]]) -> dict[str, list[dict[str, Any]]]:
    """The views ground_truth() does not cover, from the oracle's snapshots (`fleet_truth.Snapshots`: kind, OS, arch,
    major.minor, default UID, inconsistent windows) and the oracle's latest message (the Go version)."""
    by: dict[str, Counter[tuple[str, str]]] = {n: Counter() for n in EXTRA_VIEWS}
    flags: Counter[tuple[str, str]] = Counter()
    snaps = Snapshots.of(deliveries).by_key
    for (day, uid), m in latest_messages(deliveries).items():
        snap = snaps[(date.fromisoformat(day), uid)]
        if snap.kind == "is":
            by["deployments_by_os_daily"][(day, snap.operating_system)] += 1
            by["deployments_by_arch_daily"][(day, snap.arch)] += 1
            by["deployments_by_go_version_daily"][(day, m.os.golang_version.strip() if m.os else "")] += 1
            flags[(day, "default_uid_deployments")] += int(snap.default_uid)
            flags[(day, "inconsistent_deployments")] += int(snap.inconsistent)
        else:
            by["cli_installs_by_version_daily"][(day, snap.version)] += 1
            by["cli_installs_by_os_daily"][(day, snap.operating_system)] += 1
            by["cli_installs_by_arch_daily"][(day, snap.arch)] += 1
            flags[(day, "default_uid_deployments")] += 0
            flags[(day, "inconsistent_deployments")] += 0
    out = {
        name: sorted(
            ({"day": d, EXTRA_VIEWS[name][0]: k, EXTRA_VIEWS[name][1]: n} for (d, k), n in c.items()),
            key=lambda r: (r["day"], r[EXTRA_VIEWS[name][0]]),
        )
        for name, c in by.items()
    }
    days = sorted({d for d, _ in flags})
    out["fleet_flags"] = [
        {
            "day": d,
            "default_uid_deployments": flags[(d, "default_uid_deployments")],
            "inconsistent_deployments": flags[(d, "inconsistent_deployments")],
        }
        for d in days
    ]
    return out
