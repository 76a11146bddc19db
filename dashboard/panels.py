"""The public dashboard: the page (`/`, `/static/...`) and one JSON API per panel (docs/dashboard.md).

Every panel endpoint reads the analyst views of sinks/migrations (fleet_daily and the `*_daily` views over
daily_rollup) on the analysts' read-only, limited sessions (dashboard/analyst_sql.py) with server-side parameters, and answers
`{"panel", "from", "to", ..., "columns", "rows", "tables"}`; `?format=csv` gives the same `rows` as CSV
(`&table=NAME` one of the extra `tables` instead). Counts are JSON numbers (UInt64 fits: orjson writes
unsigned 64-bit integers exactly).

Date range: `?from=YYYY-MM-DD&to=YYYY-MM-DD` (UTC days, both included). Default: the 30 days ending at the
latest complete day, i.e. yesterday (UTC), or the latest day with data if that is earlier. Panels that
show one day (summary, gateways per plan, adoption) use the latest complete day in the range that has
data, or, when the range holds no complete day with data, its latest day with data (`complete: false`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from core.config import Settings
from core.csvsafe import csv_cell
from core.errors import RequestRefused
from core.httperrors import error_response
from dashboard import analyst_panels, freshness
from dashboard.analyst_sql import AnalystSessions
from dashboard.panel_days import latest_day, range_params
from dashboard.panel_model import (
    FLEET_COLUMNS,
    TOP_KEYS,
    TOP_SERIES,
    BadRequest,
    Query,
    Range,
    Result,
    Table,
    summary_rows,
    version_key,
)
from dashboard.responses import OrjsonResponse, json_value

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_DAYS = 30
MAX_DAYS = 3660
#: ClickHouse `Date` covers these days; anything else cannot be a day with data.
MIN_DATE, MAX_DATE = date(1970, 1, 1), date(2149, 6, 6)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

#: The page may load only what this server serves (the chart library is vendored under /static/vendor).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def utc_today() -> date:
    return datetime.now(UTC).date()


def parse_day(name: str, raw: str) -> date:
    if not _DATE_RE.fullmatch(raw):
        raise BadRequest(f"{name} must be a day as YYYY-MM-DD, not {raw[:40]!r}")
    try:
        d = date.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} is not a valid day: {raw!r}") from exc
    if not MIN_DATE <= d <= MAX_DATE:
        raise BadRequest(f"{name} must be between {MIN_DATE} and {MAX_DATE}")
    return d


def day_bounds(q: Query) -> tuple[int, date | None, date | None]:
    """(days with data, first, last) of fleet_daily."""
    row = q("SELECT count() AS n, min(day) AS first, max(day) AS last FROM fleet_daily", None)[0]
    n = int(row["n"])
    return (n, row["first"], row["last"]) if n else (0, None, None)


def default_end(last: date | None, today: date) -> date:
    yesterday = today - timedelta(days=1)
    return min(yesterday, last) if last is not None else yesterday


def resolve_range(params: dict[str, str], q: Query, today: date) -> Range:
    raw_from, raw_to = params.get("from", "").strip(), params.get("to", "").strip()
    start = parse_day("from", raw_from) if raw_from else None
    end = parse_day("to", raw_to) if raw_to else None
    if end is None:
        end = default_end(day_bounds(q)[2], today)
        if start is not None and start > end:
            end = start
    if start is None:
        start = max(MIN_DATE, end - timedelta(days=DEFAULT_DAYS - 1))
    if start > end:
        raise BadRequest(f"from ({start}) is after to ({end})")
    if (end - start).days + 1 > MAX_DAYS:
        raise BadRequest(f"the range spans more than {MAX_DAYS} days")
    return Range(start, end, today)


FLEET_DAYS = (
    "SELECT countIf(day <= {complete:Date}) AS n_complete, maxIf(day, day <= {complete:Date}) AS complete_day, "
    "count() AS n, max(day) AS last FROM fleet_daily WHERE day BETWEEN {start:Date} AND {end:Date}"
)


def pick_day(q: Query, r: Range) -> tuple[date | None, bool]:
    """The one day a single-day panel shows: the latest complete day in range with data (else the latest day
    in range with data, flagged incomplete), or None without any data in range."""
    return latest_day(q, r, FLEET_DAYS)


def _fleet_rows(q: Query, where: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = q(f"SELECT {', '.join(FLEET_COLUMNS)} FROM fleet_daily WHERE {where} ORDER BY day", params)
    for row in rows:
        row["users"] = row["users_standard"] + row["users_admin"]
    return rows


def _share(part: int, total: int) -> float | None:
    return round(part / total, 6) if total else None


# -- panels ----------------------------------------------------------------------------------------------------


def panel_summary(q: Query, r: Range) -> Result:
    day, complete = pick_day(q, r)
    columns = ["metric", "label", "day", "value", "week_before_day", "week_before", "change", "change_pct"]
    if day is None:
        return Result(Table(columns, []), {"day": None, "complete": False, "week_before_day": None})
    before = day - timedelta(days=7)
    by_day = {row["day"]: row for row in _fleet_rows(q, "day IN {days:Array(Date)}", {"days": [day, before]})}
    now, then = by_day[day], by_day.get(before)
    rows = summary_rows(day, before, now, then)
    return Result(Table(columns, rows), {"day": day, "complete": complete, "week_before_day": before})


def panel_fleet(q: Query, r: Range) -> Result:
    rows = _fleet_rows(q, "day BETWEEN {start:Date} AND {end:Date}", range_params(r))
    columns = FLEET_COLUMNS[:13] + ["users"] + FLEET_COLUMNS[13:]
    return Result(Table(columns, [{c: row[c] for c in columns} for row in rows]))


# Each list of keys is bounded in its SQL (dashboard/panel_model.py TOP_KEYS, TOP_SERIES): the largest keys, then
# one "other" row with the rest summed (key NULL, `others` = how many keys it sums), so that no answer grows with
# the number of distinct keys stored. One day's list: slot = the key's rank, the ranks past {top} share one slot.
GATEWAYS_BY_PLAN = (
    "SELECT day, if(slot <= {top:UInt32}, any(frequency_plan_id), NULL) AS frequency_plan_id, sum(gateways) AS gateways, "
    "if(slot <= {top:UInt32}, 0, count()) AS others "
    "FROM (SELECT day, frequency_plan_id, gateways, "
    "least(row_number() OVER (ORDER BY gateways DESC, frequency_plan_id), {top:UInt32} + 1) AS slot "
    "FROM gateways_by_frequency_plan_daily WHERE day = {day:Date} AND gateways > 0) "
    "GROUP BY day, slot ORDER BY slot"
)
# A series per key over the range: the keys with the largest sum over the range, per day the rest in one row.
VERSIONS_IN_RANGE = (
    "SELECT day, if(slot <= {top:UInt32}, any(version), NULL) AS version, sum(deployments) AS deployments, "
    "if(slot <= {top:UInt32}, 0, count()) AS others "
    "FROM (SELECT day, version, deployments, "
    "least(dense_rank() OVER (ORDER BY total DESC, version), {top:UInt32} + 1) AS slot "
    "FROM (SELECT day, version, deployments, sum(deployments) OVER (PARTITION BY version) AS total "
    "FROM deployments_by_version_daily WHERE day BETWEEN {start:Date} AND {end:Date} AND deployments > 0)) "
    "GROUP BY day, slot ORDER BY day, slot"
)
OS_ON_DAY = {
    dimension: "SELECT day, if(slot <= {top:UInt32}, any(value), NULL) AS value, sum(deployments) AS deployments, "
    "if(slot <= {top:UInt32}, 0, count()) AS others "
    "FROM (SELECT day, value, deployments, "
    "least(row_number() OVER (ORDER BY deployments DESC, value), {top:UInt32} + 1) AS slot "
    f"FROM (SELECT day, {dimension} AS value, deployments FROM {view} "
    "WHERE day = {day:Date} AND deployments > 0)) "
    "GROUP BY day, slot ORDER BY slot"
    for dimension, view in (("operating_system", "deployments_by_os_daily"), ("arch", "deployments_by_arch_daily"))
}


def panel_gateways_by_plan(q: Query, r: Range) -> Result:
    day, complete = pick_day(q, r)
    columns = ["day", "frequency_plan_id", "gateways", "others"]
    rows: list[dict[str, Any]] = []
    if day is not None:
        rows = q(GATEWAYS_BY_PLAN, {"day": day, "top": TOP_KEYS})
    return Result(Table(columns, rows), {"day": day, "complete": complete, "top": TOP_KEYS})


def _version_order(row: dict[str, Any]) -> tuple[bool, tuple[int, tuple[int, ...], str]]:
    """Versions in version order, the "other" row (version NULL) last."""
    return row["version"] is None, version_key(row["version"] or "")


def panel_versions(q: Query, r: Range) -> Result:
    day, complete = pick_day(q, r)
    rows = q(VERSIONS_IN_RANGE, {**range_params(r), "top": TOP_SERIES})
    totals: dict[date, int] = {}
    for row in rows:
        totals[row["day"]] = totals.get(row["day"], 0) + row["deployments"]
    for row in rows:
        row["share"] = _share(row["deployments"], totals[row["day"]])
    rows.sort(key=lambda x: (x["day"], *_version_order(x)))
    latest = sorted(
        (x for x in rows if x["day"] == day), key=lambda x: (x["others"] > 0, -x["deployments"], _version_order(x))
    )
    columns = ["day", "version", "deployments", "share", "others"]
    versions = sorted({x["version"] for x in rows if x["version"] is not None}, key=version_key)
    return Result(
        Table(columns, rows),
        {"day": day, "complete": complete, "versions": versions, "top": TOP_SERIES},
        {"adoption": Table(columns, latest)},
    )


def panel_os(q: Query, r: Range) -> Result:
    day, complete = pick_day(q, r)
    columns = ["day", "dimension", "value", "deployments", "share", "others"]
    rows: list[dict[str, Any]] = []
    if day is not None:
        for dimension, sql in OS_ON_DAY.items():
            part = q(sql, {"day": day, "top": TOP_KEYS})
            total = sum(x["deployments"] for x in part)
            rows += [
                {
                    "day": x["day"],
                    "dimension": dimension,
                    "value": x["value"],
                    "deployments": x["deployments"],
                    "share": _share(x["deployments"], total),
                    "others": x["others"],
                }
                for x in part
            ]
    return Result(Table(columns, rows), {"day": day, "complete": complete, "top": TOP_KEYS})


def panel_rejected(q: Query, r: Range) -> Result:
    params = range_params(r)
    by_reason = q(
        "SELECT day, reason, messages FROM rejected_daily "
        "WHERE day BETWEEN {start:Date} AND {end:Date} AND messages > 0 ORDER BY day, reason",
        params,
    )
    valid = {
        x["day"]: x
        for x in q(
            "SELECT day, deployments, cli_installs FROM fleet_daily WHERE day BETWEEN {start:Date} AND {end:Date}",
            params,
        )
    }
    rejected: dict[date, int] = {}
    for x in by_reason:
        rejected[x["day"]] = rejected.get(x["day"], 0) + x["messages"]
    rows = []
    for day in sorted(set(valid) | set(rejected)):
        n = rejected.get(day, 0)
        dep = valid[day]["deployments"] if day in valid else 0
        cli = valid[day]["cli_installs"] if day in valid else 0
        rows.append(
            {"day": day, "rejected": n, "deployments": dep, "cli_installs": cli, "rate": _share(n, n + dep + cli)}
        )
    reasons = sorted({x["reason"] for x in by_reason})
    return Result(
        Table(["day", "rejected", "deployments", "cli_installs", "rate"], rows),
        {"reasons": reasons},
        {"by_reason": Table(["day", "reason", "messages"], by_reason)},
    )


def panel_days(q: Query, r: Range) -> Result:
    n, first, last = day_bounds(q)
    end = default_end(last, r.today)
    row = {
        "first_day": first,
        "last_day": last,
        "days": n,
        "latest_complete_day": r.complete_until,
        "default_from": end - timedelta(days=DEFAULT_DAYS - 1),
        "default_to": end,
    }
    return Result(Table(list(row), [row]))


PANELS: dict[str, Callable[[Query, Range], Result]] = {
    "summary": panel_summary,
    "fleet": panel_fleet,
    "gateways-by-frequency-plan": panel_gateways_by_plan,
    "versions": panel_versions,
    "os": panel_os,
    "rejected": panel_rejected,
    "days": panel_days,
    "freshness": freshness.panel_freshness,  # whether the fleet over time is up to date (dashboard/freshness.py)
    # the fleet over time (carried-forward fleet, lifecycle, shape, regions, versions, CLI use and aliases, data quality)
    **analyst_panels.PANELS,
}


# -- HTTP ------------------------------------------------------------------------------------------------------


def csv_body(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([csv_cell(c) for c in table.columns])
    for row in table.rows:
        writer.writerow([csv_cell(json_value(row.get(c))) for c in table.columns])  # formulas neutralised
    return out.getvalue()


def panel_query(sessions: AnalystSessions) -> Query:
    """The project's own queries on the analysts' sessions, as rows of dicts."""

    def q(sql: str, parameters: dict[str, Any] | None) -> list[dict[str, Any]]:
        result = sessions.run(sql, parameters)
        return [dict(zip(result.columns, row)) for row in result.rows]

    return q


def run_panel(sessions: AnalystSessions, name: str, params: dict[str, str], today: date) -> tuple[Range, Result]:
    q = panel_query(sessions)
    r = resolve_range(params, q, today)
    return r, PANELS[name](q, r)


def routes(settings: Settings, sessions: AnalystSessions) -> list[BaseRoute]:
    def endpoint(name: str) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            params = dict(request.query_params)
            fmt = params.get("format", "json")
            if fmt not in ("json", "csv"):
                return error_response(400, "bad_request", f"format must be json or csv, not {fmt[:20]!r}")
            try:
                r, result = await asyncio.to_thread(run_panel, sessions, name, params, utc_today())
            except BadRequest as exc:
                return error_response(400, "bad_request", str(exc))
            except RequestRefused as exc:  # ClickHouse unavailable, busy, not migrated yet or over a limit
                return error_response(503, exc.code, exc.message, {"Retry-After": "5", **exc.headers})
            table_name = params.get("table", "rows")
            if table_name != "rows" and table_name not in result.tables:
                known = ", ".join(["rows", *result.tables])
                return error_response(400, "bad_request", f"table must be one of {known}, not {table_name[:40]!r}")
            if fmt == "csv":
                table = result.rows if table_name == "rows" else result.tables[table_name]
                suffix = "" if table_name == "rows" else f"-{table_name}"
                filename = f"tts-telemetry-{name}{suffix}-{r.start}-{r.end}.csv"
                return Response(
                    csv_body(table),
                    media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-cache"},
                )
            body = {
                "panel": name,
                "from": r.start,
                "to": r.end,
                **result.meta,
                "columns": result.rows.columns,
                "rows": result.rows.rows,
                "tables": {k: {"columns": t.columns, "rows": t.rows} for k, t in result.tables.items()},
            }
            return OrjsonResponse(json_value(body), headers={"Cache-Control": "no-cache"})

        return handle

    async def index(request: Request) -> Response:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html; charset=utf-8",
            headers={
                "Cache-Control": "no-cache",
                "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    out: list[BaseRoute] = [Route("/", index, methods=["GET", "HEAD"])]
    out += [Route(f"/api/{name}", endpoint(name), methods=["GET", "HEAD"]) for name in PANELS]
    out.append(Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"))
    return out
