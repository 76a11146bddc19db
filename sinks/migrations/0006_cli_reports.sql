-- CLI usage as the 2025 TTS CLI sends it (issue 27). The 2025 CLI empties its command and alias counts after each
-- report (ResetCmdData): a report counts the uses since the previous one. `snapshots` keeps one report per (day, UID),
-- the latest, so two reports of one install on one day would lose the earlier one's uses. Here:
--   * cli_reports: every distinct CLI report, one row per (day, UID, body hash): fed by a materialized view on every
--     insert into snapshots (the sink writes every CLI report there, an older one too: it loses to the newer under
--     FINAL, processors/rollup.py roll_up), so an exact re-send, a replay or a re-split batch collapses on its key;
--     a change is counted in snapshot_changes after its rows are in (snapshots -> cli_reports -> snapshot_changes);
--   * cli_usage_compute(days, lookback): per day D, command and alias usage over the reports of [D - lookback + 1, D]:
--     executions and uses are the sums of every report, installs the distinct UIDs with a report naming them;
--   * analyst_compute reads it (cli_command_usage_daily keeps its name and columns, cli_alias_usage_daily is new)
--     and splits the CLI installs first seen on D by their report of D: on a 2025 CLI (it reports command usage, and
--     keeps its state in telemetry.json: an install upgraded from 3.32's telemetry.yml reports under a new UID) or on
--     an older one (cli_lifecycle_daily.new_2025_cli, new_older_cli);
--   * cli_command_usage / cli_alias_usage(lookback, first, last): any look-back;
--   * every day is recomputed once with the new computation. A data directory's earlier reports of a day are gone
--     (latest wins): its cli_reports start with the stored snapshots.

DROP VIEW IF EXISTS analyst_daily_refresh;

DROP VIEW IF EXISTS analyst_compute;

-- Every distinct report of a CLI install: what command and alias usage is summed over (read with FINAL).
CREATE TABLE IF NOT EXISTS cli_reports
(
    day Date,
    uid String,
    body_hash UInt64,
    received_at DateTime64(3, 'UTC'),
    version_major_minor LowCardinality(String),
    cli String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, uid, body_hash);

CREATE MATERIALIZED VIEW IF NOT EXISTS cli_reports_mv TO cli_reports AS
SELECT day, uid, reinterpretAsUInt64(MD5(body)) AS body_hash, received_at, version_major_minor, cli
FROM snapshots
WHERE kind = 'cli';

-- Reports already stored (one per day and UID: the latest); idempotent.
INSERT INTO cli_reports
SELECT day, uid, reinterpretAsUInt64(MD5(body)), received_at, version_major_minor, cli
FROM snapshots FINAL
WHERE kind = 'cli';

-- A report's change counted once its row is in (the days it touches are due again: analyst_daily_pending).
CREATE MATERIALIZED VIEW IF NOT EXISTS cli_report_changes_mv TO snapshot_changes AS
SELECT day, toUInt64(1) AS changes, max(now64(6, 'UTC')) AS changed_at
FROM cli_reports
GROUP BY day;

ALTER TABLE analyst_daily
    ADD COLUMN IF NOT EXISTS cli_aliases Array(Tuple(command_name String, alias String, installs UInt64, uses UInt64)),
    ADD COLUMN IF NOT EXISTS cli_new_2025 UInt64,
    ADD COLUMN IF NOT EXISTS cli_new_older UInt64;

-- CLI command and alias usage of the given days: cli_usage_compute(days = [...], lookback = 30). Per day D, over the
-- reports of [D - lookback + 1, D]: active_installs (UIDs with a report), per command path the UIDs with a report
-- naming it and the sum of its execution_count, per (command_name, alias) the same with usage_count. TTS's CmdData is
-- read where is_telemetry/schema.py command_usage finds it: the cli object, and each object one level down, on typed
-- JSON paths; a command without a command_path, an alias without command_name or alias, is left out.
CREATE VIEW IF NOT EXISTS cli_usage_compute AS
SELECT a.day AS day, a.active_installs AS active_installs, c.command_installs AS command_installs,
       c.command_executions AS command_executions, l.aliases AS aliases
FROM
(
    SELECT target AS day, uniqExact(r.key) AS active_installs
    FROM
    (
        SELECT day, sipHash128(uid) AS key
        FROM cli_reports FINAL
        WHERE notEmpty({days:Array(Date)})
          AND toUInt32(day) + {lookback:UInt32} > toUInt32(arrayMin({days:Array(Date)})) AND day <= arrayMax({days:Array(Date)})
    ) AS r
    ARRAY JOIN arrayFilter(t -> toUInt32(t) >= toUInt32(r.day) AND toUInt32(t) < toUInt32(r.day) + {lookback:UInt32}, {days:Array(Date)}) AS target
    GROUP BY day
) AS a
LEFT JOIN
(
    SELECT day, CAST(mapFromArrays(groupArray(path), groupArray(installs)) AS Map(String, UInt64)) AS command_installs,
           CAST(mapFromArrays(groupArray(path), groupArray(executions)) AS Map(String, UInt64)) AS command_executions
    FROM
    (
        SELECT target AS day, u.1 AS path, uniqExact(r.key) AS installs, sum(u.2) AS executions
        FROM
        (
            SELECT day, sipHash128(uid) AS key,
                   arrayMap(u -> (assumeNotNull(u.1), u.2),
                            arrayFilter(u -> isNotNull(u.1),
                                        arrayConcat(JSONExtract(cli, 'commands', 'Array(Tuple(command_path Nullable(String), execution_count UInt64))'),
                                                    arrayFlatten(arrayMap(kv -> JSONExtract(kv.2, 'commands', 'Array(Tuple(command_path Nullable(String), execution_count UInt64))'),
                                                                          arrayFilter(kv -> JSONType(kv.2) = 'Object', JSONExtractKeysAndValuesRaw(cli))))))) AS commands
            FROM cli_reports FINAL
            WHERE notEmpty({days:Array(Date)})
              AND toUInt32(day) + {lookback:UInt32} > toUInt32(arrayMin({days:Array(Date)})) AND day <= arrayMax({days:Array(Date)})
        ) AS r
        ARRAY JOIN arrayFilter(t -> toUInt32(t) >= toUInt32(r.day) AND toUInt32(t) < toUInt32(r.day) + {lookback:UInt32}, {days:Array(Date)}) AS target
        ARRAY JOIN r.commands AS u
        GROUP BY day, path
    )
    GROUP BY day
) AS c USING day
LEFT JOIN
(
    SELECT day, CAST(arraySort(groupArray((command_name, alias, installs, uses)))
                     AS Array(Tuple(command_name String, alias String, installs UInt64, uses UInt64))) AS aliases
    FROM
    (
        SELECT target AS day, u.1 AS command_name, u.2 AS alias, uniqExact(r.key) AS installs, sum(u.3) AS uses
        FROM
        (
            SELECT day, sipHash128(uid) AS key,
                   arrayMap(u -> (assumeNotNull(u.1), assumeNotNull(u.2), u.3),
                            arrayFilter(u -> isNotNull(u.1) AND isNotNull(u.2),
                                        arrayConcat(JSONExtract(cli, 'aliases', 'Array(Tuple(command_name Nullable(String), alias Nullable(String), usage_count UInt64))'),
                                                    arrayFlatten(arrayMap(kv -> JSONExtract(kv.2, 'aliases', 'Array(Tuple(command_name Nullable(String), alias Nullable(String), usage_count UInt64))'),
                                                                          arrayFilter(kv -> JSONType(kv.2) = 'Object', JSONExtractKeysAndValuesRaw(cli))))))) AS aliases
            FROM cli_reports FINAL
            WHERE notEmpty({days:Array(Date)})
              AND toUInt32(day) + {lookback:UInt32} > toUInt32(arrayMin({days:Array(Date)})) AND day <= arrayMax({days:Array(Date)})
        ) AS r
        ARRAY JOIN arrayFilter(t -> toUInt32(t) >= toUInt32(r.day) AND toUInt32(t) < toUInt32(r.day) + {lookback:UInt32}, {days:Array(Date)}) AS target
        ARRAY JOIN r.aliases AS u
        GROUP BY day, command_name, alias
    )
    GROUP BY day
) AS l USING day;

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
    cu.aliases AS cli_aliases, cn.new_2025 AS cli_new_2025, cn.new_older AS cli_new_older
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

-- Command usage for another look-back, per day with data in [first, last]:
-- cli_command_usage(lookback = 7, first = '2025-01-01', last = '2025-01-31'). The columns of cli_command_usage_daily.
CREATE VIEW IF NOT EXISTS cli_command_usage AS
SELECT day, command_path, command_installs[command_path] AS installs, command_executions[command_path] AS executions,
       active_installs
FROM cli_usage_compute(days = CAST(range(toUInt32({first:Date}), toUInt32({last:Date}) + 1) AS Array(Date)), lookback = {lookback:UInt32})
ARRAY JOIN mapKeys(command_installs) AS command_path
WHERE day IN (SELECT day FROM snapshot_changes WHERE day BETWEEN {first:Date} AND {last:Date});

-- Alias usage for another look-back: cli_alias_usage(lookback = 7, first = ..., last = ...), the columns of
-- cli_alias_usage_daily.
CREATE VIEW IF NOT EXISTS cli_alias_usage AS
SELECT day, a.command_name AS command_name, a.alias AS alias, a.installs AS installs, a.uses AS uses
FROM cli_usage_compute(days = CAST(range(toUInt32({first:Date}), toUInt32({last:Date}) + 1) AS Array(Date)), lookback = {lookback:UInt32})
ARRAY JOIN aliases AS a
WHERE day IN (SELECT day FROM snapshot_changes WHERE day BETWEEN {first:Date} AND {last:Date});

-- CLI alias usage (2025 CLIs): per (command_name, alias), the installs with a report of the last 30 days naming it and
-- the sum of their usage_count.
CREATE VIEW IF NOT EXISTS cli_alias_usage_daily AS
SELECT day, a.command_name AS command_name, a.alias AS alias, a.installs AS installs, a.uses AS uses
FROM analyst_daily FINAL
ARRAY JOIN cli_aliases AS a;

DROP VIEW IF EXISTS cli_lifecycle_daily;

-- The CLI lifecycle (G = 7), with the new installs split: on a 2025 CLI (an install upgraded from 3.32 or older
-- is one of them: it reports under a new UID) and on an older CLI.
CREATE VIEW cli_lifecycle_daily AS
SELECT day, cli_active_1d AS active_1d, cli_active_7d AS active_7d, cli_active_30d AS active_30d, cli_new AS new,
       cli_returning AS returning, cli_churned AS churned, cli_new_2025 AS new_2025_cli, cli_new_older AS new_older_cli
FROM analyst_daily FINAL;

-- Every day's analyst row is computed once more, by the computation above.
INSERT INTO snapshot_changes SELECT day, toUInt64(1), now64(6, 'UTC') FROM snapshot_changes GROUP BY day
