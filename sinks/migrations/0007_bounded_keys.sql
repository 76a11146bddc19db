-- No sender sets the fleet's figures alone, and no view grows with its keys (the security test's findings 5 and 6):
--   * the newest version: the newest major.minor that at least max(3, 1 %) of the day's carried-forward deployments
--     run (a release build of it, not -dev). A version on fewer deployments still shows in the version shares
--     (deployments_by_version_daily, versions_carried), but is not the newest: one forged message with
--     binary_version "3.999.0" once made every real deployment 964 minor versions behind for 7 days;
--   * analyst_daily.versions_established: the versions that pass that bar on the day; version_adoption_daily and
--     with it version_adoption_speed list only those;
--   * the views over analyst_daily's maps read each map's keys and values side by side (ARRAY JOIN of both), never
--     `map[key]` per key: that lookup is linear in the map, so a view of n keys cost n^2 (the CLI command panel
--     needed more than 1 GiB for 96,000 command paths);
--   * every day is recomputed once with the new computation (one more counted change per day).
-- analyst_daily and its readers keep their names and columns (analyst_daily gains versions_established, last).

DROP VIEW IF EXISTS analyst_daily_refresh;

DROP VIEW IF EXISTS analyst_compute;

ALTER TABLE analyst_daily ADD COLUMN IF NOT EXISTS versions_established Array(String);

-- Everything analyst_daily holds, computed from snapshots FINAL (and cli_reports) for the given days (any look-backs,
-- any jump factor, any gap): analyst_compute(days = [...], seen = [], lookback = 7, cli_lookback = 30, factor = 10,
-- gap = 7). `seen`: per day, the change count the caller read before (stored as inputs_seen). UIDs are grouped by
-- their 128-bit SipHash (as ClickHouse's uniqExact does). Its columns are analyst_daily's, in order.
CREATE VIEW analyst_compute AS
WITH (SELECT groupArray((prefix, region)) FROM frequency_plan_regions) AS region_rules
SELECT
    day,
    now64(6, 'UTC') AS computed_at,
    {seen:Array(UInt64)}[indexOf({days:Array(Date)}, day)] AS inputs_seen,
    i.deployments AS deployments, c.cli_installs AS cli_installs,
    i.gateways AS gateways, i.end_devices AS end_devices, i.active_end_devices AS active_end_devices,
    i.active_last_day AS active_last_day, i.active_last_week AS active_last_week, i.active_last_month AS active_last_month,
    i.applications AS applications, i.users_standard AS users_standard, i.users_admin AS users_admin,
    i.organizations AS organizations, i.default_uid_deployments AS default_uid_deployments,
    i.inconsistent_deployments AS inconsistent_deployments, i.reported_deployments AS reported_deployments,
    i.reported_default_uid_deployments AS reported_default_uid_deployments,
    i.reported_inconsistent_deployments AS reported_inconsistent_deployments,
    i.gateway_buckets AS gateway_buckets, i.gateway_buckets_carried AS gateway_buckets_carried,
    i.end_device_buckets AS end_device_buckets, i.end_device_buckets_carried AS end_device_buckets_carried,
    i.region_deployments AS region_deployments, i.region_deployments_carried AS region_deployments_carried,
    i.region_gateways AS region_gateways, i.region_gateways_carried AS region_gateways_carried,
    i.versions_carried AS versions_carried,
    -- per version, the deployments on it or a newer one: a running sum down the versions, newest first
    CAST(mapFromArrays(
             arraySort(k -> -toInt64(if(match(k, '^[0-9]{1,3}\\.[0-9]{1,3}$'), toUInt32OrZero(splitByChar('.', k)[1]) * 1000 + toUInt32OrZero(splitByChar('.', k)[2]), 0)),
                       mapKeys(i.versions_carried)),
             arrayCumSum(arrayMap(k -> if(k = 'unknown', 0, i.versions_carried[k]),
                                  arraySort(k -> -toInt64(if(match(k, '^[0-9]{1,3}\\.[0-9]{1,3}$'), toUInt32OrZero(splitByChar('.', k)[1]) * 1000 + toUInt32OrZero(splitByChar('.', k)[2]), 0)),
                                            mapKeys(i.versions_carried)))))
         AS Map(LowCardinality(String), UInt64)) AS versions_at_or_above_carried,
    i.newest_version AS newest_version,
    i.versions_behind_carried AS versions_behind_carried,
    c.cli_active_installs AS cli_active_installs, c.cli_versions_active AS cli_versions_active,
    c.cli_os_active AS cli_os_active, c.cli_arch_active AS cli_arch_active,
    cu.command_installs AS cli_command_installs, cu.command_executions AS cli_command_executions,
    i.behind_top AS behind_top, i.jumps AS jumps,
    li.active_1d AS is_active_1d, li.active_7d AS is_active_7d, li.active_30d AS is_active_30d, li.new AS is_new,
    li.returning AS is_returning, li.churned AS is_churned,
    lc.active_1d AS cli_active_1d, lc.active_7d AS cli_active_7d, lc.active_30d AS cli_active_30d, lc.new AS cli_new,
    lc.returning AS cli_returning, lc.churned AS cli_churned,
    cu.aliases AS cli_aliases, cn.new_2025 AS cli_new_2025, cn.new_older AS cli_new_older,
    i.versions_established AS versions_established
FROM
(
    -- Identity Server deployments. Each snapshot of day d reaches the days d .. d + lookback; per (D, UID) the
    -- latest of [D - lookback + 1, D] is carried (argMax over plain columns and the plan map)
    -- and the latest before D is what a jump on D is measured against.
    SELECT
        day,
        countIf(carried) AS deployments,
        sumIf(gateways, carried) AS gateways, sumIf(end_devices, carried) AS end_devices,
        sumIf(active_end_devices, carried) AS active_end_devices, sumIf(active_last_day, carried) AS active_last_day,
        sumIf(active_last_week, carried) AS active_last_week, sumIf(active_last_month, carried) AS active_last_month,
        sumIf(applications, carried) AS applications, sumIf(users_standard, carried) AS users_standard,
        sumIf(users_admin, carried) AS users_admin, sumIf(organizations, carried) AS organizations,
        countIf(carried AND default_uid) AS default_uid_deployments, countIf(carried AND inconsistent) AS inconsistent_deployments,
        countIf(reported) AS reported_deployments, countIf(reported AND default_uid) AS reported_default_uid_deployments,
        countIf(reported AND inconsistent) AS reported_inconsistent_deployments,
        sumMapIf(map(gateway_bucket, toUInt64(1)), reported) AS gateway_buckets,
        sumMapIf(map(gateway_bucket, toUInt64(1)), carried) AS gateway_buckets_carried,
        sumMapIf(map(end_device_bucket, toUInt64(1)), reported) AS end_device_buckets,
        sumMapIf(map(end_device_bucket, toUInt64(1)), carried) AS end_device_buckets_carried,
        CAST(sumMapIf(deployment_regions, arrayMap(r -> toUInt64(1), deployment_regions), reported) AS Map(LowCardinality(String), UInt64)) AS region_deployments,
        CAST(sumMapIf(deployment_regions, arrayMap(r -> toUInt64(1), deployment_regions), carried) AS Map(LowCardinality(String), UInt64)) AS region_deployments_carried,
        CAST(sumMapIf(plan_regions, plan_gateways, reported) AS Map(LowCardinality(String), UInt64)) AS region_gateways,
        CAST(sumMapIf(plan_regions, plan_gateways, carried) AS Map(LowCardinality(String), UInt64)) AS region_gateways_carried,
        sumMapIf(map(if(ordinal = 0, 'unknown', concat(toString(intDiv(ordinal, 1000)), '.', toString(ordinal % 1000))), toUInt64(1)), carried) AS versions_carried,
        if(any(newest) > 0, concat(toString(intDiv(any(newest), 1000)), '.', toString(any(newest) % 1000)), '') AS newest_version,
        sumMapIf(map(toUInt32(greatest(toInt64(newest) - toInt64(ordinal), 0)), toUInt64(1)), carried AND ordinal > 0) AS versions_behind_carried,
        -- the 25 largest (by end devices) of the deployments 3 or more minor versions behind
        arraySlice(arraySort(x -> (-toInt64(x.4), x.1),
                             groupArrayIf((uid, concat(toString(intDiv(ordinal, 1000)), '.', toString(ordinal % 1000)),
                                           toUInt32(newest - ordinal), row_end_devices, gateways_effective),
                                          carried AND ordinal > 0 AND toInt64(newest) - toInt64(ordinal) >= 3)), 1, 25) AS behind_top,
        arraySort(groupArrayArray(uid_jumps)) AS jumps,
        arraySort(groupUniqArrayIf(concat(toString(intDiv(ordinal, 1000)), '.', toString(ordinal % 1000)), established)) AS versions_established
    FROM
    (
        SELECT
            target AS day, uid, carried, reported, default_uid, inconsistent, gateways, gateways_effective, end_devices,
            end_devices AS row_end_devices, active_end_devices,
            active_last_day, active_last_week, active_last_month, applications, users_standard, users_admin, organizations,
            ordinal, established,
            -- the newest version: the newest that passes the bar (established, below), never one deployment's alone
            maxIf(ordinal, established) OVER by_version AS newest,
            multiIf(gateways_effective = 0, 0, gateways_effective < 10, 1, gateways_effective < 100, 10,
                    gateways_effective < 1000, 100, gateways_effective < 10000, 1000, 10000) AS gateway_bucket,
            multiIf(end_devices = 0, 0, end_devices < 10, 1, end_devices < 100, 10, end_devices < 1000, 100,
                    end_devices < 10000, 1000, 10000) AS end_device_bucket,
            -- the plan map as ClickHouse holds it: no key is ever written into text and split again
            mapKeys(plans) AS plan_ids,
            arrayMap(p -> if(empty(arrayFirst(r -> startsWith(p, r.1), region_rules).2), 'other',
                             arrayFirst(r -> startsWith(p, r.1), region_rules).2), plan_ids) AS plan_regions,
            mapValues(plans) AS plan_gateways,
            arrayDistinct(arrayFilter((r, g) -> g > 0, plan_regions, plan_gateways)) AS deployment_regions,
            if(reported AND prev_day > toDate(0),
               arrayMap(m -> (uid, m.1, prev_day, m.2, m.3),
                        arrayFilter(m -> greatest(m.2, m.3) >= 100
                                         AND toUInt128(greatest(m.2, m.3)) > toUInt128({factor:UInt32}) * greatest(least(m.2, m.3), 1),
                                    [('end_devices', prev_end_devices, end_devices), ('gateways', prev_gateways, gateways_effective),
                                     ('applications', prev_applications, applications), ('users', prev_users, users_standard + users_admin),
                                     ('organizations', prev_organizations, organizations)])),
               []) AS uid_jumps
        FROM
        (
            -- a version passes the bar on a day (established) when at least max(3, 1 %) of the day's carried-forward
            -- deployments run a release build of it (not -dev); one forged deployment cannot make a version newest
            SELECT *,
                   carried AND NOT dev AND ordinal > 0
                   AND countIf(carried AND NOT dev) OVER on_version >= 3
                   AND countIf(carried AND NOT dev) OVER on_version * 100 >= countIf(carried) OVER by_version AS established
            FROM
        (
            SELECT
                target, s.key AS key,
                any(s.uid) AS uid,
                maxIf(s.day, s.day > target - {lookback:UInt32}) > toDate(0) AS carried,
                max(s.day) = target AS reported,
                argMaxIf(s.default_uid, s.day, s.day > target - {lookback:UInt32}) AS default_uid,
                argMaxIf(s.inconsistent, s.day, s.day > target - {lookback:UInt32}) AS inconsistent,
                argMaxIf(s.gateways, s.day, s.day > target - {lookback:UInt32}) AS gateways,
                argMaxIf(s.gateways_effective, s.day, s.day > target - {lookback:UInt32}) AS gateways_effective,
                argMaxIf(s.end_devices, s.day, s.day > target - {lookback:UInt32}) AS end_devices,
                argMaxIf(s.active_end_devices, s.day, s.day > target - {lookback:UInt32}) AS active_end_devices,
                argMaxIf(s.active_last_day, s.day, s.day > target - {lookback:UInt32}) AS active_last_day,
                argMaxIf(s.active_last_week, s.day, s.day > target - {lookback:UInt32}) AS active_last_week,
                argMaxIf(s.active_last_month, s.day, s.day > target - {lookback:UInt32}) AS active_last_month,
                argMaxIf(s.applications, s.day, s.day > target - {lookback:UInt32}) AS applications,
                argMaxIf(s.users_standard, s.day, s.day > target - {lookback:UInt32}) AS users_standard,
                argMaxIf(s.users_admin, s.day, s.day > target - {lookback:UInt32}) AS users_admin,
                argMaxIf(s.organizations, s.day, s.day > target - {lookback:UInt32}) AS organizations,
                argMaxIf(s.ordinal, s.day, s.day > target - {lookback:UInt32}) AS ordinal,
                argMaxIf(s.dev, s.day, s.day > target - {lookback:UInt32}) AS dev,
                argMaxIf(s.plans, s.day, s.day > target - {lookback:UInt32}) AS plans,
                maxIf(s.day, s.day < target) AS prev_day,
                argMaxIf(s.gateways_effective, s.day, s.day < target) AS prev_gateways,
                argMaxIf(s.end_devices, s.day, s.day < target) AS prev_end_devices,
                argMaxIf(s.applications, s.day, s.day < target) AS prev_applications,
                argMaxIf(s.users_standard + s.users_admin, s.day, s.day < target) AS prev_users,
                argMaxIf(s.organizations, s.day, s.day < target) AS prev_organizations
            FROM
            (
                SELECT day, uid, sipHash128(uid) AS key, toUInt8(default_uid) AS default_uid, toUInt8(notEmpty(flags)) AS inconsistent,
                       gateways, end_devices, active_end_devices, active_last_day, active_last_week, active_last_month,
                       applications, users_standard, users_admin, organizations,
                       if(match(version_major_minor, '^[0-9]{1,3}\\.[0-9]{1,3}$'), toUInt32OrZero(splitByChar('.', version_major_minor)[1]) * 1000 + toUInt32OrZero(splitByChar('.', version_major_minor)[2]), 0) AS ordinal,
                       toUInt8(position(binary_version, '-dev') > 0) AS dev,
                       if(gateways > 0, gateways, arraySum(mapValues(gateways_by_frequency_plan))) AS gateways_effective,
                       gateways_by_frequency_plan AS plans
                FROM snapshots FINAL
                WHERE kind = 'is' AND notEmpty({days:Array(Date)})
                  AND day >= arrayMin({days:Array(Date)}) - {lookback:UInt32} AND day <= arrayMax({days:Array(Date)})
            ) AS s
            ARRAY JOIN arrayFilter(t -> t >= s.day AND t <= s.day + {lookback:UInt32}, {days:Array(Date)}) AS target
            GROUP BY target, s.key
        )
            -- both sorted as by_version: one sort (peers of an ordinal are the rows on that version)
            WINDOW on_version AS (PARTITION BY target ORDER BY ordinal RANGE BETWEEN CURRENT ROW AND CURRENT ROW),
                   by_version AS (PARTITION BY target ORDER BY ordinal ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
        )
        WINDOW by_version AS (PARTITION BY target ORDER BY ordinal ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
    )
    GROUP BY day
) AS i
FULL OUTER JOIN
(
    -- CLI installs: per (D, UID) the latest report of the look-backs (7 days for fleet_daily_carried, cli_lookback
    -- for the active installs). Their command and alias usage is the sum of every report: cu below.
    SELECT
        day,
        countIf(last_day > day - {lookback:UInt32}) AS cli_installs,
        countIf(last_day > day - {cli_lookback:UInt32}) AS cli_active_installs,
        sumMapIf(map(version, toUInt64(1)), last_day > day - {cli_lookback:UInt32}) AS cli_versions_active,
        sumMapIf(map(operating_system, toUInt64(1)), last_day > day - {cli_lookback:UInt32}) AS cli_os_active,
        sumMapIf(map(arch, toUInt64(1)), last_day > day - {cli_lookback:UInt32}) AS cli_arch_active
    FROM
    (
        SELECT target AS day, max(s.day) AS last_day,
               argMax(s.version_major_minor, s.day) AS version, argMax(s.operating_system, s.day) AS operating_system,
               argMax(s.arch, s.day) AS arch
        FROM
        (
            SELECT day, sipHash128(uid) AS key, toString(version_major_minor) AS version_major_minor,
                   toString(operating_system) AS operating_system, toString(arch) AS arch
            FROM snapshots FINAL
            WHERE kind = 'cli' AND notEmpty({days:Array(Date)})
              AND day > arrayMin({days:Array(Date)}) - greatest({lookback:UInt32}, {cli_lookback:UInt32})
              AND day <= arrayMax({days:Array(Date)})
        ) AS s
        ARRAY JOIN arrayFilter(t -> t >= s.day AND t < s.day + greatest({lookback:UInt32}, {cli_lookback:UInt32}), {days:Array(Date)}) AS target
        GROUP BY target, s.key
    )
    GROUP BY day
) AS c USING day
LEFT JOIN
(
    SELECT * FROM lifecycle_daily(kind = 'is', gap = {gap:UInt32}, first = arrayMin({days:Array(Date)}), last = arrayMax({days:Array(Date)}))
) AS li USING day
LEFT JOIN
(
    SELECT * FROM lifecycle_daily(kind = 'cli', gap = {gap:UInt32}, first = arrayMin({days:Array(Date)}), last = arrayMax({days:Array(Date)}))
) AS lc USING day
LEFT JOIN
(
    SELECT day, command_installs, command_executions, aliases
    FROM cli_usage_compute(days = {days:Array(Date)}, lookback = {cli_lookback:UInt32})
) AS cu USING day
LEFT JOIN
(
    -- the CLI installs first seen on D, by their report of D (its latest): on a 2025 CLI (one that reports command
    -- usage) or on an older one
    SELECT s.day AS day, countIf(s.reports_usage) AS new_2025, countIf(NOT s.reports_usage) AS new_older
    FROM
    (
        SELECT day, uid, (JSONHas(cli, 'commands') OR JSONHas(cli, 'aliases')
                OR arrayExists(kv -> JSONType(kv.2) = 'Object' AND (JSONHas(kv.2, 'commands') OR JSONHas(kv.2, 'aliases')),
                               JSONExtractKeysAndValuesRaw(cli))) AS reports_usage
        FROM snapshots FINAL
        WHERE kind = 'cli' AND has({days:Array(Date)}, day)
    ) AS s
    INNER JOIN
    (
        SELECT uid, min(first_day) AS first_day FROM uid_activity WHERE kind = 'cli' GROUP BY uid
    ) AS f ON f.uid = s.uid AND f.first_day = s.day
    GROUP BY day
) AS cn USING day;

CREATE MATERIALIZED VIEW analyst_daily_refresh
REFRESH EVERY 10 SECOND APPEND TO analyst_daily AS
WITH (SELECT groupArray((day, inputs)) FROM analyst_daily_pending) AS due
SELECT * FROM analyst_compute(days = due.1, seen = due.2, lookback = 7, cli_lookback = 30, factor = 10, gap = 7);

-- Deployments per major.minor version in the carried-forward fleet, and the share on that version or newer: the
-- versions that pass the bar on the day (versions_established) only. Keys and values side by side.
CREATE OR REPLACE VIEW version_adoption_daily AS
SELECT a.day AS day, version, on_version AS deployments,
       a.versions_at_or_above_carried[version] AS deployments_at_or_above,
       a.deployments AS active_deployments,
       round(on_version / a.deployments, 6) AS share,
       round(a.versions_at_or_above_carried[version] / a.deployments, 6) AS share_at_or_above
FROM analyst_daily AS a FINAL
ARRAY JOIN mapKeys(a.versions_carried) AS version, mapValues(a.versions_carried) AS on_version
WHERE has(a.versions_established, version);

-- How many minor versions behind the newest version (the newest that passes the bar) each carried-forward deployment
-- is; deployments with an unparseable version are left out.
CREATE OR REPLACE VIEW versions_behind_daily AS
SELECT day, newest_version, behind, on_behind AS deployments
FROM analyst_daily FINAL
ARRAY JOIN mapKeys(versions_behind_carried) AS behind, mapValues(versions_behind_carried) AS on_behind;

-- CLI installs active in the last 30 days (a report in [D-29, D]), by their latest report's version, OS and arch.
CREATE OR REPLACE VIEW cli_installs_active_daily AS
SELECT day, dimension, value, installs
FROM
(
    SELECT day, 'version' AS dimension, k AS value, n AS installs
    FROM analyst_daily FINAL ARRAY JOIN mapKeys(cli_versions_active) AS k, mapValues(cli_versions_active) AS n
    UNION ALL
    SELECT day, 'operating_system' AS dimension, k AS value, n AS installs
    FROM analyst_daily FINAL ARRAY JOIN mapKeys(cli_os_active) AS k, mapValues(cli_os_active) AS n
    UNION ALL
    SELECT day, 'arch' AS dimension, k AS value, n AS installs
    FROM analyst_daily FINAL ARRAY JOIN mapKeys(cli_arch_active) AS k, mapValues(cli_arch_active) AS n
);

-- CLI command usage (2025+ CLIs): per command, the installs with a report of the last 30 days naming it and the sum
-- of their execution counts. The two maps hold the same keys in the same order (one aggregation writes both); were
-- they ever to differ, the executions are looked up per key instead.
CREATE OR REPLACE VIEW cli_command_usage_daily AS
SELECT day, command_path, installs, executions, cli_active_installs AS active_installs
FROM analyst_daily FINAL
ARRAY JOIN mapKeys(cli_command_installs) AS command_path, mapValues(cli_command_installs) AS installs,
           if(mapKeys(cli_command_executions) = mapKeys(cli_command_installs), mapValues(cli_command_executions),
              arrayMap(k -> cli_command_executions[k], mapKeys(cli_command_installs))) AS executions;

-- Command usage for another look-back, per day with data in [first, last]:
-- cli_command_usage(lookback = 7, first = '2025-01-01', last = '2025-01-31'). The columns of cli_command_usage_daily.
CREATE OR REPLACE VIEW cli_command_usage AS
SELECT day, command_path, installs, executions, active_installs
FROM cli_usage_compute(days = CAST(range(toUInt32({first:Date}), toUInt32({last:Date}) + 1) AS Array(Date)), lookback = {lookback:UInt32})
ARRAY JOIN mapKeys(command_installs) AS command_path, mapValues(command_installs) AS installs,
           if(mapKeys(command_executions) = mapKeys(command_installs), mapValues(command_executions),
              arrayMap(k -> command_executions[k], mapKeys(command_installs))) AS executions
WHERE day IN (SELECT day FROM snapshot_changes WHERE day BETWEEN {first:Date} AND {last:Date});

-- Every day's analyst row is computed once more, by the computation above.
INSERT INTO snapshot_changes SELECT day, toUInt64(1), now64(6, 'UTC') FROM snapshot_changes GROUP BY day
