"""Comparing the analyst views (migrations 0002 and 0006) with `producers.fleet_truth`: shared by the store-level tests,
the dashboard test and the multi-process exactness tests.

Counts compare exactly; shares, retention rates and jump factors (rounded to 6 or 2 decimals on both sides) to
6 decimals, as floats. Rows compare as sorted tuples of the truth's columns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import httpx

from producers import fleet_truth

FLOAT_COLUMNS = {"share", "share_at_or_above", "retention", "factor"}
NAMED_VIEWS = [
    "fleet_daily_carried",
    "fleet_size_daily",
    "regions_daily",
    "version_adoption_daily",
    "version_adoption_speed",
    "versions_behind_daily",
    "deployments_behind_daily",
    "cli_installs_active_daily",
    "cli_command_usage_daily",
    "cli_alias_usage_daily",
    "data_quality_daily",
    "sender_jumps_daily",
    "sender_lifespans",
    "deployment_lifecycle_daily",
    "cli_lifecycle_daily",
    "retention_weekly",
    "retention_monthly",
]


def _cell(column: str, v: Any) -> Any:
    if column in FLOAT_COLUMNS and v is not None and not (isinstance(v, float) and math.isnan(v)):
        return round(float(v), 6)
    if isinstance(v, date):
        return v.isoformat()
    if column == "seen_on_first_day":
        return bool(v)
    return v


def normalise(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    return sorted((tuple(_cell(c, r[c]) for c in columns) for r in rows), key=repr)


def expected(deliveries: Sequence[Sequence[Any]]) -> dict[str, list[dict[str, Any]]]:
    return fleet_truth.analyst_ground_truth(deliveries)


def differences(
    read: Callable[[str, Sequence[str]], list[dict[str, Any]]],
    truth: dict[str, list[dict[str, Any]]],
    views: Sequence[str] = NAMED_VIEWS,
) -> dict[str, str]:
    """{view: what differs} for every view whose rows (read with the truth's columns) differ from the truth."""
    out = {}
    for name in views:
        want_rows = truth[name]
        if not want_rows:
            got_rows = read(name, ["*"])
            if got_rows:
                out[name] = f"{len(got_rows)} rows, truth none"
            continue
        columns = list(want_rows[0])
        got, want = normalise(read(name, columns), columns), normalise(want_rows, columns)
        if got != want:
            missing = [r for r in want if r not in got][:3]
            extra = [r for r in got if r not in want][:3]
            out[name] = f"{len(got)} rows, truth {len(want)}; missing {missing}; extra {extra}"
    return out


def api_reader(api_url: str) -> Callable[[str, Sequence[str]], list[dict[str, Any]]]:
    """Reads a view through POST /api/sql (JSON body) of a running stack or worker."""

    def read(view: str, columns: Sequence[str]) -> list[dict[str, Any]]:
        r = httpx.post(api_url + "/api/sql", json={"query": f"SELECT {', '.join(columns)} FROM {view}"}, timeout=60)
        r.raise_for_status()
        body = r.json()
        return [dict(zip(body["columns"], row)) for row in body["rows"]]

    return read


def wait_for_analyst_views(api_url: str, truth: dict[str, list[dict[str, Any]]], timeout_s: float = 120) -> None:
    """Poll until every analyst view equals the truth (the refresh runs every 10 s); fail with what differs."""
    read = api_reader(api_url)
    deadline = time.monotonic() + timeout_s
    diff: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            diff = differences(read, truth)
        except httpx.HTTPError as exc:
            diff = {"api": repr(exc)}
        if not diff:
            return
        time.sleep(2)
    raise AssertionError(f"analyst views never matched the ground truth: {diff}")
