"""A large synthetic fleet written straight into `snapshots` by ClickHouse itself (INSERT ... SELECT FROM numbers),
for the analyst bench: far faster than sending millions of simulator bodies through the pipeline, and shaped like
the simulator's fleet (docs/simulator.md): heavy-tailed sizes, regions, onboarding, churn, skipped days, a release
that deployments adopt over weeks, laggards, CLI installs that report on the days they are used, command usage.

Everything is a function of (deployment number, day index) through cityHash64, so the same arguments give the
same rows. Each day is one INSERT (the materialized views run on it as on the sink's inserts).
"""

from __future__ import annotations

from datetime import date, timedelta

from sinks.clickhouse import ClickHouseStore

_PLANS = (
    "['EU_863_870_TTN', 'EU_863_870', 'US_902_928_FSB_2', 'AS_923', 'AU_915_928_FSB_2', 'IN_865_867', "
    "'KR_920_923_TTN', 'CN_470_510_FSB_11', 'EU_863_870_TTN', 'US_902_928_FSB_1', 'XX_MYSTERY']"
)

IS_DAY_SQL = f"""
INSERT INTO snapshots
SELECT
    {{day:Date}} AS day,
    base64Encode(SHA512(concat('bench-', toString(n)))) AS uid,
    'is' AS kind,
    toDateTime64(toDateTime({{day:Date}}, 'UTC') + toIntervalSecond(cityHash64(n, 1) % 86400), 3, 'UTC') AS received_at,
    bitShiftLeft(toUInt128(toUnixTimestamp64Milli(received_at)), 64) + toUInt128(n) AS version,
    toUInt32(n % 8) AS source_partition,
    toUInt64({{index:UInt32}} * 1000000 + n) AS source_offset,
    toUInt32(0) AS source_index,
    false AS default_uid,
    if(cityHash64(n, {{index:UInt32}}, 7) % 100 < 2, ['last_day>last_week'], []) AS flags,
    'linux' AS operating_system,
    if(n % 7 = 0, 'arm64', 'amd64') AS arch,
    concat('3.', toString(minor), '.', toString(cityHash64(n, 8) % 3)) AS binary_version,
    concat('3.', toString(minor)) AS version_major_minor,
    'go1.23.4' AS golang_version,
    intDiv(end_devices, 25) + if(n % 10 < 7, 1, 0) AS gateways,
    map(arrayElement({_PLANS}, 1 + cityHash64(n, 10) % 11), gateways) AS gateways_by_frequency_plan,
    toUInt64(least(200000, floor(pow(1000000 / ((cityHash64(n, 9) % 1000000) + 1), 1.15) - 1)) * (1 + {{index:UInt32}} / 1000)) AS end_devices,
    intDiv(end_devices * 8, 10) AS active_end_devices,
    intDiv(end_devices * 3, 10) AS active_last_day,
    intDiv(end_devices * 5, 10) AS active_last_week,
    intDiv(end_devices * 7, 10) AS active_last_month,
    1 + intDiv(end_devices, 40) AS applications,
    1 + intDiv(end_devices, 60) AS users_standard,
    toUInt64(1) AS users_admin,
    NULL AS users_total,
    intDiv(end_devices, 300) AS organizations,
    '' AS cli,
    '{{}}' AS body
FROM
(
    SELECT number AS n,
           -- base 3.21..3.34; two deployments in three upgrade to 3.35 some day of the two months around the window
           if(n % 3 != 0 AND {{index:UInt32}} >= cityHash64(n, 6) % 60, 35, 21 + cityHash64(n, 5) % 14) AS minor
    FROM numbers({{deployments:UInt32}})
)
WHERE {{index:UInt32}} >= if(n % 100 < 10, toInt64(cityHash64(n, 2) % 60) - 30, -1)   -- onboarding
  AND {{index:UInt32}} < if(n % 100 >= 95, cityHash64(n, 3) % 60, 1000)              -- churn
  AND cityHash64(n, {{index:UInt32}}, 4) % 100 >= 5                                  -- skipped days
"""

CLI_DAY_SQL = """
INSERT INTO snapshots (day, uid, kind, received_at, version, source_partition, source_offset, default_uid, flags,
                       operating_system, arch, binary_version, version_major_minor, golang_version, cli, body)
SELECT
    {day:Date}, concat('0f8fad5b-d9cb-469f-a165-', leftPad(toString(n), 12, '0')), 'cli',
    toDateTime64(toDateTime({day:Date}, 'UTC') + toIntervalSecond(cityHash64(n, 21) % 86400), 3, 'UTC') AS received_at,
    bitShiftLeft(toUInt128(toUnixTimestamp64Milli(received_at)), 64) + toUInt128(n),
    toUInt32(n % 8), toUInt64({index:UInt32} * 1000000 + 500000 + n), false, [],
    arrayElement(['darwin', 'linux', 'windows'], 1 + n % 3), if(n % 4 = 0, 'arm64', 'amd64'),
    concat('3.', toString(minor), '.1'), concat('3.', toString(minor)), 'go1.23.4',
    -- a 2025 CLI: the uses since its previous report (null lists when there were none), paths without the binary
    if(minor >= 34,
       if(cityHash64(n, {index:UInt32}, 25) % 7 = 0, '{"commands":null,"aliases":null}',
          concat('{"commands":[{"command_path":"end-devices list","execution_count":',
                 toString(1 + cityHash64(n, {index:UInt32}, 26) % 12), ',"last_used_at":1735689600},{"command_path":"',
                 arrayElement(['login', 'gateways list', 'applications create', 'end-devices get'], 1 + n % 4),
                 '","execution_count":', toString(1 + n % 3), ',"last_used_at":1735689600}],"aliases":',
                 if(n % 3 = 0, 'null',
                    concat('[{"command_name":"end-devices","alias":"', arrayElement(['dev', 'ed', 'devices'], 1 + n % 5 % 3),
                           '","usage_count":', toString(1 + n % 4), '}]')),
                 '}')),
       '{}'),
    '{}'
FROM (SELECT number AS n, 28 + cityHash64(n, 22) % 8 AS minor FROM numbers({installs:UInt32}))
WHERE cityHash64(n, {index:UInt32}, 23) % 100 < 5 + cityHash64(n, 24) % 60
"""


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
