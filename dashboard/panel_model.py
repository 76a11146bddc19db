"""What the dashboard's panels are made of (dashboard/panels.py, dashboard/analyst_panels.py): a query function, the
date range asked for, and the tables a panel answers; the column lists and the version order they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from core.errors import TelemetryError
from core.schema import SUMMED_COUNTS

#: The columns of `fleet_daily` a panel shows: the day, how many deployments and CLI installs, the message's summed
#: counts (core/schema.py), then the deployments left on the default UID and those with inconsistent windows.
FLEET_COLUMNS = [
    "day",
    "deployments",
    "cli_installs",
    *SUMMED_COUNTS,
    "default_uid_deployments",
    "inconsistent_deployments",
]
#: How many keys a panel lists, whatever the number of distinct keys stored (a sender may store up to 200 UIDs a day
#: times the plausible sizes of docs/telemetry-message.md): the rest is one "other" row (its key null, `others` the
#: number of keys it stands for, its counts their sum), computed in the panel's SQL.
TOP_KEYS = 50  # one day's list: frequency plans, OS, architectures, CLI commands, aliases, versions' upgrade speed
#: a series per key over the days of the range (versions, versions behind, CLI version / OS / arch): the page draws
#: 8 series and "other", and 3 dimensions x (8 + 1) rows x the longest range (3,660 days) stay within the 100,000
#: result rows of a query
TOP_SERIES = 8
TOP_JUMPS = 100  # the data-quality panel's jumps, the largest
#: The figure cards of /api/summary: (metric, label). `users` = standard + admin users.
SUMMARY_METRICS = [
    ("deployments", "Deployments"),
    ("gateways", "Gateways"),
    ("end_devices", "End devices"),
    ("active_last_day", "Active devices, last day"),
    ("active_last_week", "Active devices, last week"),
    ("active_last_month", "Active devices, last month"),
    ("applications", "Applications"),
    ("users", "Users"),
    ("organizations", "Organizations"),
    ("cli_installs", "CLI installs"),
]


class BadRequest(TelemetryError):
    pass


@dataclass(frozen=True)
class Range:
    start: date
    end: date
    today: date

    @property
    def complete_until(self) -> date:
        """The latest complete UTC day: yesterday."""
        return self.today - timedelta(days=1)


@dataclass
class Table:
    columns: list[str]
    rows: list[dict[str, Any]]


@dataclass
class Result:
    rows: Table
    meta: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)


Query = Callable[[str, dict[str, Any] | None], list[dict[str, Any]]]


def version_key(v: str) -> tuple[int, tuple[int, ...], str]:
    try:
        return 0, tuple(int(x) for x in v.split(".")), v
    except ValueError:
        return 1, (), v


def summary_rows(day: date, before: date, now: dict[str, Any], then: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The summary card's rows: each metric on `day` against the week before (none when that day has no row)."""
    rows = []
    for metric, label in SUMMARY_METRICS:
        value = now[metric]
        prev = then[metric] if then is not None else None
        rows.append(
            {
                "metric": metric,
                "label": label,
                "day": day,
                "value": value,
                "week_before_day": before,
                "week_before": prev,
                "change": value - prev if prev is not None else None,
                "change_pct": round((value - prev) * 100 / prev, 2) if prev else None,
            }
        )
    return rows
