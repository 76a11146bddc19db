"""A large synthetic fleet written straight into `snapshots` by ClickHouse itself (INSERT ... SELECT FROM numbers),
for the analyst bench: far faster than sending millions of simulator bodies through the pipeline, and shaped like
the simulator's fleet (docs/simulator.md): heavy-tailed sizes, regions, onboarding, churn, skipped days, a release
that deployments adopt over weeks, laggards, CLI installs that report on the days they are used, command usage.

Everything is a function of (deployment number, day index) through cityHash64, so the same arguments give the
same rows. Each day is one INSERT (the materialized views run on it as on the sink's inserts).

The columns come from the one declaration of a snapshot row (`core.rows.SnapshotRow`): each INSERT names
the columns it fills, in the row's order, from the expressions below. A column added to the row later is left to its
default (0, '' or empty) until an expression is given for it here; an expression for a column the row no longer has
stops the bench at once, saying which.
"""

from __future__ import annotations

from datetime import date, timedelta

from core.rows import SnapshotRow, columns
from sinks.clickhouse import ClickHouseStore

_PLANS = (
    "['EU_863_870_TTN', 'EU_863_870', 'US_902_928_FSB_2', 'AS_923', 'AU_915_928_FSB_2', 'IN_865_867', "
    "'KR_920_923_TTN', 'CN_470_510_FSB_11', 'EU_863_870_TTN', 'US_902_928_FSB_1', 'XX_MYSTERY']"
)

#: A deployment's snapshot on day {day} (the fleet's day number {index}), by column; `n` is the deployment's number.
IS_COLUMNS = {
    "day": "{day:Date}",
    "uid": "base64Encode(SHA512(concat('bench-', toString(n))))",
    "kind": "'is'",
    "received_at": "toDateTime64(toDateTime({day:Date}, 'UTC') + toIntervalSecond(cityHash64(n, 1) % 86400), 3, 'UTC')",
    "version": "bitShiftLeft(toUInt128(toUnixTimestamp64Milli(received_at)), 64) + toUInt128(n)",
    "source_partition": "toUInt32(n % 8)",
    "source_offset": "toUInt64({index:UInt32} * 1000000 + n)",
    "source_index": "toUInt32(0)",
    "default_uid": "false",
    "flags": "if(cityHash64(n, {index:UInt32}, 7) % 100 < 2, ['last_day>last_week'], [])",
    "operating_system": "'linux'",
    "arch": "if(n % 7 = 0, 'arm64', 'amd64')",
    "binary_version": "concat('3.', toString(minor), '.', toString(cityHash64(n, 8) % 3))",
    "version_major_minor": "concat('3.', toString(minor))",
    "golang_version": "'go1.23.4'",
    "gateways": "intDiv(end_devices, 25) + if(n % 10 < 7, 1, 0)",
    "gateways_by_frequency_plan": f"map(arrayElement({_PLANS}, 1 + cityHash64(n, 10) % 11), gateways)",
    "end_devices": "toUInt64(least(200000, floor(pow(1000000 / ((cityHash64(n, 9) % 1000000) + 1), 1.15) - 1)) "
    "* (1 + {index:UInt32} / 1000))",
    "active_end_devices": "intDiv(end_devices * 8, 10)",
    "active_last_day": "intDiv(end_devices * 3, 10)",
    "active_last_week": "intDiv(end_devices * 5, 10)",
    "active_last_month": "intDiv(end_devices * 7, 10)",
    "applications": "1 + intDiv(end_devices, 40)",
    "users_standard": "1 + intDiv(end_devices, 60)",
    "users_admin": "toUInt64(1)",
    "users_total": "NULL",
    "organizations": "intDiv(end_devices, 300)",
    "cli": "''",
    "body": "'{}'",
}

IS_FROM = """
FROM
(
    SELECT number AS n,
           -- base 3.21..3.34; two deployments in three upgrade to 3.35 some day of the two months around the window
           if(n % 3 != 0 AND {index:UInt32} >= cityHash64(n, 6) % 60, 35, 21 + cityHash64(n, 5) % 14) AS minor
    FROM numbers({deployments:UInt32})
)
WHERE {index:UInt32} >= if(n % 100 < 10, toInt64(cityHash64(n, 2) % 60) - 30, -1)   -- onboarding
  AND {index:UInt32} < if(n % 100 >= 95, cityHash64(n, 3) % 60, 1000)              -- churn
  AND cityHash64(n, {index:UInt32}, 4) % 100 >= 5                                  -- skipped days
"""

#: A 2025 CLI's report: the uses since its previous report (null lists when there were none), paths without the
#: binary name; older CLIs send {}.
_CLI_COMMANDS = """if(minor >= 34,
   if(cityHash64(n, {index:UInt32}, 25) % 7 = 0, '{"commands":null,"aliases":null}',
      concat('{"commands":[{"command_path":"end-devices list","execution_count":',
             toString(1 + cityHash64(n, {index:UInt32}, 26) % 12), ',"last_used_at":1735689600},{"command_path":"',
             arrayElement(['login', 'gateways list', 'applications create', 'end-devices get'], 1 + n % 4),
             '","execution_count":', toString(1 + n % 3), ',"last_used_at":1735689600}],"aliases":',
             if(n % 3 = 0, 'null',
                concat('[{"command_name":"end-devices","alias":"', arrayElement(['dev', 'ed', 'devices'], 1 + n % 5 % 3),
                       '","usage_count":', toString(1 + n % 4), '}]')),
             '}')),
   '{}')"""

#: A CLI install's snapshot on a day it is used (the counts are left to their defaults).
CLI_COLUMNS = {
    "day": "{day:Date}",
    "uid": "concat('0f8fad5b-d9cb-469f-a165-', leftPad(toString(n), 12, '0'))",
    "kind": "'cli'",
    "received_at": "toDateTime64(toDateTime({day:Date}, 'UTC') + toIntervalSecond(cityHash64(n, 21) % 86400), 3, 'UTC')",
    "version": "bitShiftLeft(toUInt128(toUnixTimestamp64Milli(received_at)), 64) + toUInt128(n)",
    "source_partition": "toUInt32(n % 8)",
    "source_offset": "toUInt64({index:UInt32} * 1000000 + 500000 + n)",
    "source_index": "toUInt32(0)",
    "default_uid": "false",
    "flags": "[]",
    "operating_system": "arrayElement(['darwin', 'linux', 'windows'], 1 + n % 3)",
    "arch": "if(n % 4 = 0, 'arm64', 'amd64')",
    "binary_version": "concat('3.', toString(minor), '.1')",
    "version_major_minor": "concat('3.', toString(minor))",
    "golang_version": "'go1.23.4'",
    "cli": _CLI_COMMANDS,
    "body": "'{}'",
}

CLI_FROM = """
FROM (SELECT number AS n, 28 + cityHash64(n, 22) % 8 AS minor FROM numbers({installs:UInt32}))
WHERE cityHash64(n, {index:UInt32}, 23) % 100 < 5 + cityHash64(n, 24) % 60
"""


def insert_sql(expressions: dict[str, str], source: str) -> str:
    """`INSERT INTO snapshots (columns) SELECT expressions <source>`: the columns of `SnapshotRow` that have an
    expression, in the row's order (the others take their defaults)."""
    declared = columns(SnapshotRow)
    unknown = sorted(set(expressions) - set(declared))
    if unknown:
        raise ValueError(
            f"bench/analyst_data.py has expressions for {unknown}, which a snapshot row does not have "
            f"(core/rows.py SnapshotRow: {', '.join(declared)}): remove or rename them"
        )
    names = [c for c in declared if c in expressions]
    select = ",\n    ".join(f"{expressions[c]} AS {c}" for c in names)
    return f"INSERT INTO snapshots ({', '.join(names)})\nSELECT\n    {select}\n{source}"


IS_DAY_SQL = insert_sql(IS_COLUMNS, IS_FROM)
CLI_DAY_SQL = insert_sql(CLI_COLUMNS, CLI_FROM)


def fill(
    store: ClickHouseStore, deployments: int, cli_installs: int, days: int, end: date, first_index: int = 0
) -> None:
    """Write `days` days ending `end`: one INSERT per day and kind, oldest first. `first_index` is the first day's
    number in the fleet's life (its onboarding, churn and upgrades go by it): continue a fill with its day count."""
    for i in range(days):
        day = end - timedelta(days=days - 1 - i)
        params = {"day": day, "index": first_index + i, "deployments": deployments, "installs": cli_installs}
        store.client.command(IS_DAY_SQL, parameters=params)
        if cli_installs:
            store.client.command(CLI_DAY_SQL, parameters=params)
