"""The days a panel reads: its range as query parameters, and the one day a single-day panel shows (dashboard/panels.py
and dashboard/analyst_panels.py, each on its own table)."""

from __future__ import annotations

from datetime import date
from typing import Any

from dashboard.panel_model import Query, Range


def range_params(r: Range) -> dict[str, Any]:
    return {"start": r.start, "end": r.end}


def latest_day(q: Query, r: Range, days_sql: str) -> tuple[date | None, bool]:
    """The latest complete day in range with a row, else the latest day in range with one (flagged incomplete), else
    None. `days_sql` counts a table's days in {start}..{end}: n_complete and complete_day (up to {complete}), n, last."""
    row = q(days_sql, {**range_params(r), "complete": r.complete_until})[0]
    if int(row["n_complete"]):
        return row["complete_day"], True
    if int(row["n"]):
        return row["last"], False
    return None, False
