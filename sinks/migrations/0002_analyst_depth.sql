-- Analyst depth (docs/analysts.md "The fleet over time"): every object here derives from `snapshots`, never
-- from the day totals (daily_rollup). Derived tables, each exact under replay, kill -9 and several writers:
--   * uid_activity: per UID its first and last day and the sets of its days, weeks and months, fed by a
--     materialized view on every insert into snapshots. min, max and bitmap union are idempotent.
--   * snapshot_changes: per day the number of inserts that touched it, fed after uid_activity (a chain), so a
--     counted change is visible only once its rows are.
--   * analyst_daily: one row per day, recomputed whole from `snapshots FINAL` (the view analyst_compute) by the
--     refreshable materialized view analyst_daily_refresh whenever changes of the days it depends on are more
--     than those it was computed from (the counts it saw are kept); the newest computation wins.
--   * retention_cohorts: the retention tables, recomputed whole the same way by retention_refresh.
-- Defaults behind the named views: look-back 7 days (IS), 30 days (CLI installs), gap 7 days, jump factor 10.

-- The frequency plan -> region rules: the one place the mapping lives. A plan ID belongs to the region of the
-- rule whose prefix it starts with; a plan no rule matches is in region 'other'.
CREATE VIEW IF NOT EXISTS frequency_plan_regions AS
SELECT rule.1 AS prefix, rule.2 AS region
FROM
(
    SELECT arrayJoin([
        ('EU_863_870', 'EU868'), ('EU_433', 'EU433'), ('US_902_928', 'US915'), ('AU_915_928', 'AU915'),
        ('AS_923', 'AS923'), ('AS_920_923', 'AS923'), ('CN_470_510', 'CN470'), ('CN_779_787', 'CN779'),
        ('IN_865_867', 'IN865'), ('KR_920_923', 'KR920'), ('RU_864_870', 'RU864'), ('ISM_2400', 'ISM2400')
    ]) AS rule
);

-- Per UID: first and last day seen and the sets of days, weeks (their Mondays) and months (their first days)
-- seen, as day numbers, over all history.
CREATE TABLE IF NOT EXISTS uid_activity
(
    kind LowCardinality(String),
    uid String,
    first_day SimpleAggregateFunction(min, Date),
    last_day SimpleAggregateFunction(max, Date),
    days AggregateFunction(groupBitmap, UInt32),
    weeks AggregateFunction(groupBitmap, UInt32),
    months AggregateFunction(groupBitmap, UInt32)
)
ENGINE = AggregatingMergeTree
ORDER BY (kind, uid);

CREATE MATERIALIZED VIEW IF NOT EXISTS uid_activity_mv TO uid_activity AS
SELECT kind, uid, min(day) AS first_day, max(day) AS last_day, groupBitmapState(toUInt32(day)) AS days,
       groupBitmapState(toUInt32(toMonday(day))) AS weeks, groupBitmapState(toUInt32(toStartOfMonth(day))) AS months
FROM snapshots
GROUP BY kind, uid;

-- Rows already in snapshots when this migration runs (idempotent: re-running it changes nothing).
INSERT INTO uid_activity
SELECT kind, uid, min(day), max(day), groupBitmapState(toUInt32(day)), groupBitmapState(toUInt32(toMonday(day))),
       groupBitmapState(toUInt32(toStartOfMonth(day)))
FROM snapshots GROUP BY kind, uid;

-- How often, and when last, the snapshots of each day changed: one count per insert touching the day. Fed from the
-- inserts into uid_activity (a chain: snapshots -> uid_activity -> snapshot_changes), so a change counted here is
-- visible only once the snapshots and uid_activity rows behind it are. The refresh records the counts it saw: a
-- count it did not see makes the day due again (analyst_daily_pending). Counts only grow (replays too).
CREATE TABLE IF NOT EXISTS snapshot_changes
(
    day Date,
    changes SimpleAggregateFunction(sum, UInt64),
    changed_at SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY day;

CREATE MATERIALIZED VIEW IF NOT EXISTS snapshot_changes_mv TO snapshot_changes AS
SELECT DATE '1970-01-01' + d AS day, toUInt64(1) AS changes, max(now64(6, 'UTC')) AS changed_at
FROM uid_activity
ARRAY JOIN bitmapToArray(days) AS d
GROUP BY d;

INSERT INTO snapshot_changes SELECT day, toUInt64(1), now64(6, 'UTC') FROM snapshots GROUP BY day

-- Lifecycle per day for one kind ('is' or 'cli') and gap G, over [first, last] (days with data only):
-- lifecycle_daily(kind = 'is', gap = 7, first = '2025-01-01', last = '2025-01-31').
--   active_1d / active_7d / active_30d: distinct UIDs seen on any day of [D, D], [D-6, D], [D-29, D]
--   new: UIDs first seen on D; returning: seen on D, silent on [D-G, D-1], seen before D-G;
--   churned: seen on D-G and silent on [D-G+1, D].
-- Each UID contributes a few events from its days within [first - max(29, G), last]: where its runs of activity
-- (days closer than k apart, for k = 1, 7, 30) start and end, its first day, its returns and its churns. Events
-- are counted per day (sumMap over UIDs); the active counts are running sums of starts minus ends.
CREATE VIEW IF NOT EXISTS lifecycle_daily AS
WITH toUInt32({first:Date}) AS f, toUInt32({last:Date}) AS l, {gap:UInt32} AS g, greatest(toUInt32(29), g) AS w,
     (SELECT groupUniqArray(toUInt32(day)) FROM snapshot_changes WHERE day BETWEEN {first:Date} AND {last:Date}) AS axis
SELECT DATE '1970-01-01' + d AS day,
       toUInt64(arraySum(arrayFilter((v, k) -> k <= d, s1.2, s1.1)) - arraySum(arrayFilter((v, k) -> k <= d, e1.2, e1.1))) AS active_1d,
       toUInt64(arraySum(arrayFilter((v, k) -> k <= d, s7.2, s7.1)) - arraySum(arrayFilter((v, k) -> k <= d, e7.2, e7.1))) AS active_7d,
       toUInt64(arraySum(arrayFilter((v, k) -> k <= d, s30.2, s30.1)) - arraySum(arrayFilter((v, k) -> k <= d, e30.2, e30.1))) AS active_30d,
       toUInt64(arraySum(arrayFilter((v, k) -> k = d, n.2, n.1))) AS new,
       toUInt64(arraySum(arrayFilter((v, k) -> k = d, r.2, r.1))) AS returning,
       toUInt64(arraySum(arrayFilter((v, k) -> k = d, c.2, c.1))) AS churned
FROM
(
    SELECT sumMap(starts1, arrayMap(x -> toInt64(1), starts1)) AS s1, sumMap(ends1, arrayMap(x -> toInt64(1), ends1)) AS e1,
           sumMap(starts7, arrayMap(x -> toInt64(1), starts7)) AS s7, sumMap(ends7, arrayMap(x -> toInt64(1), ends7)) AS e7,
           sumMap(starts30, arrayMap(x -> toInt64(1), starts30)) AS s30, sumMap(ends30, arrayMap(x -> toInt64(1), ends30)) AS e30,
           sumMap(firsts, arrayMap(x -> toInt64(1), firsts)) AS n, sumMap(returns, arrayMap(x -> toInt64(1), returns)) AS r,
           sumMap(churns, arrayMap(x -> toInt64(1), churns)) AS c
    FROM
    (
        SELECT
            arrayFilter((d, x) -> x > 1, ds, gap_before) AS starts1,
            arrayMap(d -> d + 1, arrayFilter((d, x) -> x > 1, ds, gap_after)) AS ends1,
            arrayFilter((d, x) -> x > 7, ds, gap_before) AS starts7,
            arrayMap(d -> d + 7, arrayFilter((d, x) -> x > 7, ds, gap_after)) AS ends7,
            arrayFilter((d, x) -> x > 30, ds, gap_before) AS starts30,
            arrayMap(d -> d + 30, arrayFilter((d, x) -> x > 30, ds, gap_after)) AS ends30,
            if(first_seen BETWEEN f AND l, [first_seen], []) AS firsts,
            arrayFilter((d, x) -> x > g AND first_seen + g < d, ds, gap_before) AS returns,
            arrayFilter(d -> d <= l, arrayMap(d -> d + g, arrayFilter((d, x) -> x > g, ds, gap_after))) AS churns
        FROM
        (
            SELECT toUInt32(min(first_day)) AS first_seen,
                   arraySort(bitmapToArray(bitmapSubsetInRange(groupBitmapMergeState(days), toUInt32(f - w), toUInt32(l + 1)))) AS ds,
                   -- days since the UID's previous day in the window (none: a large number), and until its next one
                   arrayPushFront(arrayPopFront(arrayDifference(ds)), toInt64(4294967295)) AS gap_before,
                   arrayPushBack(arrayPopFront(arrayDifference(ds)), toInt64(4294967295)) AS gap_after
            FROM uid_activity
            WHERE kind = {kind:String}
            GROUP BY uid
            HAVING max(last_day) >= toDate(f - w) AND min(first_day) <= toDate(l)
        )
    )
)
ARRAY JOIN axis AS d;

-- One row per day with data: the carried-forward fleet, its shape, regions, versions, CLI activity and data
-- quality. Written only by analyst_daily_refresh; read through the views below.
CREATE TABLE IF NOT EXISTS analyst_daily
(
    day Date,
    computed_at DateTime64(6, 'UTC'),
    inputs_seen UInt64,
    deployments UInt64,
    cli_installs UInt64,
    gateways UInt64,
    end_devices UInt64,
    active_end_devices UInt64,
    active_last_day UInt64,
    active_last_week UInt64,
    active_last_month UInt64,
    applications UInt64,
    users_standard UInt64,
    users_admin UInt64,
    organizations UInt64,
    default_uid_deployments UInt64,
    inconsistent_deployments UInt64,
    reported_deployments UInt64,
    reported_default_uid_deployments UInt64,
    reported_inconsistent_deployments UInt64,
    gateway_buckets Map(UInt64, UInt64),
    gateway_buckets_carried Map(UInt64, UInt64),
    end_device_buckets Map(UInt64, UInt64),
    end_device_buckets_carried Map(UInt64, UInt64),
    region_deployments Map(LowCardinality(String), UInt64),
    region_deployments_carried Map(LowCardinality(String), UInt64),
    region_gateways Map(LowCardinality(String), UInt64),
    region_gateways_carried Map(LowCardinality(String), UInt64),
    versions_carried Map(LowCardinality(String), UInt64),
    versions_at_or_above_carried Map(LowCardinality(String), UInt64),
    newest_version String,
    versions_behind_carried Map(UInt32, UInt64),
    cli_active_installs UInt64,
    cli_versions_active Map(LowCardinality(String), UInt64),
    cli_os_active Map(LowCardinality(String), UInt64),
    cli_arch_active Map(LowCardinality(String), UInt64),
    cli_command_installs Map(String, UInt64),
    cli_command_executions Map(String, UInt64),
    behind_top Array(Tuple(uid String, version String, behind UInt32, end_devices UInt64, gateways UInt64)),
    jumps Array(Tuple(uid String, metric LowCardinality(String), previous_day Date, previous UInt64, current UInt64)),
    is_active_1d UInt64,
    is_active_7d UInt64,
    is_active_30d UInt64,
    is_new UInt64,
    is_returning UInt64,
    is_churned UInt64,
    cli_active_1d UInt64,
    cli_active_7d UInt64,
    cli_active_30d UInt64,
    cli_new UInt64,
    cli_returning UInt64,
    cli_churned UInt64
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY day;

-- The snapshot of each UID that day D carries: its latest snapshot of [D - lookback + 1, D] (CLI installs:
-- [D - cli_lookback + 1, D]), for any one day. Columns of snapshots plus source_day (the snapshot's own day).
CREATE VIEW IF NOT EXISTS carried_snapshots AS
SELECT {day:Date} AS day, source_day, uid, kind, default_uid, flags, operating_system, arch, binary_version,
       version_major_minor, golang_version, gateways, gateways_by_frequency_plan, end_devices, active_end_devices,
       active_last_day, active_last_week, active_last_month, applications, users_standard, users_admin, organizations,
       cli
FROM
(
    SELECT s.day AS source_day, s.uid AS uid, s.kind AS kind, s.default_uid AS default_uid, s.flags AS flags,
           s.operating_system AS operating_system, s.arch AS arch, s.binary_version AS binary_version,
           s.version_major_minor AS version_major_minor, s.golang_version AS golang_version, s.gateways AS gateways,
           s.gateways_by_frequency_plan AS gateways_by_frequency_plan, s.end_devices AS end_devices,
           s.active_end_devices AS active_end_devices, s.active_last_day AS active_last_day,
           s.active_last_week AS active_last_week, s.active_last_month AS active_last_month,
           s.applications AS applications, s.users_standard AS users_standard, s.users_admin AS users_admin,
           s.organizations AS organizations, s.cli AS cli
    FROM snapshots AS s FINAL
    WHERE s.day <= {day:Date}
      AND s.day > {day:Date} - if(s.kind = 'is', {lookback:UInt32}, {cli_lookback:UInt32})
    ORDER BY s.day DESC
    LIMIT 1 BY s.uid
);

-- Everything analyst_daily holds, computed from snapshots FINAL for the given days (any look-backs, any jump
-- factor, any gap): analyst_compute(days = [...], seen = [], lookback = 7, cli_lookback = 30, factor = 10, gap = 7).
-- `seen`: per day, the change count the caller read before (stored as inputs_seen). UIDs are grouped by their
-- 128-bit SipHash (as ClickHouse's uniqExact does).
CREATE VIEW IF NOT EXISTS analyst_compute AS
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
             arraySort(k -> -toInt64(if(match(k, '^\\d+\\.\\d+$'),
                                        toUInt32(splitByChar('.', k)[1]) * 1000 + toUInt32(splitByChar('.', k)[2]), 0)),
                       mapKeys(i.versions_carried)),
             arrayCumSum(arrayMap(k -> if(k = 'unknown', 0, i.versions_carried[k]),
                                  arraySort(k -> -toInt64(if(match(k, '^\\d+\\.\\d+$'),
                                                             toUInt32(splitByChar('.', k)[1]) * 1000 + toUInt32(splitByChar('.', k)[2]), 0)),
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
    -- latest of [D - lookback + 1, D] is carried (argMax over plain columns: fast; the plan map travels as text)
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
            -- plans as 'REGION=gateways,...' (argMax over a string is cheap, over arrays it is not)
            arrayFilter(x -> notEmpty(x), splitByChar(',', plans)) AS plan_items,
            arrayMap(x -> splitByChar('=', x)[1], plan_items) AS plan_ids,
            arrayMap(p -> if(empty(arrayFirst(r -> startsWith(p, r.1), region_rules).2), 'other',
                             arrayFirst(r -> startsWith(p, r.1), region_rules).2), plan_ids) AS plan_regions,
            arrayMap(x -> toUInt64(splitByChar('=', x)[2]), plan_items) AS plan_gateways,
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
                       if(match(version_major_minor, '^\\d+\\.\\d+$'),
                          toUInt32(splitByChar('.', version_major_minor)[1]) * 1000 + toUInt32(splitByChar('.', version_major_minor)[2]),
                          0) AS ordinal,
                       toUInt8(position(binary_version, '-dev') > 0) AS dev,
                       if(gateways > 0, gateways, arraySum(mapValues(gateways_by_frequency_plan))) AS gateways_effective,
                       arrayStringConcat(arrayMap((p, g) -> concat(p, '=', toString(g)),
                                                  mapKeys(gateways_by_frequency_plan), mapValues(gateways_by_frequency_plan)), ',') AS plans
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
               extractAll(latest_cli, '\\{[^{}]*"command_path"[^{}]*\\}') AS objects,
               arrayMap(o -> JSONExtractString(o, 'command_path'), objects) AS paths,
               arrayMap(o -> JSONExtractUInt(o, 'execution_count'), objects) AS executions
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

-- Per day with data: the changes of the snapshots it depends on ([D - 29, D]) now and when its analyst_daily row
-- was computed, the UIDs first seen that day now and then (a UID whose older history arrives late changes `new`
-- and `returning` of later days), and whether it can be recomputed: with a snapshot TTL
-- (clickhouse.snapshot_ttl_days), a day whose look-back reaches past it keeps its row, as daily_rollup does.
CREATE VIEW IF NOT EXISTS analyst_daily_state AS
WITH (SELECT toUInt32OrZero(extract(engine_full, 'toIntervalDay\\((\\d+)\\)')) FROM system.tables
      WHERE database = currentDatabase() AND name = 'snapshots') AS ttl_days
SELECT c.day AS day, c.inputs AS inputs, a.inputs_seen AS inputs_seen, a.last_computed_at AS computed_at,
       ttl_days = 0 OR c.day - 29 > today() - ttl_days AS recomputable,
       (f.is_new, f.cli_new) != (a.is_new, a.cli_new) AS first_seen_changed
FROM
(
    SELECT day, sum(changes) OVER (ORDER BY toUInt32(day) RANGE BETWEEN 29 PRECEDING AND CURRENT ROW) AS inputs
    FROM (SELECT day, sum(changes) AS changes FROM snapshot_changes GROUP BY day)
) AS c
LEFT JOIN
(
    SELECT day, max(computed_at) AS last_computed_at, argMax(inputs_seen, computed_at) AS inputs_seen,
           argMax(is_new, computed_at) AS is_new, argMax(cli_new, computed_at) AS cli_new
    FROM analyst_daily GROUP BY day
) AS a ON a.day = c.day
LEFT JOIN
(
    SELECT day, countIf(kind = 'is') AS is_new, countIf(kind = 'cli') AS cli_new
    FROM (SELECT kind, min(first_day) AS day FROM uid_activity GROUP BY kind, uid)
    GROUP BY day
) AS f ON f.day = c.day;

-- Days whose analyst_daily row is missing or out of date (what the next refresh recomputes): changes of their
-- snapshots it has not seen, or a day on or after the first one whose first-seen UIDs changed.
CREATE VIEW IF NOT EXISTS analyst_daily_pending AS
SELECT day, inputs, inputs_seen
FROM analyst_daily_state
WHERE recomputable
  AND (inputs > inputs_seen
       OR day >= (SELECT minOrNull(day) FROM analyst_daily_state WHERE recomputable AND first_seen_changed));

CREATE MATERIALIZED VIEW IF NOT EXISTS analyst_daily_refresh
REFRESH EVERY 10 SECOND APPEND TO analyst_daily AS
WITH (SELECT groupArray((day, inputs)) FROM analyst_daily_pending) AS due
SELECT * FROM analyst_compute(days = due.1, seen = due.2, lookback = 7, cli_lookback = 30, factor = 10, gap = 7);

-- ---------------------------------------------------------------------------------------------------------------
-- Views for analysts (docs/analysts.md). The named views use the defaults; the parameterized ones take others.
-- ---------------------------------------------------------------------------------------------------------------

-- The carried-forward fleet: fleet_daily's columns, each UID counted with its latest snapshot of [D-6, D].
CREATE VIEW IF NOT EXISTS fleet_daily_carried AS
SELECT day, deployments, cli_installs, gateways, end_devices, active_end_devices, active_last_day, active_last_week,
       active_last_month, applications, users_standard, users_admin, organizations, default_uid_deployments,
       inconsistent_deployments
FROM analyst_daily FINAL;

-- The same for another look-back, computed on the fly from snapshots: fleet_daily_carried_lookback(lookback = 14,
-- first = '2025-01-01', last = '2025-01-31').
CREATE VIEW IF NOT EXISTS fleet_daily_carried_lookback AS
SELECT day, countIf(kind = 'is') AS deployments, countIf(kind = 'cli') AS cli_installs,
       sumIf(gateways, kind = 'is') AS gateways, sumIf(end_devices, kind = 'is') AS end_devices,
       sumIf(active_end_devices, kind = 'is') AS active_end_devices, sumIf(active_last_day, kind = 'is') AS active_last_day,
       sumIf(active_last_week, kind = 'is') AS active_last_week, sumIf(active_last_month, kind = 'is') AS active_last_month,
       sumIf(applications, kind = 'is') AS applications, sumIf(users_standard, kind = 'is') AS users_standard,
       sumIf(users_admin, kind = 'is') AS users_admin, sumIf(organizations, kind = 'is') AS organizations,
       countIf(kind = 'is' AND default_uid) AS default_uid_deployments,
       countIf(kind = 'is' AND inconsistent) AS inconsistent_deployments
FROM
(
    SELECT target AS day, s.kind AS kind,
           argMax(s.gateways, s.day) AS gateways, argMax(s.end_devices, s.day) AS end_devices,
           argMax(s.active_end_devices, s.day) AS active_end_devices, argMax(s.active_last_day, s.day) AS active_last_day,
           argMax(s.active_last_week, s.day) AS active_last_week, argMax(s.active_last_month, s.day) AS active_last_month,
           argMax(s.applications, s.day) AS applications, argMax(s.users_standard, s.day) AS users_standard,
           argMax(s.users_admin, s.day) AS users_admin, argMax(s.organizations, s.day) AS organizations,
           argMax(s.default_uid, s.day) AS default_uid, argMax(s.inconsistent, s.day) AS inconsistent
    FROM
    (
        SELECT day, kind, sipHash128(uid) AS key, gateways, end_devices, active_end_devices, active_last_day,
               active_last_week, active_last_month, applications, users_standard, users_admin, organizations,
               toUInt8(default_uid) AS default_uid, toUInt8(notEmpty(flags)) AS inconsistent
        FROM snapshots FINAL
        WHERE day > {first:Date} - {lookback:UInt32} AND day <= {last:Date}
    ) AS s
    ARRAY JOIN arrayFilter(t -> t >= s.day AND t < s.day + {lookback:UInt32},
                           (SELECT groupUniqArray(day) FROM snapshot_changes
                            WHERE day BETWEEN {first:Date} AND {last:Date})) AS target
    GROUP BY target, s.kind, s.key
)
GROUP BY day;

-- Deployments per size bucket: by gateways (gateways.total, or the sum of the plan counts when the sender leaves
-- the total at 0) and by end devices. bucket_min is the bucket's lower bound: 0, 1, 10, 100, 1000, 10000.
CREATE VIEW IF NOT EXISTS fleet_size_daily AS
SELECT day, dimension, bucket_min,
       multiIf(bucket_min = 0, '0', bucket_min = 10000, '10000+',
               concat(toString(bucket_min), '-', toString(bucket_min * 10 - 1))) AS bucket,
       deployments, deployments_carried
FROM
(
    SELECT day, 'gateways' AS dimension, bucket_min, gateway_buckets[bucket_min] AS deployments,
           gateway_buckets_carried[bucket_min] AS deployments_carried
    FROM analyst_daily FINAL
    ARRAY JOIN mapKeys(gateway_buckets_carried) AS bucket_min
    UNION ALL
    SELECT day, 'end_devices' AS dimension, bucket_min, end_device_buckets[bucket_min] AS deployments,
           end_device_buckets_carried[bucket_min] AS deployments_carried
    FROM analyst_daily FINAL
    ARRAY JOIN mapKeys(end_device_buckets_carried) AS bucket_min
);

-- Deployments and gateways per region (frequency_plan_regions). A deployment counts in every region it has
-- gateways in; gateways are the plans' counts (a gateway with several plans counts under each).
CREATE VIEW IF NOT EXISTS regions_daily AS
SELECT day, region, region_deployments[region] AS deployments, region_gateways[region] AS gateways,
       region_deployments_carried[region] AS deployments_carried, region_gateways_carried[region] AS gateways_carried
FROM analyst_daily FINAL
ARRAY JOIN arrayDistinct(arrayConcat(mapKeys(region_gateways_carried), mapKeys(region_deployments_carried))) AS region;

-- Deployments per major.minor version in the carried-forward fleet, and the share on that version or newer.
CREATE VIEW IF NOT EXISTS version_adoption_daily AS
SELECT a.day AS day, version, a.versions_carried[version] AS deployments,
       if(version = 'unknown', 0, a.versions_at_or_above_carried[version]) AS deployments_at_or_above,
       a.deployments AS active_deployments,
       round(deployments / active_deployments, 6) AS share,
       round(deployments_at_or_above / active_deployments, 6) AS share_at_or_above
FROM analyst_daily AS a FINAL
ARRAY JOIN mapKeys(a.versions_carried) AS version;

-- Per version: first day seen, the first day it (or a newer version) ran on half of the carried-forward fleet,
-- and the days between. seen_on_first_day: the version was already there on the first day with data, so it
-- may be older than first_seen says.
CREATE VIEW IF NOT EXISTS version_adoption_speed AS
SELECT version, first_seen, if(half_reached, half_on, NULL) AS half_on,
       if(half_reached, toUInt32(half_on - first_seen), NULL) AS days_to_half,
       first_seen = (SELECT min(day) FROM version_adoption_daily) AS seen_on_first_day
FROM
(
    SELECT version, minIf(day, deployments > 0) AS first_seen,
           minIf(day, deployments_at_or_above * 2 >= active_deployments AND deployments > 0) AS half_on,
           countIf(deployments_at_or_above * 2 >= active_deployments AND deployments > 0) > 0 AS half_reached
    FROM version_adoption_daily
    WHERE version != 'unknown'
    GROUP BY version
);

-- How many minor versions behind the newest release running in the fleet (newest_version, -dev builds left out)
-- each carried-forward deployment is; deployments with an unparseable version are left out.
CREATE VIEW IF NOT EXISTS versions_behind_daily AS
SELECT day, newest_version, behind, versions_behind_carried[behind] AS deployments
FROM analyst_daily FINAL
ARRAY JOIN mapKeys(versions_behind_carried) AS behind;

-- Per day: the 25 largest (by end devices) carried-forward deployments 3 or more minor versions behind.
CREATE VIEW IF NOT EXISTS deployments_behind_daily AS
SELECT day, d.1 AS uid, d.2 AS version, d.3 AS behind, d.4 AS end_devices, d.5 AS gateways
FROM analyst_daily FINAL
ARRAY JOIN behind_top AS d;

-- The deployments of one day's carried-forward fleet that are at least min_behind minor versions behind:
-- deployments_behind(day = '2025-01-31', min_behind = 3).
CREATE VIEW IF NOT EXISTS deployments_behind AS
SELECT c.day AS day, c.uid AS uid, c.source_day AS source_day, c.binary_version AS binary_version,
       c.version AS version, a.newest_version AS newest_version,
       toUInt32(greatest(toInt64(toUInt32(splitByChar('.', a.newest_version)[1]) * 1000
                                 + toUInt32(splitByChar('.', a.newest_version)[2])) - c.ordinal, 0)) AS behind,
       c.end_devices AS end_devices, c.gateways AS gateways
FROM
(
    -- each deployment's latest snapshot of the 7 days up to the day
    SELECT {day:Date} AS day, uid, max(s.day) AS source_day, argMax(binary_version, s.day) AS binary_version,
           argMax(version_major_minor, s.day) AS version,
           if(match(version, '^\\d+\\.\\d+$'),
              toInt64(toUInt32(splitByChar('.', version)[1]) * 1000 + toUInt32(splitByChar('.', version)[2])), 0) AS ordinal,
           argMax(end_devices, s.day) AS end_devices,
           argMax(if(gateways > 0, gateways, arraySum(mapValues(gateways_by_frequency_plan))), s.day) AS gateways
    FROM snapshots AS s FINAL
    WHERE kind = 'is' AND s.day <= {day:Date} AND s.day > {day:Date} - 7
    GROUP BY uid
) AS c
INNER JOIN (SELECT day, newest_version FROM analyst_daily FINAL WHERE day = {day:Date}) AS a ON a.day = c.day
WHERE c.ordinal > 0 AND a.newest_version != ''
  AND greatest(toInt64(toUInt32(splitByChar('.', a.newest_version)[1]) * 1000
                        + toUInt32(splitByChar('.', a.newest_version)[2])) - c.ordinal, 0) >= {min_behind:UInt32}
ORDER BY behind DESC, end_devices DESC, uid;

-- CLI installs active in the last 30 days (a report in [D-29, D]), by their latest report's version, OS and arch.
CREATE VIEW IF NOT EXISTS cli_installs_active_daily AS
SELECT day, dimension, value, installs
FROM
(
    SELECT day, 'version' AS dimension, k AS value, cli_versions_active[k] AS installs
    FROM analyst_daily FINAL ARRAY JOIN mapKeys(cli_versions_active) AS k
    UNION ALL
    SELECT day, 'operating_system' AS dimension, k AS value, cli_os_active[k] AS installs
    FROM analyst_daily FINAL ARRAY JOIN mapKeys(cli_os_active) AS k
    UNION ALL
    SELECT day, 'arch' AS dimension, k AS value, cli_arch_active[k] AS installs
    FROM analyst_daily FINAL ARRAY JOIN mapKeys(cli_arch_active) AS k
);

-- CLI command usage (2025+ CLIs): per command, the installs active in the last 30 days whose latest report lists
-- it, and the sum of their execution counts (cumulative per install).
CREATE VIEW IF NOT EXISTS cli_command_usage_daily AS
SELECT day, command_path, cli_command_installs[command_path] AS installs,
       cli_command_executions[command_path] AS executions, cli_active_installs AS active_installs
FROM analyst_daily FINAL
ARRAY JOIN mapKeys(cli_command_installs) AS command_path;

-- Data quality per day, over the deployments that reported that day.
CREATE VIEW IF NOT EXISTS data_quality_daily AS
SELECT a.day AS day, a.reported_deployments AS deployments, a.reported_default_uid_deployments AS default_uid_deployments,
       a.reported_inconsistent_deployments AS inconsistent_deployments,
       length(arrayDistinct(arrayMap(j -> j.1, a.jumps))) AS jumping_deployments, length(a.jumps) AS jumps
FROM analyst_daily AS a FINAL;

-- Day-over-day jumps beyond a factor of 10: a reported figure against the one the deployment carried the day
-- before (its latest report of the 7 days before), where the larger of the two is at least 100.
CREATE VIEW IF NOT EXISTS sender_jumps_daily AS
SELECT day, j.1 AS uid, j.2 AS metric, j.3 AS previous_day, j.4 AS previous, j.5 AS current,
       round(greatest(j.4, j.5) / greatest(least(j.4, j.5), 1), 2) AS factor
FROM analyst_daily FINAL
ARRAY JOIN jumps AS j;

-- The same for another factor, computed on the fly: sender_jumps(factor = 5, first = '2025-01-01', last = '2025-01-31').
CREATE VIEW IF NOT EXISTS sender_jumps AS
SELECT day, j.1 AS uid, j.2 AS metric, j.3 AS previous_day, j.4 AS previous, j.5 AS current,
       round(greatest(j.4, j.5) / greatest(least(j.4, j.5), 1), 2) AS factor
FROM
(
    SELECT target AS day,
           arrayMap(m -> (uid, m.1, prev_day, m.2, m.3),
                    arrayFilter(m -> greatest(m.2, m.3) >= 100
                                     AND toUInt128(greatest(m.2, m.3)) > toUInt128({factor:UInt32}) * greatest(least(m.2, m.3), 1),
                                [('end_devices', prev_end_devices, cur_end_devices), ('gateways', prev_gateways, cur_gateways),
                                 ('applications', prev_applications, cur_applications), ('users', prev_users, cur_users),
                                 ('organizations', prev_organizations, cur_organizations)])) AS uid_jumps
    FROM
    (
        SELECT target, any(s.uid) AS uid, maxIf(s.day, s.day < target) AS prev_day,
               argMaxIf(s.gateways_effective, s.day, s.day = target) AS cur_gateways,
               argMaxIf(s.end_devices, s.day, s.day = target) AS cur_end_devices,
               argMaxIf(s.applications, s.day, s.day = target) AS cur_applications,
               argMaxIf(s.users, s.day, s.day = target) AS cur_users,
               argMaxIf(s.organizations, s.day, s.day = target) AS cur_organizations,
               argMaxIf(s.gateways_effective, s.day, s.day < target) AS prev_gateways,
               argMaxIf(s.end_devices, s.day, s.day < target) AS prev_end_devices,
               argMaxIf(s.applications, s.day, s.day < target) AS prev_applications,
               argMaxIf(s.users, s.day, s.day < target) AS prev_users,
               argMaxIf(s.organizations, s.day, s.day < target) AS prev_organizations
        FROM
        (
            SELECT day, uid, sipHash128(uid) AS key, end_devices, applications, organizations,
                   users_standard + users_admin AS users,
                   if(gateways > 0, gateways, arraySum(mapValues(gateways_by_frequency_plan))) AS gateways_effective
            FROM snapshots FINAL
            WHERE kind = 'is' AND day >= {first:Date} - 7 AND day <= {last:Date}
        ) AS s
        ARRAY JOIN arrayFilter(t -> t >= s.day AND t <= s.day + 7 AND t >= {first:Date} AND t <= {last:Date},
                               [s.day, s.day + 1, s.day + 2, s.day + 3, s.day + 4, s.day + 5, s.day + 6, s.day + 7]) AS target
        GROUP BY target, s.key
        HAVING countIf(s.day = target) > 0 AND prev_day > toDate(0)
    )
)
ARRAY JOIN uid_jumps AS j;

-- Per UID: first and last day seen and the number of days seen.
CREATE VIEW IF NOT EXISTS sender_lifespans AS
SELECT kind, uid, min(first_day) AS first_seen, max(last_day) AS last_seen, groupBitmapMerge(days) AS days_seen
FROM uid_activity
GROUP BY kind, uid;

-- The lifecycle with the defaults (G = 7), per day with data: refreshed with analyst_daily.
CREATE VIEW IF NOT EXISTS deployment_lifecycle_daily AS
SELECT day, is_active_1d AS active_1d, is_active_7d AS active_7d, is_active_30d AS active_30d, is_new AS new,
       is_returning AS returning, is_churned AS churned
FROM analyst_daily FINAL;

CREATE VIEW IF NOT EXISTS cli_lifecycle_daily AS
SELECT day, cli_active_1d AS active_1d, cli_active_7d AS active_7d, cli_active_30d AS active_30d, cli_new AS new,
       cli_returning AS returning, cli_churned AS churned
FROM analyst_daily FINAL;

-- Retention by first-seen cohort: of the UIDs first seen in a week (its Monday) or month (its first day), how many
-- were seen again N weeks or months later (on any day of that week or month). Recomputed whole from uid_activity
-- by retention_refresh whenever snapshots changed (the total change count it saw is kept): the newest wins.
CREATE TABLE IF NOT EXISTS retention_cohorts
(
    computed_at DateTime64(6, 'UTC'),
    inputs_seen UInt64,
    weekly Array(Tuple(kind String, cohort Date, periods_since UInt32, active UInt64)),
    monthly Array(Tuple(kind String, cohort Date, periods_since UInt32, active UInt64))
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY tuple();

CREATE MATERIALIZED VIEW IF NOT EXISTS retention_refresh
REFRESH EVERY 10 SECOND APPEND TO retention_cohorts AS
WITH (SELECT sum(changes) FROM snapshot_changes) AS inputs
SELECT now64(6, 'UTC') AS computed_at, inputs AS inputs_seen,
       (SELECT groupArray((kind, cohort, periods_since, active))
        FROM (SELECT kind, cohort, toUInt32(intDiv(week - cohort, 7)) AS periods_since, count() AS active
              FROM (SELECT kind, toMonday(min(first_day)) AS cohort,
                           arrayMap(x -> DATE '1970-01-01' + x, bitmapToArray(groupBitmapMergeState(weeks))) AS weeks
                    FROM uid_activity GROUP BY kind, uid)
              ARRAY JOIN weeks AS week
              GROUP BY kind, cohort, periods_since)) AS weekly,
       (SELECT groupArray((kind, cohort, periods_since, active))
        FROM (SELECT kind, cohort, toUInt32(dateDiff('month', cohort, month)) AS periods_since, count() AS active
              FROM (SELECT kind, toStartOfMonth(min(first_day)) AS cohort,
                           arrayMap(x -> DATE '1970-01-01' + x, bitmapToArray(groupBitmapMergeState(months))) AS months
                    FROM uid_activity GROUP BY kind, uid)
              ARRAY JOIN months AS month
              GROUP BY kind, cohort, periods_since)) AS monthly
WHERE inputs > (SELECT max(inputs_seen) FROM retention_cohorts);

CREATE VIEW IF NOT EXISTS retention_weekly AS
SELECT kind, cohort, weeks_since, max(active) OVER (PARTITION BY kind, cohort) AS cohort_size, active,
       round(active / cohort_size, 6) AS retention
FROM
(
    SELECT r.1 AS kind, r.2 AS cohort, r.3 AS weeks_since, r.4 AS active
    FROM (SELECT weekly FROM retention_cohorts FINAL)
    ARRAY JOIN weekly AS r
);

CREATE VIEW IF NOT EXISTS retention_monthly AS
SELECT kind, cohort, months_since, max(active) OVER (PARTITION BY kind, cohort) AS cohort_size, active,
       round(active / cohort_size, 6) AS retention
FROM
(
    SELECT r.1 AS kind, r.2 AS cohort, r.3 AS months_since, r.4 AS active
    FROM (SELECT monthly FROM retention_cohorts FINAL)
    ARRAY JOIN monthly AS r
);
