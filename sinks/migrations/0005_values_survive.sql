-- The analysts' figures survive any value (issue 22). Migration 0002 wrote each snapshot's plan map into text
-- ('id=count,...') and split it again, and found the CLI's command usage with a pattern over the cli object's
-- JSON text: a plan ID such as 'a=b' made every refresh of analyst_daily fail (and 'x=5' counted 5 gateways), a
-- command path with a brace was lost. Here nothing is ever written into text and split again:
--   * analyst_compute carries the plan map itself (Map) and reads the command usage on typed JSON paths
--     (`commands` of the cli object, inlined or one object down: is_telemetry/schema.py command_usage),
--   * a version is ordered only when it is major.minor of 1-3 digits each (what the processors store,
--     anything else is 'unknown'), and every number read from text is read with an OrZero function,
--   * every day is recomputed once with the new computation (one more counted change per day),
--   * analyst_refreshes: each refreshable view's state (failing, its error, its last success, how old its figures
--     are), for `is-telemetry status`, the API's /metrics and the dashboard.
-- analyst_daily and its readers keep their names and columns.

DROP VIEW IF EXISTS analyst_daily_refresh;

DROP VIEW IF EXISTS analyst_compute;

-- Everything analyst_daily holds, computed from snapshots FINAL for the given days (any look-backs, any jump
-- factor, any gap): analyst_compute(days = [...], seen = [], lookback = 7, cli_lookback = 30, factor = 10, gap = 7).
-- `seen`: per day, the change count the caller read before (stored as inputs_seen). UIDs are grouped by their
-- 128-bit SipHash (as ClickHouse's uniqExact does).
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
    c.cli_command_installs AS cli_command_installs, c.cli_command_executions AS cli_command_executions,
    i.behind_top AS behind_top, i.jumps AS jumps,
    li.active_1d AS is_active_1d, li.active_7d AS is_active_7d, li.active_30d AS is_active_30d, li.new AS is_new,
    li.returning AS is_returning, li.churned AS is_churned,
    lc.active_1d AS cli_active_1d, lc.active_7d AS cli_active_7d, lc.active_30d AS cli_active_30d, lc.new AS cli_new,
    lc.returning AS cli_returning, lc.churned AS cli_churned
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
        arraySort(groupArrayArray(uid_jumps)) AS jumps
    FROM
    (
        SELECT
            target AS day, uid, carried, reported, default_uid, inconsistent, gateways, gateways_effective, end_devices,
            end_devices AS row_end_devices, active_end_devices,
            active_last_day, active_last_week, active_last_month, applications, users_standard, users_admin, organizations,
            ordinal,
            maxIf(ordinal, carried AND NOT dev) OVER (PARTITION BY target) AS newest,
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
    )
    GROUP BY day
) AS i
FULL OUTER JOIN
(
    -- CLI installs: per (D, UID) the latest report of the look-backs (7 days for fleet_daily_carried, cli_lookback
    -- for the active installs); the command usage is read from that report's cli object.
    SELECT
        day,
        countIf(last_day > day - {lookback:UInt32}) AS cli_installs,
        countIf(last_day > day - {cli_lookback:UInt32}) AS cli_active_installs,
        sumMapIf(map(version, toUInt64(1)), last_day > day - {cli_lookback:UInt32}) AS cli_versions_active,
        sumMapIf(map(operating_system, toUInt64(1)), last_day > day - {cli_lookback:UInt32}) AS cli_os_active,
        sumMapIf(map(arch, toUInt64(1)), last_day > day - {cli_lookback:UInt32}) AS cli_arch_active,
        sumMapIf(arrayDistinct(paths), arrayMap(p -> toUInt64(1), arrayDistinct(paths)), last_day > day - {cli_lookback:UInt32}) AS cli_command_installs,
        sumMapIf(paths, executions, last_day > day - {cli_lookback:UInt32}) AS cli_command_executions
    FROM
    (
        SELECT target AS day, max(s.day) AS last_day,
               argMax(s.version_major_minor, s.day) AS version, argMax(s.operating_system, s.day) AS operating_system,
               argMax(s.arch, s.day) AS arch, argMax(s.cli, s.day) AS latest_cli,
               -- TTS's CmdData, inlined in the cli object or one object down (is_telemetry/schema.py
               -- command_usage): typed JSON paths, never a pattern over the text
               arrayFilter(u -> isNotNull(u.1),
                           arrayConcat(JSONExtract(latest_cli, 'commands', 'Array(Tuple(command_path Nullable(String), execution_count UInt64))'),
                                       arrayFlatten(arrayMap(kv -> JSONExtract(kv.2, 'commands', 'Array(Tuple(command_path Nullable(String), execution_count UInt64))'),
                                                             arrayFilter(kv -> JSONType(kv.2) = 'Object', JSONExtractKeysAndValuesRaw(latest_cli)))))) AS commands,
               arrayMap(u -> assumeNotNull(u.1), commands) AS paths,
               arrayMap(u -> u.2, commands) AS executions
        FROM
        (
            SELECT day, sipHash128(uid) AS key, toString(version_major_minor) AS version_major_minor,
                   toString(operating_system) AS operating_system, toString(arch) AS arch, cli
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
) AS lc USING day;

CREATE MATERIALIZED VIEW analyst_daily_refresh
REFRESH EVERY 10 SECOND APPEND TO analyst_daily AS
WITH (SELECT groupArray((day, inputs)) FROM analyst_daily_pending) AS due
SELECT * FROM analyst_compute(days = due.1, seen = due.2, lookback = 7, cli_lookback = 30, factor = 10, gap = 7);

DROP VIEW IF EXISTS deployments_behind;

-- The deployments of one day's carried-forward fleet that are at least min_behind minor versions behind:
-- deployments_behind(day = '2025-01-31', min_behind = 3).
CREATE VIEW deployments_behind AS
SELECT c.day AS day, c.uid AS uid, c.source_day AS source_day, c.binary_version AS binary_version,
       c.version AS version, a.newest_version AS newest_version,
       toUInt32(greatest(toInt64(if(match(a.newest_version, '^[0-9]{1,3}\\.[0-9]{1,3}$'), toUInt32OrZero(splitByChar('.', a.newest_version)[1]) * 1000 + toUInt32OrZero(splitByChar('.', a.newest_version)[2]), 0)) - c.ordinal, 0)) AS behind,
       c.end_devices AS end_devices, c.gateways AS gateways
FROM
(
    -- each deployment's latest snapshot of the 7 days up to the day
    SELECT {day:Date} AS day, uid, max(s.day) AS source_day, argMax(binary_version, s.day) AS binary_version,
           argMax(version_major_minor, s.day) AS version,
           toInt64(if(match(version, '^[0-9]{1,3}\\.[0-9]{1,3}$'), toUInt32OrZero(splitByChar('.', version)[1]) * 1000 + toUInt32OrZero(splitByChar('.', version)[2]), 0)) AS ordinal,
           argMax(end_devices, s.day) AS end_devices,
           argMax(if(gateways > 0, gateways, arraySum(mapValues(gateways_by_frequency_plan))), s.day) AS gateways
    FROM snapshots AS s FINAL
    WHERE kind = 'is' AND s.day <= {day:Date} AND s.day > {day:Date} - 7
    GROUP BY uid
) AS c
INNER JOIN (SELECT day, newest_version FROM analyst_daily FINAL WHERE day = {day:Date}) AS a ON a.day = c.day
WHERE c.ordinal > 0 AND a.newest_version != ''
  AND greatest(toInt64(if(match(a.newest_version, '^[0-9]{1,3}\\.[0-9]{1,3}$'), toUInt32OrZero(splitByChar('.', a.newest_version)[1]) * 1000 + toUInt32OrZero(splitByChar('.', a.newest_version)[2]), 0)) - c.ordinal, 0) >= {min_behind:UInt32}
ORDER BY behind DESC, end_devices DESC, uid;

-- Every day's analyst row is computed once more, by the computation above (a row 0002 computed may hold a miscounted
-- plan or command; a day whose refresh failed is due anyway).
INSERT INTO snapshot_changes SELECT day, toUInt64(1), now64(6, 'UTC') FROM snapshot_changes GROUP BY day;

-- The state of each refreshable view of this database (analyst_daily_refresh, retention_refresh): `failing` when its
-- latest attempt raised `exception`; `last_success_time` when its latest successful refresh started (NULL when none
-- since ClickHouse started); `figures_as_of`: that time, or else when the figures it wrote were computed.
CREATE VIEW IF NOT EXISTS analyst_refreshes AS
SELECT view, status, exception != '' AS failing, exception,
       toTimeZone(last_success_time, 'UTC') AS last_success_time,
       toTimeZone(last_refresh_time, 'UTC') AS last_refresh_time,
       toTimeZone(next_refresh_time, 'UTC') AS next_refresh_time,
       coalesce(toTimeZone(last_success_time, 'UTC'),
                multiIf(view = 'analyst_daily_refresh', (SELECT toDateTime(max(computed_at), 'UTC') FROM analyst_daily),
                        view = 'retention_refresh', (SELECT toDateTime(max(computed_at), 'UTC') FROM retention_cohorts),
                        NULL)) AS figures_as_of
FROM system.view_refreshes
WHERE database = currentDatabase()
