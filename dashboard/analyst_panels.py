"""The dashboard's panels on the fleet over time (docs/dashboard.md, "The fleet over time").

They read the analyst views of sinks/migrations/0002_analyst_depth.sql and 0006_cli_reports.sql: the carried-forward
fleet, lifecycle, retention, fleet shape, regions, version adoption, versions behind, CLI activity, command and
alias usage, and data quality. All of them read one pre-computed row per day (`analyst_daily`, refreshed by
ClickHouse) or per UID, so each answers in a few milliseconds whatever the fleet's size (bench/bench_analyst.py).
Same envelope, range rules, JSON and CSV as dashboard/panels.py, which registers these panels (both build on
dashboard/panel_model.py).

Single-day tables (the deployments far behind, CLI command and alias usage) show the latest complete day in the
range that has an analyst row (`analyst_day`), else its latest day with one (`complete: false`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from dashboard.panel_days import latest_day, range_params
from dashboard.panel_model import (
    FLEET_COLUMNS,
    TOP_JUMPS,
    TOP_KEYS,
    TOP_SERIES,
    Query,
    Range,
    Result,
    Table,
    summary_rows,
    version_key,
)

CARRIED_NOTE = "carried forward: each deployment counts with its latest report of the last 7 days"
LIFECYCLE_COLUMNS = ["active_1d", "active_7d", "active_30d", "new", "returning", "churned"]
#: CLI installs only: their new installs on a 2025 CLI (an install upgraded from 3.32 or older is one: the 2025 CLI
#: keeps its state in telemetry.json and makes a new UID) and on an older CLI (docs/analysts.md).
CLI_NEW_COLUMNS = ["new_2025_cli", "new_older_cli"]


CARRIED_DAYS = (
    "SELECT countIf(day <= {complete:Date}) AS n_complete, maxIf(day, day <= {complete:Date}) AS complete_day, "
    "count() AS n, max(day) AS last FROM fleet_daily_carried WHERE day BETWEEN {start:Date} AND {end:Date}"
)


def analyst_day(q: Query, r: Range) -> tuple[date | None, bool]:
    """The day a single-day table shows: the latest complete day in range with an analyst row, else the latest
    day in range with one (flagged incomplete), else None."""
    return latest_day(q, r, CARRIED_DAYS)


# SQL texts are constants: values travel as {name:Type} parameters (tests/test_reliability.py checks the source).
CARRIED_IN_RANGE = (
    "SELECT day, deployments, cli_installs, gateways, end_devices, active_end_devices, active_last_day, "
    "active_last_week, active_last_month, applications, users_standard, users_admin, organizations, "
    "default_uid_deployments, inconsistent_deployments FROM fleet_daily_carried "
    "WHERE day BETWEEN {start:Date} AND {end:Date} ORDER BY day"
)
CARRIED_ON_DAYS = (
    "SELECT day, deployments, cli_installs, gateways, end_devices, active_end_devices, active_last_day, "
    "active_last_week, active_last_month, applications, users_standard, users_admin, organizations, "
    "default_uid_deployments, inconsistent_deployments FROM fleet_daily_carried "
    "WHERE day IN {days:Array(Date)} ORDER BY day"
)
LIFECYCLE_SQL = {
    "is": "SELECT day, active_1d, active_7d, active_30d, new, returning, churned FROM deployment_lifecycle_daily "
    "WHERE day BETWEEN {start:Date} AND {end:Date} ORDER BY day",
    "cli": "SELECT day, active_1d, active_7d, active_30d, new, returning, churned, new_2025_cli, new_older_cli "
    "FROM cli_lifecycle_daily WHERE day BETWEEN {start:Date} AND {end:Date} ORDER BY day",
}
RETENTION_SQL = {
    "week": "SELECT kind, cohort, weeks_since AS periods_since, cohort_size, active, retention FROM retention_weekly "
    "WHERE cohort BETWEEN {first:Date} AND {end:Date} ORDER BY kind, cohort, periods_since",
    "month": "SELECT kind, cohort, months_since AS periods_since, cohort_size, active, retention FROM retention_monthly "
    "WHERE cohort BETWEEN {first:Date} AND {end:Date} ORDER BY kind, cohort, periods_since",
}


# Every list of keys is bounded in its SQL (TOP_KEYS, TOP_SERIES, TOP_JUMPS of dashboard/panel_model.py): the first
# keys, then one row for the rest (its key NULL, `others` = how many keys it stands for, its counts their sum), as in
# dashboard/panels.py. A series per key over the range keeps the keys first over the whole range.
ADOPTION_IN_RANGE = (
    # the TOP_SERIES newest versions of the range; per day, the older ones in one row (inner names v_*: an outer alias
    # would shadow the column it sums)
    "SELECT day, if(slot <= {top:UInt32}, any(v_version), NULL) AS version, sum(v_deployments) AS deployments, "
    "if(slot <= {top:UInt32}, any(v_above), NULL) AS deployments_at_or_above, "
    "any(v_active) AS active_deployments, "
    "if(slot <= {top:UInt32}, any(v_share), round(sum(v_deployments) / any(v_active), 6)) AS share, "
    "if(slot <= {top:UInt32}, any(v_share_above), NULL) AS share_at_or_above, "
    "if(slot <= {top:UInt32}, 0, count()) AS others "
    "FROM (SELECT *, least(dense_rank() OVER (ORDER BY v_ordinal DESC), {top:UInt32} + 1) AS slot "
    "FROM (SELECT day, version AS v_version, deployments AS v_deployments, deployments_at_or_above AS v_above, "
    "active_deployments AS v_active, share AS v_share, share_at_or_above AS v_share_above, "
    "toUInt32OrZero(splitByChar('.', version)[1]) * 1000 + toUInt32OrZero(splitByChar('.', version)[2]) AS v_ordinal "
    "FROM version_adoption_daily WHERE day BETWEEN {start:Date} AND {end:Date})) "
    "GROUP BY day, slot ORDER BY day, slot"
)
SPEED_NEWEST = (
    "SELECT version, first_seen, half_on, days_to_half, seen_on_first_day, count() OVER () AS listed "
    "FROM version_adoption_speed "
    "ORDER BY toUInt32OrZero(splitByChar('.', version)[1]) DESC, toUInt32OrZero(splitByChar('.', version)[2]) DESC "
    "LIMIT {top:UInt32}"
)
BEHIND_IN_RANGE = (
    "SELECT day, any(newest_version) AS newest_version, if(slot <= {top:UInt32}, any(behind), NULL) AS behind, "
    "sum(deployments) AS deployments, if(slot <= {top:UInt32}, 0, count()) AS others "
    "FROM (SELECT day, newest_version, behind, deployments, "
    "least(dense_rank() OVER (ORDER BY total DESC, behind), {top:UInt32} + 1) AS slot "
    "FROM (SELECT day, newest_version, behind, deployments, sum(deployments) OVER (PARTITION BY behind) AS total "
    "FROM versions_behind_daily WHERE day BETWEEN {start:Date} AND {end:Date})) "
    "GROUP BY day, slot ORDER BY day, slot > {top:UInt32}, behind"
)
CLI_ACTIVE_IN_RANGE = (
    # per dimension (one query: a query per dimension would read the view three times)
    "SELECT day, dimension, if(slot <= {top:UInt32}, any(value), NULL) AS value, sum(installs) AS installs, "
    "if(slot <= {top:UInt32}, 0, count()) AS others "
    "FROM (SELECT day, dimension, value, installs, "
    "least(dense_rank() OVER (PARTITION BY dimension ORDER BY total DESC, value), {top:UInt32} + 1) AS slot "
    "FROM (SELECT day, dimension, value, installs, sum(installs) OVER (PARTITION BY dimension, value) AS total "
    "FROM cli_installs_active_daily WHERE day BETWEEN {start:Date} AND {end:Date})) "
    "GROUP BY day, dimension, slot"
)
CLI_DIMENSIONS = ("version", "operating_system", "arch")
COMMANDS_ON_DAY = (
    "SELECT day, if(slot <= {top:UInt32}, any(command_path), NULL) AS command_path, sum(installs) AS installs, "
    "sum(executions) AS executions, any(active_installs) AS active_installs, "
    "if(slot <= {top:UInt32}, 0, count()) AS others "
    "FROM (SELECT day, command_path, installs, executions, active_installs, "
    "least(row_number() OVER (ORDER BY installs DESC, command_path), {top:UInt32} + 1) AS slot "
    "FROM cli_command_usage_daily WHERE day = {day:Date}) "
    "GROUP BY day, slot ORDER BY slot"
)
ALIASES_ON_DAY = (
    "SELECT day, if(slot <= {top:UInt32}, any(command_name), NULL) AS command_name, "
    "if(slot <= {top:UInt32}, any(alias), NULL) AS alias, sum(installs) AS installs, sum(uses) AS uses, "
    "if(slot <= {top:UInt32}, 0, count()) AS others "
    "FROM (SELECT day, command_name, alias, installs, uses, "
    "least(row_number() OVER (ORDER BY uses DESC, command_name, alias), {top:UInt32} + 1) AS slot "
    "FROM cli_alias_usage_daily WHERE day = {day:Date}) "
    "GROUP BY day, slot ORDER BY slot"
)
JUMPS_LARGEST = (
    "SELECT day, uid, metric, previous_day, previous, current, factor, count() OVER () AS listed "
    "FROM sender_jumps_daily WHERE day BETWEEN {start:Date} AND {end:Date} "
    "ORDER BY factor DESC, day DESC, uid, metric LIMIT {top:UInt32}"
)


def _with_rest(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """`rows` (each with `listed`: how many rows there were before the LIMIT) with `others` 0, and one more row for
    those left out (every column NULL, `others` their number), when any were."""
    listed = rows[0].pop("listed") if rows else 0
    for row in rows:
        row.pop("listed", None)
        row["others"] = 0
    if listed > len(rows):
        rows.append({**dict.fromkeys(columns), "others": listed - len(rows)})
    return rows


def _carried_rows(q: Query, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = q(sql, params)
    for row in rows:
        row["users"] = row["users_standard"] + row["users_admin"]
    return rows


# -- the carried-forward fleet ---------------------------------------------------------------------------------


def panel_fleet_carried(q: Query, r: Range) -> Result:
    """/api/fleet's rows, from fleet_daily_carried."""
    rows = _carried_rows(q, CARRIED_IN_RANGE, range_params(r))
    columns = FLEET_COLUMNS[:13] + ["users"] + FLEET_COLUMNS[13:]
    return Result(
        Table(columns, [{c: row[c] for c in columns} for row in rows]), {"fleet": "carried", "note": CARRIED_NOTE}
    )


def panel_summary_carried(q: Query, r: Range) -> Result:
    """/api/summary's cards, from fleet_daily_carried."""
    day, complete = analyst_day(q, r)
    columns = ["metric", "label", "day", "value", "week_before_day", "week_before", "change", "change_pct"]
    meta: dict[str, Any] = {
        "day": day,
        "complete": complete,
        "week_before_day": None,
        "fleet": "carried",
        "note": CARRIED_NOTE,
    }
    if day is None:
        return Result(Table(columns, []), meta)
    before = day - timedelta(days=7)
    by_day = {row["day"]: row for row in _carried_rows(q, CARRIED_ON_DAYS, {"days": [day, before]})}
    now, then = by_day[day], by_day.get(before)
    rows = summary_rows(day, before, now, then)
    return Result(Table(columns, rows), {**meta, "week_before_day": before})


# -- lifecycle and retention -----------------------------------------------------------------------------------


def panel_lifecycle(q: Query, r: Range) -> Result:
    """Active (1/7/30 days), new, returning and churned UIDs per day, deployments and CLI installs apart (G = 7); the
    new CLI installs split by CLI generation (null for deployments)."""
    rows = []
    for kind, sql in LIFECYCLE_SQL.items():
        rows += [
            {"day": x["day"], "kind": kind, **{c: x.get(c) for c in LIFECYCLE_COLUMNS + CLI_NEW_COLUMNS}}
            for x in q(sql, range_params(r))
        ]
    return Result(Table(["day", "kind", *LIFECYCLE_COLUMNS, *CLI_NEW_COLUMNS], rows), {"gap": 7})


def panel_retention(q: Query, r: Range) -> Result:
    """Retention of the cohorts first seen in the range: weekly (rows) and monthly (tables.monthly)."""
    out: dict[str, Table] = {}
    for period, sql in RETENTION_SQL.items():
        part = q(sql, {"first": _period_start(r.start, period), "end": r.end})
        out[period] = Table(["kind", "cohort", "periods_since", "cohort_size", "active", "retention"], part)
    return Result(out["week"], {}, {"monthly": out["month"]})


def _period_start(d: date, period: str) -> date:
    return d - timedelta(days=d.weekday()) if period == "week" else d.replace(day=1)


# -- fleet shape and regions -----------------------------------------------------------------------------------


def panel_fleet_shape(q: Query, r: Range) -> Result:
    """Deployments per size bucket (by gateways and by end devices) per day, as reported and carried forward."""
    rows = q(
        "SELECT day, dimension, bucket, bucket_min, deployments, deployments_carried FROM fleet_size_daily "
        "WHERE day BETWEEN {start:Date} AND {end:Date} ORDER BY day, dimension, bucket_min",
        range_params(r),
    )
    columns = ["day", "dimension", "bucket", "bucket_min", "deployments", "deployments_carried"]
    buckets = {
        dim: [b for _, b in sorted({(x["bucket_min"], x["bucket"]) for x in rows if x["dimension"] == dim})]
        for dim in ("gateways", "end_devices")
    }
    return Result(Table(columns, rows), {"buckets": buckets})


def panel_regions(q: Query, r: Range) -> Result:
    """Deployments and gateways per region per day, as reported and carried forward (frequency_plan_regions)."""
    rows = q(
        "SELECT day, region, deployments, gateways, deployments_carried, gateways_carried FROM regions_daily "
        "WHERE day BETWEEN {start:Date} AND {end:Date} ORDER BY day, region",
        range_params(r),
    )
    totals: dict[str, int] = {}
    for x in rows:
        totals[x["region"]] = totals.get(x["region"], 0) + x["gateways_carried"]
    regions = sorted(totals, key=lambda k: (-totals[k], k))
    rules = q("SELECT prefix, region FROM frequency_plan_regions ORDER BY region, prefix", None)
    return Result(
        Table(["day", "region", "deployments", "gateways", "deployments_carried", "gateways_carried"], rows),
        {"regions": regions},
        {"rules": Table(["prefix", "region"], rules)},
    )


# -- versions --------------------------------------------------------------------------------------------------


def _version_order(row: dict[str, Any]) -> tuple[bool, tuple[int, tuple[int, ...], str]]:
    """Versions in version order, the row of the others (version NULL) first: it holds the older ones."""
    return row["version"] is not None, version_key(row["version"] or "")


def panel_version_adoption(q: Query, r: Range) -> Result:
    """Per day and established version in the carried-forward fleet (the TOP_SERIES newest of the range, the older
    ones in one row): deployments, and the share on it or a newer version; tables.speed: per version (the TOP_KEYS
    newest), the days from its first sighting until it (or newer) ran on half the fleet."""
    rows = q(ADOPTION_IN_RANGE, {**range_params(r), "top": TOP_SERIES})
    rows.sort(key=lambda x: (x["day"], *_version_order(x)))
    speed_columns = ["version", "first_seen", "half_on", "days_to_half", "seen_on_first_day"]
    speed = _with_rest(q(SPEED_NEWEST, {"top": TOP_KEYS}), speed_columns)
    for x in speed:
        if x["version"] is not None:
            x["seen_on_first_day"] = bool(x["seen_on_first_day"])
    speed.sort(key=_version_order)
    versions = sorted({x["version"] for x in rows if x["version"] is not None}, key=version_key)
    return Result(
        Table(
            [
                "day",
                "version",
                "deployments",
                "deployments_at_or_above",
                "active_deployments",
                "share",
                "share_at_or_above",
                "others",
            ],
            rows,
        ),
        {"versions": versions, "top": TOP_SERIES},
        {"speed": Table([*speed_columns, "others"], speed)},
    )


def panel_versions_behind(q: Query, r: Range) -> Result:
    """Carried-forward deployments per number of minor versions behind the newest, per day (the TOP_SERIES numbers
    with the most deployments over the range, per day the rest in one row); tables.deployments: the largest
    deployments 3 or more behind on the panel's day."""
    rows = q(BEHIND_IN_RANGE, {**range_params(r), "top": TOP_SERIES})
    day, complete = analyst_day(q, r)
    top: list[dict[str, Any]] = []
    if day is not None:
        top = q(
            "SELECT day, uid, version, behind, end_devices, gateways FROM deployments_behind_daily "
            "WHERE day = {day:Date} ORDER BY end_devices DESC, uid",
            {"day": day},
        )
    return Result(
        Table(["day", "newest_version", "behind", "deployments", "others"], rows),
        {"day": day, "complete": complete, "top": TOP_SERIES},
        {"deployments": Table(["day", "uid", "version", "behind", "end_devices", "gateways"], top)},
    )


# -- CLI and data quality --------------------------------------------------------------------------------------


def panel_cli(q: Query, r: Range) -> Result:
    """CLI installs active in the last 30 days by version, OS and arch, per day; tables.commands: command usage on
    the panel's day (the sum of every report of its 30 days); tables.new_installs: the new installs per day, on a
    2025 CLI (re-identified upgrades among them) and on an older one."""
    rows = q(CLI_ACTIVE_IN_RANGE, {**range_params(r), "top": TOP_SERIES})  # days x 3 x (TOP_SERIES + 1) rows at most
    rows.sort(key=lambda x: (x["day"], CLI_DIMENSIONS.index(x["dimension"]), x["others"] > 0, x["value"] or ""))
    day, complete = analyst_day(q, r)
    commands: list[dict[str, Any]] = []
    if day is not None:
        commands = q(COMMANDS_ON_DAY, {"day": day, "top": TOP_KEYS})
    new = q(
        "SELECT day, new, new_2025_cli, new_older_cli FROM cli_lifecycle_daily "
        "WHERE day BETWEEN {start:Date} AND {end:Date} ORDER BY day",
        range_params(r),
    )
    return Result(
        Table(["day", "dimension", "value", "installs", "others"], rows),
        {"day": day, "complete": complete, "top": TOP_SERIES, "top_commands": TOP_KEYS},
        {
            "commands": Table(["day", "command_path", "installs", "executions", "active_installs", "others"], commands),
            "new_installs": Table(["day", "new", *CLI_NEW_COLUMNS], new),
        },
    )


def panel_cli_aliases(q: Query, r: Range) -> Result:
    """The aliases 2025 CLIs used in the 30 days up to the panel's day: per (command, alias), the installs that used
    it and its uses (the sum of every report), most used first."""
    day, complete = analyst_day(q, r)
    rows: list[dict[str, Any]] = []
    if day is not None:
        rows = q(ALIASES_ON_DAY, {"day": day, "top": TOP_KEYS})
    return Result(
        Table(["day", "command_name", "alias", "installs", "uses", "others"], rows),
        {"day": day, "complete": complete, "top": TOP_KEYS},
    )


def panel_data_quality(q: Query, r: Range) -> Result:
    """Per day: deployments that reported, on the default UID, with inconsistent figures, with a jump beyond a
    factor of 10; tables.jumps: every jump in the range."""
    rows = q(
        "SELECT day, deployments, default_uid_deployments, inconsistent_deployments, jumping_deployments, jumps "
        "FROM data_quality_daily WHERE day BETWEEN {start:Date} AND {end:Date} ORDER BY day",
        range_params(r),
    )
    jump_columns = ["day", "uid", "metric", "previous_day", "previous", "current", "factor"]
    jumps = q(JUMPS_LARGEST, {**range_params(r), "top": TOP_JUMPS})  # the largest; the rest counted in one row
    jumps.sort(key=lambda x: (x["day"], x["uid"], x["metric"]))
    jumps = _with_rest(jumps, jump_columns)
    return Result(
        Table(
            [
                "day",
                "deployments",
                "default_uid_deployments",
                "inconsistent_deployments",
                "jumping_deployments",
                "jumps",
            ],
            rows,
        ),
        {"factor": 10, "top": TOP_JUMPS},
        {"jumps": Table([*jump_columns, "others"], jumps)},
    )


PANELS: dict[str, Callable[[Query, Range], Result]] = {
    "summary-carried": panel_summary_carried,
    "fleet-carried": panel_fleet_carried,
    "lifecycle": panel_lifecycle,
    "retention": panel_retention,
    "fleet-shape": panel_fleet_shape,
    "regions": panel_regions,
    "version-adoption": panel_version_adoption,
    "versions-behind": panel_versions_behind,
    "cli": panel_cli,
    "cli-aliases": panel_cli_aliases,
    "data-quality": panel_data_quality,
}
