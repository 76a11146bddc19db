-- The analysts' figures updated in proportion to what changed (issue 25). Until here the refresh recomputed each due
-- day whole from `snapshots FINAL` (analyst_compute): its cost grew with the fleet. Now each UID's share of every
-- figure is kept, as events, and a write changes only the shares of the UIDs it wrote (sinks/analysts.py):
--   * analyst_history: every snapshot row as the analysts read it, ordered by UID (a write's UIDs are looked up, not
--     scanned for). A deployment keeps its latest snapshot of each day; a CLI install every distinct report;
--   * analyst_first_seen: each UID's first and last day (as uid_activity, ordered by UID);
--   * analyst_events: per UID, where each of its contributions to a figure starts (+value) and ends (-value): the
--     figure of day D is the sum of every event up to D (the `totals` projection sums them per day). A UID's events
--     are computed from its history alone (analyst_uid_events); the applier (sinks/analysts.py) inserts the
--     difference between those and the events already stored for it, so applying a UID again inserts nothing;
--   * analyst_dirty: the UIDs written since they were last applied (fed from analyst_history): the applier's queue;
--   * analyst_jumps: the day-over-day jumps of each deployment and day (only those with jumps);
--   * analyst_assemble: analyst_daily's row of the given days, from the events (and, for behind_top, the largest
--     candidates' history): what analyst_daily_refresh now selects. analyst_compute stays, the definition the
--     events are checked against (tests/test_analyst_incremental.py);
--   * the events count as changes of the days with data they touch (snapshot_changes), after their rows are in;
--     analyst_daily_state no longer scans every UID's first day (a late first day changes events too);
--   * retention_refresh sums the retention events.
-- analyst_daily, retention_cohorts and every view over them keep their names and columns.

CREATE TABLE IF NOT EXISTS analyst_history
(
    kind LowCardinality(String),
    key FixedString(16),
    day Date,
    report UInt64,
    version UInt128,
    uid String,
    default_uid UInt8,
    inconsistent UInt8,
    gateways UInt64,
    gateways_effective UInt64,
    end_devices UInt64,
    active_end_devices UInt64,
    active_last_day UInt64,
    active_last_week UInt64,
    active_last_month UInt64,
    applications UInt64,
    users_standard UInt64,
    users_admin UInt64,
    organizations UInt64,
    ordinal UInt32,
    dev UInt8,
    plans Map(LowCardinality(String), UInt64),
    version_major_minor LowCardinality(String),
    operating_system LowCardinality(String),
    arch LowCardinality(String),
    commands Array(Tuple(String, UInt64)),
    aliases Array(Tuple(String, String, UInt64)),
    reports_usage UInt8,
    PROJECTION by_version_size (SELECT * ORDER BY kind, ordinal, end_devices)
)
ENGINE = ReplacingMergeTree(version)
PRIMARY KEY (kind, key)
ORDER BY (kind, key, day, report)
SETTINGS index_granularity = 64, deduplicate_merge_projection_mode = 'rebuild';

-- One row per snapshot written: the key is the UID's 128-bit SipHash (as analyst_compute groups them); `report` is 0
-- for a deployment (the latest of the day wins, as in snapshots) and the body's hash for a CLI report (as in
-- cli_reports: every distinct report counts its uses).
CREATE MATERIALIZED VIEW IF NOT EXISTS analyst_history_mv TO analyst_history AS
SELECT kind, sipHash128(uid) AS key, day, if(kind = 'cli', reinterpretAsUInt64(MD5(body)), 0) AS report, version, uid,
       toUInt8(default_uid) AS default_uid, toUInt8(notEmpty(flags)) AS inconsistent, gateways,
       if(gateways > 0, gateways, arraySum(mapValues(gateways_by_frequency_plan))) AS gateways_effective,
       end_devices, active_end_devices, active_last_day, active_last_week, active_last_month, applications,
       users_standard, users_admin, organizations,
       if(match(version_major_minor, '^[0-9]{1,3}\\.[0-9]{1,3}$'), toUInt32OrZero(splitByChar('.', version_major_minor)[1]) * 1000 + toUInt32OrZero(splitByChar('.', version_major_minor)[2]), 0) AS ordinal,
       toUInt8(position(binary_version, '-dev') > 0) AS dev,
       gateways_by_frequency_plan AS plans, version_major_minor, operating_system, arch,
       if(kind = 'cli',
          arrayMap(u -> (assumeNotNull(u.1), u.2),
                   arrayFilter(u -> isNotNull(u.1),
                               arrayConcat(JSONExtract(cli, 'commands', 'Array(Tuple(command_path Nullable(String), execution_count UInt64))'),
                                           arrayFlatten(arrayMap(kv -> JSONExtract(kv.2, 'commands', 'Array(Tuple(command_path Nullable(String), execution_count UInt64))'),
                                                                 arrayFilter(kv -> JSONType(kv.2) = 'Object', JSONExtractKeysAndValuesRaw(cli))))))),
          []) AS commands,
       if(kind = 'cli',
          arrayMap(u -> (assumeNotNull(u.1), assumeNotNull(u.2), u.3),
                   arrayFilter(u -> isNotNull(u.1) AND isNotNull(u.2),
                               arrayConcat(JSONExtract(cli, 'aliases', 'Array(Tuple(command_name Nullable(String), alias Nullable(String), usage_count UInt64))'),
                                           arrayFlatten(arrayMap(kv -> JSONExtract(kv.2, 'aliases', 'Array(Tuple(command_name Nullable(String), alias Nullable(String), usage_count UInt64))'),
                                                                 arrayFilter(kv -> JSONType(kv.2) = 'Object', JSONExtractKeysAndValuesRaw(cli))))))),
          []) AS aliases,
       toUInt8(kind = 'cli' AND (JSONHas(cli, 'commands') OR JSONHas(cli, 'aliases')
               OR arrayExists(kv -> JSONType(kv.2) = 'Object' AND (JSONHas(kv.2, 'commands') OR JSONHas(kv.2, 'aliases')),
                              JSONExtractKeysAndValuesRaw(cli)))) AS reports_usage
FROM snapshots;

-- The UIDs whose history changed and whose events have not followed yet: the applier (sinks/analysts.py) takes them,
-- applies them, then deletes exactly the (key, version) rows it took (a later version of a UID stays, to be applied).
CREATE TABLE IF NOT EXISTS analyst_dirty
(
    key FixedString(16),
    uid String,
    version UInt128
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key;

CREATE MATERIALIZED VIEW IF NOT EXISTS analyst_dirty_mv TO analyst_dirty AS
SELECT key, uid, version FROM analyst_history;

-- Rows already stored: the snapshots, and the CLI reports a later report of the same day replaced in snapshots
-- (cli_reports keeps them; their version, below the latest's, only orders them).
INSERT INTO analyst_history
SELECT kind, sipHash128(uid), day, if(kind = 'cli', reinterpretAsUInt64(MD5(body)), 0), version, uid,
       toUInt8(default_uid), toUInt8(notEmpty(flags)), gateways,
       if(gateways > 0, gateways, arraySum(mapValues(gateways_by_frequency_plan))),
       end_devices, active_end_devices, active_last_day, active_last_week, active_last_month, applications,
       users_standard, users_admin, organizations,
       if(match(version_major_minor, '^[0-9]{1,3}\\.[0-9]{1,3}$'), toUInt32OrZero(splitByChar('.', version_major_minor)[1]) * 1000 + toUInt32OrZero(splitByChar('.', version_major_minor)[2]), 0),
       toUInt8(position(binary_version, '-dev') > 0),
       gateways_by_frequency_plan, version_major_minor, operating_system, arch,
       if(kind = 'cli',
          arrayMap(u -> (assumeNotNull(u.1), u.2),
                   arrayFilter(u -> isNotNull(u.1),
                               arrayConcat(JSONExtract(cli, 'commands', 'Array(Tuple(command_path Nullable(String), execution_count UInt64))'),
                                           arrayFlatten(arrayMap(kv -> JSONExtract(kv.2, 'commands', 'Array(Tuple(command_path Nullable(String), execution_count UInt64))'),
                                                                 arrayFilter(kv -> JSONType(kv.2) = 'Object', JSONExtractKeysAndValuesRaw(cli))))))),
          []),
       if(kind = 'cli',
          arrayMap(u -> (assumeNotNull(u.1), assumeNotNull(u.2), u.3),
                   arrayFilter(u -> isNotNull(u.1) AND isNotNull(u.2),
                               arrayConcat(JSONExtract(cli, 'aliases', 'Array(Tuple(command_name Nullable(String), alias Nullable(String), usage_count UInt64))'),
                                           arrayFlatten(arrayMap(kv -> JSONExtract(kv.2, 'aliases', 'Array(Tuple(command_name Nullable(String), alias Nullable(String), usage_count UInt64))'),
                                                                 arrayFilter(kv -> JSONType(kv.2) = 'Object', JSONExtractKeysAndValuesRaw(cli))))))),
          []),
       toUInt8(kind = 'cli' AND (JSONHas(cli, 'commands') OR JSONHas(cli, 'aliases')
               OR arrayExists(kv -> JSONType(kv.2) = 'Object' AND (JSONHas(kv.2, 'commands') OR JSONHas(kv.2, 'aliases')),
                              JSONExtractKeysAndValuesRaw(cli))))
FROM snapshots;

INSERT INTO analyst_history (kind, key, day, report, version, uid, version_major_minor, commands, aliases, reports_usage)
SELECT 'cli', sipHash128(uid), day, body_hash, toUInt128(toUnixTimestamp64Milli(received_at)) * toUInt128(18446744073709551616), uid,
       version_major_minor,
       arrayMap(u -> (assumeNotNull(u.1), u.2),
                arrayFilter(u -> isNotNull(u.1),
                            arrayConcat(JSONExtract(cli, 'commands', 'Array(Tuple(command_path Nullable(String), execution_count UInt64))'),
                                        arrayFlatten(arrayMap(kv -> JSONExtract(kv.2, 'commands', 'Array(Tuple(command_path Nullable(String), execution_count UInt64))'),
                                                              arrayFilter(kv -> JSONType(kv.2) = 'Object', JSONExtractKeysAndValuesRaw(cli))))))),
       arrayMap(u -> (assumeNotNull(u.1), assumeNotNull(u.2), u.3),
                arrayFilter(u -> isNotNull(u.1) AND isNotNull(u.2),
                            arrayConcat(JSONExtract(cli, 'aliases', 'Array(Tuple(command_name Nullable(String), alias Nullable(String), usage_count UInt64))'),
                                        arrayFlatten(arrayMap(kv -> JSONExtract(kv.2, 'aliases', 'Array(Tuple(command_name Nullable(String), alias Nullable(String), usage_count UInt64))'),
                                                              arrayFilter(kv -> JSONType(kv.2) = 'Object', JSONExtractKeysAndValuesRaw(cli))))))),
       toUInt8(JSONHas(cli, 'commands') OR JSONHas(cli, 'aliases')
               OR arrayExists(kv -> JSONType(kv.2) = 'Object' AND (JSONHas(kv.2, 'commands') OR JSONHas(kv.2, 'aliases')),
                              JSONExtractKeysAndValuesRaw(cli)))
FROM cli_reports
WHERE (day, uid, body_hash) NOT IN (SELECT day, uid, reinterpretAsUInt64(MD5(body)) FROM snapshots WHERE kind = 'cli');

-- Each UID's first and last day, as uid_activity holds them (and with its TTL: sinks/retention.py).
CREATE TABLE IF NOT EXISTS analyst_first_seen
(
    kind LowCardinality(String),
    key FixedString(16),
    first_day SimpleAggregateFunction(min, Date),
    last_day SimpleAggregateFunction(max, Date)
)
ENGINE = AggregatingMergeTree
ORDER BY (kind, key)
SETTINGS index_granularity = 64;

CREATE MATERIALIZED VIEW IF NOT EXISTS analyst_first_seen_mv TO analyst_first_seen AS
SELECT kind, sipHash128(uid) AS key, min(day) AS first_day, max(day) AS last_day
FROM snapshots
GROUP BY kind, key;

INSERT INTO analyst_first_seen
SELECT kind, sipHash128(uid) AS key, min(first_day), max(last_day) FROM uid_activity GROUP BY kind, key;

-- Per UID, where each contribution to a figure starts and ends (see the top). `bucket`, `label`, `label2`: the key of
-- a figure that is a map or a list (a version's ordinal, a size bucket, a region, a command path, an alias). The
-- retention events are not summed over days: `day` is the week (month) the UID was seen in, `bucket` the weeks
-- (months) since its cohort's.
CREATE TABLE IF NOT EXISTS analyst_events
(
    kind LowCardinality(String),
    key FixedString(16),
    metric LowCardinality(String),
    label String,
    label2 String,
    bucket UInt32,
    day Date,
    value Int128,
    PROJECTION totals
    (
        SELECT kind, metric, label, label2, bucket, day, sum(value)
        GROUP BY kind, metric, label, label2, bucket, day
    )
)
ENGINE = SummingMergeTree
PRIMARY KEY (kind, key)
ORDER BY (kind, key, metric, label, label2, bucket, day)
SETTINGS index_granularity = 64, deduplicate_merge_projection_mode = 'rebuild';

-- The UIDs an apply works on (sinks/analysts.py): its token's keys, deleted when it is done (in memory: nothing of it
-- is kept across a restart, nor needs to be).
CREATE TABLE IF NOT EXISTS analyst_apply_keys
(
    token UInt64,
    key FixedString(16)
)
ENGINE = Memory;

-- The history of the UIDs an apply works on, read once from analyst_history (FINAL) under the apply's token: the
-- views below read it several times (in memory; deleted when the apply is done).
CREATE TABLE IF NOT EXISTS analyst_apply_history
(
    token UInt64,
    kind LowCardinality(String),
    key FixedString(16),
    day Date,
    report UInt64,
    version UInt128,
    uid String,
    default_uid UInt8,
    inconsistent UInt8,
    gateways UInt64,
    gateways_effective UInt64,
    end_devices UInt64,
    active_end_devices UInt64,
    active_last_day UInt64,
    active_last_week UInt64,
    active_last_month UInt64,
    applications UInt64,
    users_standard UInt64,
    users_admin UInt64,
    organizations UInt64,
    ordinal UInt32,
    dev UInt8,
    plans Map(LowCardinality(String), UInt64),
    version_major_minor LowCardinality(String),
    operating_system LowCardinality(String),
    arch LowCardinality(String),
    commands Array(Tuple(String, UInt64)),
    aliases Array(Tuple(String, String, UInt64)),
    reports_usage UInt8
)
ENGINE = Memory;

-- The events of the UIDs of an apply's token, computed from their history alone: analyst_uid_events(token = ...). Look-back 7 days
-- (the carried-forward fleet, CLI installs), 30 (CLI activity and usage), gap 7 (returning, churned), jump factor 10:
-- the defaults analyst_daily is kept with (analyst_compute takes others).
CREATE VIEW IF NOT EXISTS analyst_uid_events AS
WITH (SELECT groupArray((prefix, region)) FROM frequency_plan_regions) AS region_rules
SELECT kind, key, metric, label, label2, bucket, day, sum(value) AS value
FROM
(
    -- deployments: each day's snapshot is carried over [day, next snapshot day or day + 7); it is reported on its day
    SELECT 'is' AS kind, key, c.1 AS metric, c.2 AS label, '' AS label2, c.3 AS bucket,
           if(e = 1, day, if(c.5, day + 1, least(next_day, day + 7))) AS day, toInt128(c.4) * e AS value
    FROM
    (
        SELECT key, day, leadInFrame(day, 1, toDate('2149-06-06')) OVER (PARTITION BY key ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS next_day,
               default_uid, inconsistent, gateways, gateways_effective, end_devices, active_end_devices, active_last_day,
               active_last_week, active_last_month, applications, users_standard, users_admin, organizations, ordinal, dev,
               multiIf(gateways_effective = 0, 0, gateways_effective < 10, 1, gateways_effective < 100, 10,
                       gateways_effective < 1000, 100, gateways_effective < 10000, 1000, 10000) AS gateway_bucket,
               multiIf(end_devices = 0, 0, end_devices < 10, 1, end_devices < 100, 10, end_devices < 1000, 100,
                       end_devices < 10000, 1000, 10000) AS end_device_bucket,
               arrayMap(p -> if(empty(arrayFirst(r -> startsWith(p, r.1), region_rules).2), 'other',
                                arrayFirst(r -> startsWith(p, r.1), region_rules).2), mapKeys(plans)) AS plan_regions,
               mapValues(plans) AS plan_gateways,
               arrayDistinct(arrayFilter((r, g) -> g > 0, plan_regions, plan_gateways)) AS deployment_regions
        FROM analyst_apply_history
        WHERE kind = 'is' AND token = {token:UInt64}
    )
    -- (metric, label, bucket, value, reported only)
    ARRAY JOIN arrayConcat(
        [('deployments', '', 0, 1, false), ('gateways', '', 0, gateways, false), ('end_devices', '', 0, end_devices, false),
         ('active_end_devices', '', 0, active_end_devices, false), ('active_last_day', '', 0, active_last_day, false),
         ('active_last_week', '', 0, active_last_week, false), ('active_last_month', '', 0, active_last_month, false),
         ('applications', '', 0, applications, false), ('users_standard', '', 0, users_standard, false),
         ('users_admin', '', 0, users_admin, false), ('organizations', '', 0, organizations, false),
         ('default_uid_deployments', '', 0, toUInt64(default_uid), false),
         ('inconsistent_deployments', '', 0, toUInt64(inconsistent), false),
         ('gateway_buckets_carried', '', toUInt32(gateway_bucket), 1, false),
         ('end_device_buckets_carried', '', toUInt32(end_device_bucket), 1, false),
         ('versions', '', ordinal, 1, false), ('versions_release', '', ordinal, toUInt64(dev = 0), false),
         -- for behind_top: the deployments per version and end-device size class (bit length)
         ('versions_sizes', '', ordinal * 65 + toUInt32(arrayFirstIndex(i -> bitShiftRight(end_devices, i) = 0, range(65)) - 1),
          toUInt64(ordinal > 0), false),
         ('reported_deployments', '', 0, 1, true), ('reported_default_uid_deployments', '', 0, toUInt64(default_uid), true),
         ('reported_inconsistent_deployments', '', 0, toUInt64(inconsistent), true),
         ('gateway_buckets', '', toUInt32(gateway_bucket), 1, true), ('end_device_buckets', '', toUInt32(end_device_bucket), 1, true)],
        arrayMap(r -> ('region_deployments_carried', r, toUInt32(0), toUInt64(1), false), deployment_regions),
        arrayMap(r -> ('region_deployments', r, toUInt32(0), toUInt64(1), true), deployment_regions),
        arrayMap((r, g) -> ('region_gateways_carried', r, toUInt32(0), g, false), plan_regions, plan_gateways),
        arrayMap((r, g) -> ('region_gateways', r, toUInt32(0), g, true), plan_regions, plan_gateways)) AS c
    ARRAY JOIN [1, -1] AS e

    UNION ALL

    -- CLI installs: each day's latest report is carried over [day, next report day or day + 7) (installs) and
    -- [day, next or day + 30) (active installs, by version, OS and arch)
    SELECT 'cli' AS kind, key, c.1 AS metric, c.2 AS label, '' AS label2, 0 AS bucket,
           if(e = 1, day, least(next_day, day + c.3)) AS day, toInt128(e) AS value
    FROM
    (
        SELECT key, day, leadInFrame(day, 1, toDate('2149-06-06')) OVER (PARTITION BY key ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS next_day,
               latest.1 AS version_major_minor, latest.2 AS operating_system, latest.3 AS arch
        FROM
        (
            SELECT key, day, argMax((toString(version_major_minor), toString(operating_system), toString(arch)), version) AS latest
            FROM analyst_apply_history
            WHERE kind = 'cli' AND token = {token:UInt64}
            GROUP BY key, day
        )
    )
    ARRAY JOIN [('cli_installs', '', 7), ('cli_active_installs', '', 30), ('cli_versions_active', version_major_minor, 30),
                ('cli_os_active', operating_system, 30), ('cli_arch_active', arch, 30)] AS c
    ARRAY JOIN [1, -1] AS e

    UNION ALL

    -- CLI usage: every report's executions and uses count over [day, day + 30); an install counts for a command
    -- (alias) while a report of the last 30 days names it: runs of days closer than 30
    SELECT 'cli' AS kind, key, metric, label, label2, 0 AS bucket, day, sum(value) AS value
    FROM
    (
        SELECT key, u.1 AS metric, u.2 AS label, u.3 AS label2, if(e = 1, day, day + 30) AS day, toInt128(u.4) * e AS value
        FROM analyst_apply_history
        ARRAY JOIN arrayConcat(arrayMap(x -> ('cli_command_executions', x.1, '', x.2), commands),
                               arrayMap(x -> ('cli_alias_uses', x.1, x.2, x.3), aliases)) AS u
        ARRAY JOIN [1, -1] AS e
        WHERE kind = 'cli' AND token = {token:UInt64}
        UNION ALL
        SELECT key, metric, label, label2, ev.1 AS day, toInt128(ev.2) AS value
        FROM
        (
            SELECT key, metric, label, label2, arraySort(groupUniqArray(day)) AS ds,
                   arrayPushFront(arrayPopFront(arrayDifference(ds)), toInt64(4294967295)) AS gap_before,
                   arrayPushBack(arrayPopFront(arrayDifference(ds)), toInt64(4294967295)) AS gap_after
            FROM
            (
                SELECT key, day, u.1 AS metric, u.2 AS label, u.3 AS label2
                FROM analyst_apply_history
                ARRAY JOIN arrayConcat(arrayMap(x -> ('cli_command_installs', x.1, ''), commands),
                                       arrayMap(x -> ('cli_alias_installs', x.1, x.2), aliases)) AS u
                WHERE kind = 'cli' AND token = {token:UInt64}
            )
            GROUP BY key, metric, label, label2
        )
        ARRAY JOIN arrayConcat(arrayMap(d -> (d, 1), arrayFilter((d, x) -> x > 30, ds, gap_before)),
                               arrayMap(d -> (d + 30, -1), arrayFilter((d, x) -> x > 30, ds, gap_after))) AS ev
    )
    GROUP BY key, metric, label, label2, day

    UNION ALL

    -- the lifecycle (both kinds): runs of activity (days closer than k apart: active_1d, 7d, 30d), the first day
    -- (new), returns after a gap of more than 7 days, churns 7 days after a last day; each counts on its day
    -- [d, d + 1); the CLI installs first seen, split by their report of that day; the retention cohorts
    SELECT kind, key, ev.1 AS metric, '' AS label, '' AS label2, ev.4 AS bucket, ev.2 AS day, toInt128(ev.3) AS value
    FROM
    (
        SELECT h.kind AS kind, h.key AS key, h.ds AS ds, h.usage AS usage, f.first_seen AS first_seen,
               arrayPushFront(arrayPopFront(arrayDifference(ds)), toInt64(4294967295)) AS gap_before,
               arrayPushBack(arrayPopFront(arrayDifference(ds)), toInt64(4294967295)) AS gap_after,
               if(arrayReverseSort(u -> u.2, arrayFilter(u -> u.1 = first_seen, usage))[1].3 = 1, 'cli_new_2025', 'cli_new_older') AS m_new
        FROM
        (
            SELECT kind, key, arraySort(groupUniqArray(day)) AS ds,
                   groupArrayIf((day, version, reports_usage), kind = 'cli') AS usage
            FROM analyst_apply_history
            WHERE token = {token:UInt64}
            GROUP BY kind, key
        ) AS h
        INNER JOIN
        (
            SELECT kind, key, min(first_day) AS first_seen
            FROM analyst_first_seen
            WHERE key IN (SELECT key FROM analyst_apply_keys WHERE token = {token:UInt64})
            GROUP BY kind, key
        ) AS f ON f.kind = h.kind AND f.key = h.key
    )
    ARRAY JOIN arrayConcat(
        arrayMap(d -> ('active_1d', d, 1, 0), arrayFilter((d, x) -> x > 1, ds, gap_before)),
        arrayMap(d -> ('active_1d', d + 1, -1, 0), arrayFilter((d, x) -> x > 1, ds, gap_after)),
        arrayMap(d -> ('active_7d', d, 1, 0), arrayFilter((d, x) -> x > 7, ds, gap_before)),
        arrayMap(d -> ('active_7d', d + 7, -1, 0), arrayFilter((d, x) -> x > 7, ds, gap_after)),
        arrayMap(d -> ('active_30d', d, 1, 0), arrayFilter((d, x) -> x > 30, ds, gap_before)),
        arrayMap(d -> ('active_30d', d + 30, -1, 0), arrayFilter((d, x) -> x > 30, ds, gap_after)),
        [('new', first_seen, 1, 0), ('new', first_seen + 1, -1, 0)],
        arrayFlatten(arrayMap(d -> [('returning', d, 1, 0), ('returning', d + 1, -1, 0)],
                              arrayFilter((d, x) -> x > 7 AND first_seen + 7 < d, ds, gap_before))),
        arrayFlatten(arrayMap(d -> [('churned', d + 7, 1, 0), ('churned', d + 8, -1, 0)],
                              arrayFilter((d, x) -> x > 7, ds, gap_after))),
        -- the CLI install first seen on its first day, by its latest report of that day
        if(kind = 'cli' AND arrayExists(u -> u.1 = first_seen, usage), [(m_new, first_seen, 1, 0), (m_new, first_seen + 1, -1, 0)], []),
        arrayMap(w -> ('retention_weekly', w, 1, toUInt32(intDiv(w - toMonday(first_seen), 7))),
                 arrayDistinct(arrayMap(d -> toMonday(d), ds))),
        arrayMap(m -> ('retention_monthly', m, 1, toUInt32(dateDiff('month', toStartOfMonth(first_seen), m))),
                 arrayDistinct(arrayMap(d -> toStartOfMonth(d), ds)))) AS ev
)
GROUP BY kind, key, metric, label, label2, bucket, day
HAVING value != 0;

-- The day-over-day jumps of each deployment's reported days (only the days with a jump; a day whose jumps went away
-- gets an empty row, which replaces the older).
CREATE TABLE IF NOT EXISTS analyst_jumps
(
    day Date,
    key FixedString(16),
    written_at DateTime64(6, 'UTC'),
    jumps Array(Tuple(uid String, metric LowCardinality(String), previous_day Date, previous UInt64, current UInt64))
)
ENGINE = ReplacingMergeTree(written_at)
ORDER BY (day, key);

-- The jumps of the reported days of the UIDs of an apply's token (analyst_uid_jumps(token = ...)): against the UID's previous snapshot of [day - 7, day - 1], a figure
-- that grew or shrank more than 10 times with the larger at least 100.
CREATE VIEW IF NOT EXISTS analyst_uid_jumps AS
SELECT day, key,
       arrayMap(m -> (uid, m.1, prev_day, m.2, m.3),
                arrayFilter(m -> greatest(m.2, m.3) >= 100 AND toUInt128(greatest(m.2, m.3)) > toUInt128(10) * greatest(least(m.2, m.3), 1),
                            [('end_devices', prev.2, end_devices), ('gateways', prev.3, gateways_effective),
                             ('applications', prev.4, applications), ('users', prev.5, users_standard + users_admin),
                             ('organizations', prev.6, organizations)])) AS jumps
FROM
(
    SELECT key, day, uid, end_devices, gateways_effective, applications, users_standard, users_admin, organizations,
           lagInFrame((day, end_devices, gateways_effective, applications, users_standard + users_admin, organizations),
                      1, (toDate(0), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0)))
               OVER (PARTITION BY key ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS prev,
           prev.1 AS prev_day
    FROM analyst_apply_history
    WHERE kind = 'is' AND token = {token:UInt64}
)
WHERE prev_day >= day - 7 AND prev_day > toDate(0);

-- The events count as changes of the days with data they touch, once their rows are in (analyst_daily_pending).
CREATE MATERIALIZED VIEW IF NOT EXISTS analyst_event_changes_mv TO snapshot_changes AS
SELECT day, toUInt64(1) AS changes, max(now64(6, 'UTC')) AS changed_at
FROM analyst_events
WHERE day IN (SELECT day FROM snapshot_changes) AND metric NOT IN ('retention_weekly', 'retention_monthly')
GROUP BY day;

CREATE MATERIALIZED VIEW IF NOT EXISTS analyst_jump_changes_mv TO snapshot_changes AS
SELECT day, toUInt64(1) AS changes, max(now64(6, 'UTC')) AS changed_at
FROM analyst_jumps
WHERE day IN (SELECT day FROM snapshot_changes)
GROUP BY day;

-- Each figure's value on the given days: the sum of its events up to the day (the totals projection sums them per
-- day): analyst_totals(days = [...]). The retention events are summed by retention_refresh instead.
CREATE VIEW IF NOT EXISTS analyst_totals AS
SELECT target, kind, metric, label, label2, bucket, sum(value) AS v
FROM
(
    SELECT kind, metric, label, label2, bucket, day, sum(value) AS value
    FROM analyst_events
    WHERE notEmpty({days:Array(Date)}) AND day <= arrayMax({days:Array(Date)})
      AND metric NOT IN ('retention_weekly', 'retention_monthly')
    GROUP BY kind, metric, label, label2, bucket, day
)
ARRAY JOIN arrayFilter(t -> t >= day, {days:Array(Date)}) AS target
GROUP BY target, kind, metric, label, label2, bucket
HAVING v != 0;

-- Per day: the newest version (the newest that passes the bar: analyst_assemble), `reach`, the newest ordinal 3 or
-- more minor versions behind it, and `floor`: the smallest end-device count among the 25 largest deployments that far
-- behind is at least this (from the size classes; none behind: the largest UInt64).
CREATE VIEW IF NOT EXISTS analyst_behind_floors AS
SELECT target, newest, toUInt32(greatest(toInt64(newest) - 3, 0)) AS reach, floor
FROM
(
    SELECT target,
           sumIf(v, metric = 'deployments') AS deployments,
           groupArrayIf((bucket, toUInt64(v)), metric = 'versions_release') AS on_release,
           arrayMax(arrayConcat([toUInt32(0)],
                                arrayMap(x -> x.1, arrayFilter(x -> x.1 > 0 AND x.2 >= 3 AND x.2 * 100 >= deployments, on_release)))) AS newest,
           groupArrayIf((intDiv(bucket, 65), bucket % 65, toUInt64(v)), metric = 'versions_sizes') AS sizes,
           arrayMap(c -> arraySum(arrayMap(x -> if(x.2 = c AND x.1 > 0 AND toInt64(newest) - toInt64(x.1) >= 3, x.3, 0), sizes)),
                    range(65)) AS per_class,
           arrayReverse(arrayCumSum(arrayReverse(per_class))) AS at_or_above,
           arrayLastIndex(x -> x >= 25, at_or_above) AS top_index,
           arrayFirstIndex(x -> x > 0, per_class) AS lowest_index,
           multiIf(at_or_above[1] = 0, toUInt64(18446744073709551615),
                   top_index = 0, if(lowest_index <= 1, toUInt64(0), toUInt64(bitShiftLeft(toUInt64(1), lowest_index - 2))),
                   top_index <= 1, toUInt64(0), toUInt64(bitShiftLeft(toUInt64(1), top_index - 2))) AS floor
    FROM analyst_totals(days = {days:Array(Date)})
    WHERE kind = 'is' AND metric IN ('deployments', 'versions_release', 'versions_sizes')
    GROUP BY target
);

-- analyst_daily's rows of the given days, from the events: analyst_assemble(days = [...], seen = [...]).
CREATE VIEW IF NOT EXISTS analyst_assemble AS
WITH {days:Array(Date)} AS wanted,
     (SELECT (max(reach), min(floor)) FROM analyst_behind_floors(days = {days:Array(Date)})) AS bounds
SELECT
    t.day AS day,
    now64(6, 'UTC') AS computed_at,
    {seen:Array(UInt64)}[indexOf(wanted, t.day)] AS inputs_seen,
    t.deployments AS deployments, t.cli_installs AS cli_installs,
    t.gateways AS gateways, t.end_devices AS end_devices, t.active_end_devices AS active_end_devices,
    t.active_last_day AS active_last_day, t.active_last_week AS active_last_week, t.active_last_month AS active_last_month,
    t.applications AS applications, t.users_standard AS users_standard, t.users_admin AS users_admin,
    t.organizations AS organizations, t.default_uid_deployments AS default_uid_deployments,
    t.inconsistent_deployments AS inconsistent_deployments, t.reported_deployments AS reported_deployments,
    t.reported_default_uid_deployments AS reported_default_uid_deployments,
    t.reported_inconsistent_deployments AS reported_inconsistent_deployments,
    t.gateway_buckets AS gateway_buckets, t.gateway_buckets_carried AS gateway_buckets_carried,
    t.end_device_buckets AS end_device_buckets, t.end_device_buckets_carried AS end_device_buckets_carried,
    t.region_deployments AS region_deployments, t.region_deployments_carried AS region_deployments_carried,
    t.region_gateways AS region_gateways, t.region_gateways_carried AS region_gateways_carried,
    t.versions_carried AS versions_carried,
    CAST(mapFromArrays(
             arraySort(k -> -toInt64(if(match(k, '^[0-9]{1,3}\\.[0-9]{1,3}$'), toUInt32OrZero(splitByChar('.', k)[1]) * 1000 + toUInt32OrZero(splitByChar('.', k)[2]), 0)),
                       mapKeys(t.versions_carried)),
             arrayCumSum(arrayMap(k -> if(k = 'unknown', 0, t.versions_carried[k]),
                                  arraySort(k -> -toInt64(if(match(k, '^[0-9]{1,3}\\.[0-9]{1,3}$'), toUInt32OrZero(splitByChar('.', k)[1]) * 1000 + toUInt32OrZero(splitByChar('.', k)[2]), 0)),
                                            mapKeys(t.versions_carried)))))
         AS Map(LowCardinality(String), UInt64)) AS versions_at_or_above_carried,
    if(t.newest > 0, concat(toString(intDiv(t.newest, 1000)), '.', toString(t.newest % 1000)), '') AS newest_version,
    t.versions_behind_carried AS versions_behind_carried,
    t.cli_active_installs AS cli_active_installs, t.cli_versions_active AS cli_versions_active,
    t.cli_os_active AS cli_os_active, t.cli_arch_active AS cli_arch_active,
    t.cli_command_installs AS cli_command_installs, t.cli_command_executions AS cli_command_executions,
    ifNull(b.behind_top, []) AS behind_top, ifNull(j.jumps, []) AS jumps,
    t.is_active_1d AS is_active_1d, t.is_active_7d AS is_active_7d, t.is_active_30d AS is_active_30d, t.is_new AS is_new,
    t.is_returning AS is_returning, t.is_churned AS is_churned,
    t.cli_active_1d AS cli_active_1d, t.cli_active_7d AS cli_active_7d, t.cli_active_30d AS cli_active_30d,
    t.cli_new AS cli_new, t.cli_returning AS cli_returning, t.cli_churned AS cli_churned,
    t.cli_aliases AS cli_aliases, t.cli_new_2025 AS cli_new_2025, t.cli_new_older AS cli_new_older,
    t.versions_established AS versions_established
FROM
(
    SELECT
        day,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'deployments')) AS deployments,
        toUInt64(sumIf(val, kind = 'cli' AND metric = 'cli_installs')) AS cli_installs,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'gateways')) AS gateways,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'end_devices')) AS end_devices,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'active_end_devices')) AS active_end_devices,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'active_last_day')) AS active_last_day,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'active_last_week')) AS active_last_week,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'active_last_month')) AS active_last_month,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'applications')) AS applications,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'users_standard')) AS users_standard,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'users_admin')) AS users_admin,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'organizations')) AS organizations,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'default_uid_deployments')) AS default_uid_deployments,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'inconsistent_deployments')) AS inconsistent_deployments,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'reported_deployments')) AS reported_deployments,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'reported_default_uid_deployments')) AS reported_default_uid_deployments,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'reported_inconsistent_deployments')) AS reported_inconsistent_deployments,
        CAST(sumMapIf(map(toUInt64(bucket), toUInt64(val)), kind = 'is' AND metric = 'gateway_buckets') AS Map(UInt64, UInt64)) AS gateway_buckets,
        CAST(sumMapIf(map(toUInt64(bucket), toUInt64(val)), kind = 'is' AND metric = 'gateway_buckets_carried') AS Map(UInt64, UInt64)) AS gateway_buckets_carried,
        CAST(sumMapIf(map(toUInt64(bucket), toUInt64(val)), kind = 'is' AND metric = 'end_device_buckets') AS Map(UInt64, UInt64)) AS end_device_buckets,
        CAST(sumMapIf(map(toUInt64(bucket), toUInt64(val)), kind = 'is' AND metric = 'end_device_buckets_carried') AS Map(UInt64, UInt64)) AS end_device_buckets_carried,
        CAST(sumMapIf(map(label, toUInt64(val)), kind = 'is' AND metric = 'region_deployments') AS Map(LowCardinality(String), UInt64)) AS region_deployments,
        CAST(sumMapIf(map(label, toUInt64(val)), kind = 'is' AND metric = 'region_deployments_carried') AS Map(LowCardinality(String), UInt64)) AS region_deployments_carried,
        CAST(sumMapIf(map(label, toUInt64(val)), kind = 'is' AND metric = 'region_gateways') AS Map(LowCardinality(String), UInt64)) AS region_gateways,
        CAST(sumMapIf(map(label, toUInt64(val)), kind = 'is' AND metric = 'region_gateways_carried') AS Map(LowCardinality(String), UInt64)) AS region_gateways_carried,
        -- per ordinal: the carried deployments, and those on a release build (a version passes the bar, is
        -- established, when at least max(3, 1 %) of the carried deployments run a release build of it)
        arraySort(groupArrayIf((bucket, toUInt64(val)), kind = 'is' AND metric = 'versions')) AS on_version,
        groupArrayIf((bucket, toUInt64(val)), kind = 'is' AND metric = 'versions_release') AS on_release,
        arrayMap(x -> x.1, arrayFilter(x -> x.1 > 0 AND x.2 >= 3 AND x.2 * 100 >= deployments, on_release)) AS established,
        arrayMax(arrayConcat([toUInt32(0)], established)) AS newest,
        CAST(mapFromArrays(arrayMap(x -> if(x.1 = 0, 'unknown', concat(toString(intDiv(x.1, 1000)), '.', toString(x.1 % 1000))), on_version),
                           arrayMap(x -> x.2, on_version)) AS Map(LowCardinality(String), UInt64)) AS versions_carried,
        arrayReduce('sumMap', [arrayMap(x -> toUInt32(greatest(toInt64(newest) - toInt64(x.1), 0)), arrayFilter(x -> x.1 > 0, on_version))],
                    [arrayMap(x -> x.2, arrayFilter(x -> x.1 > 0, on_version))]) AS behind_sums,
        CAST(mapFromArrays(behind_sums.1, behind_sums.2) AS Map(UInt32, UInt64)) AS versions_behind_carried,
        arraySort(arrayMap(o -> concat(toString(intDiv(o, 1000)), '.', toString(o % 1000)), established)) AS versions_established,
        toUInt64(sumIf(val, kind = 'cli' AND metric = 'cli_active_installs')) AS cli_active_installs,
        CAST(sumMapIf(map(label, toUInt64(val)), kind = 'cli' AND metric = 'cli_versions_active') AS Map(LowCardinality(String), UInt64)) AS cli_versions_active,
        CAST(sumMapIf(map(label, toUInt64(val)), kind = 'cli' AND metric = 'cli_os_active') AS Map(LowCardinality(String), UInt64)) AS cli_os_active,
        CAST(sumMapIf(map(label, toUInt64(val)), kind = 'cli' AND metric = 'cli_arch_active') AS Map(LowCardinality(String), UInt64)) AS cli_arch_active,
        -- a command's (alias's) executions (uses) are listed for every command (alias) with installs
        arraySort(groupArrayIf((label, label2, toUInt64(val), toUInt64(val2)), kind = 'cli' AND metric = 'cli_command_installs')) AS commands,
        CAST(mapFromArrays(arrayMap(x -> x.1, commands), arrayMap(x -> x.3, commands)) AS Map(String, UInt64)) AS cli_command_installs,
        CAST(mapFromArrays(arrayMap(x -> x.1, commands), arrayMap(x -> x.4, commands)) AS Map(String, UInt64)) AS cli_command_executions,
        CAST(arraySort(groupArrayIf((label, label2, toUInt64(val), toUInt64(val2)), kind = 'cli' AND metric = 'cli_alias_installs'))
             AS Array(Tuple(command_name String, alias String, installs UInt64, uses UInt64))) AS cli_aliases,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'active_1d')) AS is_active_1d,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'active_7d')) AS is_active_7d,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'active_30d')) AS is_active_30d,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'new')) AS is_new,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'returning')) AS is_returning,
        toUInt64(sumIf(val, kind = 'is' AND metric = 'churned')) AS is_churned,
        toUInt64(sumIf(val, kind = 'cli' AND metric = 'active_1d')) AS cli_active_1d,
        toUInt64(sumIf(val, kind = 'cli' AND metric = 'active_7d')) AS cli_active_7d,
        toUInt64(sumIf(val, kind = 'cli' AND metric = 'active_30d')) AS cli_active_30d,
        toUInt64(sumIf(val, kind = 'cli' AND metric = 'new')) AS cli_new,
        toUInt64(sumIf(val, kind = 'cli' AND metric = 'returning')) AS cli_returning,
        toUInt64(sumIf(val, kind = 'cli' AND metric = 'churned')) AS cli_churned,
        toUInt64(sumIf(val, kind = 'cli' AND metric = 'cli_new_2025')) AS cli_new_2025,
        toUInt64(sumIf(val, kind = 'cli' AND metric = 'cli_new_older')) AS cli_new_older
    FROM
    (
        -- each figure on each wanted day; a command's (alias's) executions (uses) beside its installs
        SELECT s.target AS day, s.kind AS kind,
               if(s.metric IN ('cli_command_executions', 'cli_alias_uses'),
                  if(s.metric = 'cli_command_executions', 'cli_command_installs', 'cli_alias_installs'), s.metric) AS metric,
               s.label AS label, s.label2 AS label2, s.bucket AS bucket,
               sumIf(s.v, s.metric NOT IN ('cli_command_executions', 'cli_alias_uses')) AS val,
               sumIf(s.v, s.metric IN ('cli_command_executions', 'cli_alias_uses')) AS val2
        FROM analyst_totals(days = {days:Array(Date)}) AS s
        GROUP BY day, kind, metric, label, label2, bucket
    )
    GROUP BY day
) AS t
LEFT JOIN
(
    -- the 25 largest (by end devices) of the deployments 3 or more minor versions behind the newest: the size classes
    -- (analyst_behind_floors) bound where to look, the candidates' carried snapshot decides
    SELECT h.target AS day,
           arraySlice(arraySort(x -> (-toInt64(x.4), x.1),
                                groupArray((c_uid, concat(toString(intDiv(c_ordinal, 1000)), '.', toString(c_ordinal % 1000)),
                                            toUInt32(f.newest - c_ordinal), c_end_devices, c_gateways))), 1, 25) AS behind_top
    FROM
    (
        SELECT target, key, argMax((uid, ordinal, end_devices, gateways_effective), day) AS latest,
               latest.1 AS c_uid, latest.2 AS c_ordinal, latest.3 AS c_end_devices, latest.4 AS c_gateways
        FROM analyst_history FINAL
        ARRAY JOIN arrayFilter(t -> t >= day AND t < day + 7, wanted) AS target
        WHERE kind = 'is' AND notEmpty(wanted) AND day >= arrayMin(wanted) - 6 AND day <= arrayMax(wanted)
          AND key IN (SELECT key FROM analyst_history
                      WHERE kind = 'is' AND day >= arrayMin(wanted) - 6 AND day <= arrayMax(wanted)
                        AND ordinal BETWEEN 1 AND bounds.1 AND end_devices >= bounds.2)
        GROUP BY target, key
    ) AS h
    INNER JOIN analyst_behind_floors(days = {days:Array(Date)}) AS f ON f.target = h.target
    WHERE c_ordinal > 0 AND c_ordinal <= f.reach AND c_end_devices >= f.floor
    GROUP BY h.target
) AS b ON b.day = t.day
LEFT JOIN
(
    SELECT day, arraySort(groupArrayArray(jumps)) AS jumps
    FROM analyst_jumps FINAL
    WHERE has(wanted, day)
    GROUP BY day
) AS j ON j.day = t.day
;

-- Days with data, the changes of [D - 29, D] (every change of a figure of D is an event of [D - 29, D]: no
-- contribution lasts longer than 30 days), and whether D can be recomputed (as before). A late first day is no longer
-- looked for across every UID: it changes the events of the days it touches.
CREATE OR REPLACE VIEW analyst_daily_state AS
WITH (SELECT toUInt32OrZero(extract(engine_full, 'toIntervalDay\\((\\d+)\\)')) FROM system.tables
      WHERE database = currentDatabase() AND name = 'snapshots') AS ttl_days
SELECT c.day AS day, c.inputs AS inputs, a.inputs_seen AS inputs_seen, a.last_computed_at AS computed_at,
       ttl_days = 0 OR c.day - 29 > today() - ttl_days AS recomputable,
       false AS first_seen_changed
FROM
(
    SELECT day, sum(changes) OVER (ORDER BY toUInt32(day) RANGE BETWEEN 29 PRECEDING AND CURRENT ROW) AS inputs
    FROM (SELECT day, sum(changes) AS changes FROM snapshot_changes GROUP BY day)
) AS c
LEFT JOIN
(
    SELECT day, max(computed_at) AS last_computed_at, argMax(inputs_seen, computed_at) AS inputs_seen
    FROM analyst_daily GROUP BY day
) AS a ON a.day = c.day;

CREATE OR REPLACE VIEW analyst_daily_pending AS
SELECT day, inputs, inputs_seen
FROM analyst_daily_state
WHERE recomputable AND inputs > inputs_seen;

DROP VIEW IF EXISTS analyst_daily_refresh;

CREATE MATERIALIZED VIEW analyst_daily_refresh
REFRESH EVERY 2 SECOND APPEND TO analyst_daily AS
WITH (SELECT groupArray((day, inputs)) FROM analyst_daily_pending) AS due
SELECT * FROM analyst_assemble(days = due.1, seen = due.2);

DROP VIEW IF EXISTS retention_refresh;

CREATE MATERIALIZED VIEW retention_refresh
REFRESH EVERY 2 SECOND APPEND TO retention_cohorts AS
WITH (SELECT sum(changes) FROM snapshot_changes) AS inputs
SELECT now64(6, 'UTC') AS computed_at, inputs AS inputs_seen,
       (SELECT groupArray((kind, cohort, periods_since, active))
        FROM (SELECT toString(kind) AS kind, day - 7 * bucket AS cohort, bucket AS periods_since, toUInt64(sum(value)) AS active
              FROM analyst_events WHERE metric = 'retention_weekly'
              GROUP BY kind, day, bucket HAVING sum(value) != 0)) AS weekly,
       (SELECT groupArray((kind, cohort, periods_since, active))
        FROM (SELECT toString(kind) AS kind, addMonths(day, -toInt32(bucket)) AS cohort, bucket AS periods_since,
                     toUInt64(sum(value)) AS active
              FROM analyst_events WHERE metric = 'retention_monthly'
              GROUP BY kind, day, bucket HAVING sum(value) != 0)) AS monthly
WHERE inputs > (SELECT max(inputs_seen) FROM retention_cohorts)
