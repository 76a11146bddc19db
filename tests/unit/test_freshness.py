"""What the dashboard, /metrics and `is-telemetry status` make of the refreshes' state (dashboard/freshness.py):
pure logic over rows as `analyst_refreshes` answers them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from dashboard.freshness import (
    FAILING_METRIC,
    LAST_SUCCESS_METRIC,
    STALE_AFTER_S,
    metrics_text,
    panel_freshness,
    printable,
)
from dashboard.panel_model import Range

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _clock_at_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's clock stands at NOW: the tests may run long after this module was imported (a whole suite)."""
    monkeypatch.setattr("dashboard.freshness._now", lambda: NOW)


RANGE = Range(date(2025, 1, 1), date(2025, 1, 31), date(2025, 2, 1))


def row(
    view: str, *, exception: str = "", success: datetime | None = NOW, as_of: datetime | None = NOW
) -> dict[str, Any]:
    return {
        "view": view,
        "status": "Scheduled",
        "failing": bool(exception),
        "exception": exception,
        "last_success_time": success.replace(tzinfo=None) if success else None,  # as clickhouse-connect gives it
        "last_refresh_time": NOW.replace(tzinfo=None),
        "figures_as_of": as_of,
    }


def query(rows: list[dict[str, Any]]) -> Any:
    return lambda sql, params: rows


def test_current_refreshes_are_not_behind() -> None:
    result = panel_freshness(query([row("analyst_daily_refresh"), row("retention_refresh", success=None)]), RANGE)
    assert result.meta["behind"] is False and result.meta["message"] == "" and result.meta["as_of"] is None
    assert [r["failing"] or r["stale"] for r in result.rows.rows] == [False, False]  # no success yet is not behind


def test_a_failing_refresh_is_behind_as_of_its_figures() -> None:
    before = NOW - timedelta(hours=2)
    error = "Code: 60. DB::Exception: Unknown table snapshot_changes \x1b[31m\u202e\nStack trace: ..."
    result = panel_freshness(
        query([row("analyst_daily_refresh", exception=error, success=before), row("retention_refresh")]), RANGE
    )
    assert result.meta["behind"] is True and result.meta["as_of"] == NOW  # the failing view's figures_as_of
    failing = result.rows.rows[0]
    assert failing["error"] == "Code: 60. DB::Exception: Unknown table snapshot_changes \\x1b[31m\\u202e"
    assert result.meta["message"] == (
        f"Figures as of {NOW:%Y-%m-%d %H:%M:%S} UTC: the refresh of analyst_daily_refresh is failing ({failing['error']})."
    )


def test_a_refresh_without_success_for_long_is_stale() -> None:
    old = NOW - timedelta(seconds=STALE_AFTER_S + 60)
    result = panel_freshness(query([row("retention_refresh", success=old, as_of=old)]), RANGE)
    assert result.rows.rows[0]["stale"] is True and result.meta["as_of"] == old
    assert result.meta["message"].endswith(f"retention_refresh has not refreshed since {old:%Y-%m-%d %H:%M:%S} UTC.")


def test_metrics() -> None:
    text = metrics_text(query([row("analyst_daily_refresh", exception="x"), row("retention_refresh", success=None)]))
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if not line.startswith("#")
    }
    assert values == {
        f'{FAILING_METRIC}{{view="analyst_daily_refresh"}}': 1.0,
        f'{FAILING_METRIC}{{view="retention_refresh"}}': 0.0,
        f'{LAST_SUCCESS_METRIC}{{view="analyst_daily_refresh"}}': NOW.timestamp(),
        f'{LAST_SUCCESS_METRIC}{{view="retention_refresh"}}': 0.0,  # none since ClickHouse started
    }


def test_printable() -> None:
    assert printable("a\x00b\tc\u200fd 😀 ü") == "a\\x00b\\tc\\u200fd 😀 ü"
