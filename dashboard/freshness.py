"""How fresh the figures of the fleet over time are: the state of ClickHouse's refreshable views.

`analyst_daily` and `retention_cohorts` are written by refreshable materialized views every 10 s
(sinks/migrations/0002_analyst_depth.sql); a refresh that fails leaves the previous figures in place. The view
`analyst_refreshes` (sinks/migrations/0005_values_survive.sql, over `system.view_refreshes`) says, per refresh,
whether its latest attempt failed, with what error, when it last succeeded and how old its figures are. This is
shown as:
- the panel `/api/freshness` (its rows; `behind` and `as_of` say whether the dashboard shows "figures as of T"),
  which `is-telemetry status` reads for its `views` line;
- `/metrics`: `is_telemetry_analyst_view_refresh_failing{view}` (1 when its latest attempt failed) and
  `is_telemetry_analyst_view_last_success_timestamp_seconds{view}` (0 when none since ClickHouse started).

A view is behind when its latest attempt failed, or when its last success is older than STALE_AFTER_S (a
refresh that hangs or runs for very long). Right after ClickHouse starts no success is known yet: that alone is
not behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dashboard.panel_model import Query, Range, Result, Table

STALE_AFTER_S = 600
ERROR_CHARS = 500
REFRESHES_SQL = (
    "SELECT view, status, failing, exception, last_success_time, last_refresh_time, figures_as_of "
    "FROM analyst_refreshes ORDER BY view"
)
COLUMNS = ["view", "status", "failing", "stale", "error", "last_success_time", "last_refresh_time", "figures_as_of"]
FAILING_METRIC = "is_telemetry_analyst_view_refresh_failing"
LAST_SUCCESS_METRIC = "is_telemetry_analyst_view_last_success_timestamp_seconds"


def printable(text: str) -> str:
    """`text` with every character that is not printable (controls, escapes, bidirectional marks) written as an
    escape: an error can quote any value a sender chose, and it is shown on terminals and pages."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Refresh:
    """One refreshable view's state."""

    view: str
    status: str
    failing: bool
    error: str  # the first line of its latest attempt's error ('' when it succeeded)
    last_success: datetime | None
    last_refresh: datetime | None
    figures_as_of: datetime | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Refresh:
        exception = str(row["exception"] or "").strip()
        return cls(
            str(row["view"]),
            str(row["status"]),
            bool(row["failing"]),
            printable(exception.splitlines()[0][:ERROR_CHARS]) if exception else "",
            _utc(row["last_success_time"]),
            _utc(row["last_refresh_time"]),
            _utc(row["figures_as_of"]),
        )

    def stale(self, now: datetime) -> bool:
        return self.last_success is not None and (now - self.last_success).total_seconds() > STALE_AFTER_S

    def behind(self, now: datetime) -> bool:
        return self.failing or self.stale(now)

    def row(self, now: datetime) -> dict[str, Any]:
        return {
            "view": self.view,
            "status": self.status,
            "failing": self.failing,
            "stale": self.stale(now),
            "error": self.error,
            "last_success_time": self.last_success,
            "last_refresh_time": self.last_refresh,
            "figures_as_of": self.figures_as_of,
        }


def read(q: Query) -> list[Refresh]:
    return [Refresh.of(row) for row in q(REFRESHES_SQL, None)]


def _at(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def behind_message(late: list[Refresh], as_of: datetime | None) -> str:
    """What the dashboard says above the figures when refreshes are behind ('' when none is)."""
    if not late:
        return ""
    head = f"Figures as of {_at(as_of)}" if as_of is not None else "Figures not computed yet"
    parts = []
    for x in late:
        if x.failing:
            parts.append(f"the refresh of {x.view} is failing ({x.error})")
        else:
            since = _at(x.last_success) if x.last_success is not None else "ClickHouse started"
            parts.append(f"{x.view} has not refreshed since {since}")
    return f"{head}: {'; '.join(parts)}."


def _now() -> datetime:
    return datetime.now(UTC)


def panel_freshness(q: Query, r: Range) -> Result:
    """/api/freshness: one row per refreshable view; `behind` when any is failing or stale, `as_of` the oldest
    figures among those, and `message` what the dashboard shows ("Figures as of T: ...")."""
    now = _now()
    refreshes = read(q)
    late = [x for x in refreshes if x.behind(now)]
    times = [x.figures_as_of for x in late if x.figures_as_of is not None]
    as_of = min(times) if times else None
    meta = {
        "behind": bool(late),
        "as_of": as_of,
        "message": behind_message(late, as_of),
        "stale_after_s": STALE_AFTER_S,
    }
    return Result(Table(COLUMNS, [x.row(now) for x in refreshes]), meta)


class _Gauges(Collector):
    def __init__(self, refreshes: list[Refresh]) -> None:
        self.refreshes = refreshes

    def collect(self) -> Any:
        failing = GaugeMetricFamily(
            FAILING_METRIC,
            "1 when the latest refresh of an analyst view failed (its figures stay as before)",
            labels=["view"],
        )
        success = GaugeMetricFamily(
            LAST_SUCCESS_METRIC,
            "Start of the latest successful refresh of an analyst view (0: none since ClickHouse started)",
            labels=["view"],
        )
        for x in self.refreshes:
            failing.add_metric([x.view], 1.0 if x.failing else 0.0)
            success.add_metric([x.view], x.last_success.timestamp() if x.last_success else 0.0)
        yield failing
        yield success


def metrics_text(q: Query) -> bytes:
    """The refresh gauges in the Prometheus text format (read at each scrape)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Gauges(read(q)))
    return generate_latest(registry)
