"""The oracle's CLI usage rules (producers/fleet_truth.py), by hand: each report of a 2025 CLI counts the uses since
the previous one, so a window sums every distinct report; the lists count in the cli object and one object down."""

from __future__ import annotations

import json
from typing import Any

from producers import fleet_truth

DAY0, DAY_MS = 1_735_689_600_000, 86_400_000  # 2025-01-01T00:00:00Z, a day
Delivery = tuple[int, bytes, bytes]  # (received_at_ms, key, body), as the simulator's
X, Y = "0f8fad5b-d9cb-469f-a165-70867728950e", "3f6c2a8e-5b1d-4c7e-9a0f-2d8b7e6c1a94"


def report(uid: str, day: int, cli: dict[str, Any], hour: int = 12) -> Delivery:
    body = {"uid": uid, "os": {"binary_version": "3.35.1"}, "cli": cli, "entities_count": None}
    return (DAY0 + (day - 1) * DAY_MS + hour * 3_600_000, uid.encode(), json.dumps(body).encode())


def uses(n: int, path: str = "end-devices list") -> dict[str, Any]:
    return {"commands": [{"command_path": path, "execution_count": n, "last_used_at": 1}], "aliases": None}


def usage_on(deliveries: list[Delivery], day: str) -> dict[str, tuple[int, int, int]]:
    commands, _aliases = fleet_truth.cli_usage(fleet_truth.Snapshots.of(deliveries))
    return {
        r["command_path"]: (r["installs"], r["executions"], r["active_installs"]) for r in commands if r["day"] == day
    }


def test_the_issue_example_sums_every_report() -> None:
    """X used `end-devices list` 5 times, then 3, then not at all; Y 4 times: 12 executions by 2 installs."""
    deliveries = [
        report(X, 1, uses(5)),
        report(X, 2, uses(3)),
        report(Y, 2, uses(4)),
        report(X, 3, {"commands": None, "aliases": None}),
    ]
    assert usage_on(deliveries, "2025-01-03") == {"end-devices list": (2, 12, 2)}


def test_two_reports_a_day_count_and_an_exact_resend_counts_once() -> None:
    deliveries = [report(X, 1, uses(5), hour=9), report(X, 1, uses(2), hour=20), report(X, 1, uses(2), hour=21)]
    assert usage_on(deliveries, "2025-01-01") == {"end-devices list": (1, 7, 1)}


def test_lists_count_inlined_and_one_object_down_only() -> None:
    cli = {"usage": uses(6, "login"), "a": {"b": uses(100, "deep")}, **uses(1)}
    assert fleet_truth.commands_of(cli) == [("end-devices list", 1), ("login", 6)]
    assert fleet_truth.reports_usage(cli) and fleet_truth.reports_usage({"x": {"aliases": None}})
    assert not fleet_truth.reports_usage({}) and not fleet_truth.reports_usage({"a": {"b": uses(1)}})
    aliases = {"aliases": [{"command_name": "end-devices", "alias": "dev", "usage_count": 2}, {"alias": "x"}]}
    assert fleet_truth.aliases_of(aliases) == [("end-devices", "dev", 2)]  # no command name: left out
