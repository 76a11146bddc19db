-- The day aggregates move from one recomputed row per day (`daily_rollup`) to one row per day and source partition,
-- kept incrementally by the processors' roll-up (processors/rollup.py) and summed by the views. `daily_rollup`
-- becomes a view with the same columns; every analyst view keeps its name, columns and numbers.

-- One day's aggregates over the UIDs one source partition owns. version = roll-up generation << 64 | sequence:
-- the newest owner's latest row wins.
CREATE TABLE IF NOT EXISTS rollup_partitions
(
    day Date,
    source_partition UInt32,
    version UInt128,
    computed_at DateTime64(6, 'UTC'),
    deployments UInt64,
    default_uid_deployments UInt64,
    inconsistent_deployments UInt64,
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
    gateways_by_frequency_plan Map(LowCardinality(String), UInt64),
    deployments_by_version Map(LowCardinality(String), UInt64),
    deployments_by_os Map(LowCardinality(String), UInt64),
    deployments_by_arch Map(LowCardinality(String), UInt64),
    deployments_by_go_version Map(LowCardinality(String), UInt64),
    cli_by_version Map(LowCardinality(String), UInt64),
    cli_by_os Map(LowCardinality(String), UInt64),
    cli_by_arch Map(LowCardinality(String), UInt64),
    rejected_by_reason Map(LowCardinality(String), UInt64)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (day, source_partition);

-- Settings the pipeline keeps in ClickHouse: `raw_partitions`, the raw topic's partition count the roll-up was built
-- for (a worker refuses to start on another count until `is-telemetry rollup repartition` has run).
CREATE TABLE IF NOT EXISTS pipeline_settings
(
    name String,
    value String,
    set_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(set_at)
ORDER BY name;

-- Existing data: one row per (day, source partition) from the snapshots and rejections (generation 1) ...
INSERT INTO rollup_partitions
SELECT day, source_partition, toUInt128(1) * toUInt128(18446744073709551616) AS version, now64(6, 'UTC') AS computed_at,
       deployments, default_uid_deployments, inconsistent_deployments, cli_installs, gateways, end_devices,
       active_end_devices, active_last_day, active_last_week, active_last_month, applications, users_standard,
       users_admin, organizations, gateways_by_frequency_plan, deployments_by_version, deployments_by_os,
       deployments_by_arch, deployments_by_go_version, cli_by_version, cli_by_os, cli_by_arch, rejected_by_reason
FROM
(
    SELECT day, source_partition,
           countIf(kind = 'is') AS deployments,
           countIf(kind = 'is' AND default_uid) AS default_uid_deployments,
           countIf(kind = 'is' AND notEmpty(flags)) AS inconsistent_deployments,
           countIf(kind = 'cli') AS cli_installs,
           sum(gateways) AS gateways, sum(end_devices) AS end_devices, sum(active_end_devices) AS active_end_devices,
           sum(active_last_day) AS active_last_day, sum(active_last_week) AS active_last_week,
           sum(active_last_month) AS active_last_month, sum(applications) AS applications,
           sum(users_standard) AS users_standard, sum(users_admin) AS users_admin, sum(organizations) AS organizations,
           sumMap(gateways_by_frequency_plan) AS gateways_by_frequency_plan,
           sumMapIf(map(version_major_minor, toUInt64(1)), kind = 'is') AS deployments_by_version,
           sumMapIf(map(operating_system, toUInt64(1)), kind = 'is') AS deployments_by_os,
           sumMapIf(map(arch, toUInt64(1)), kind = 'is') AS deployments_by_arch,
           sumMapIf(map(golang_version, toUInt64(1)), kind = 'is') AS deployments_by_go_version,
           sumMapIf(map(version_major_minor, toUInt64(1)), kind = 'cli') AS cli_by_version,
           sumMapIf(map(operating_system, toUInt64(1)), kind = 'cli') AS cli_by_os,
           sumMapIf(map(arch, toUInt64(1)), kind = 'cli') AS cli_by_arch
    FROM snapshots FINAL
    GROUP BY day, source_partition
) AS s
FULL OUTER JOIN
(
    SELECT day, source_partition, sumMap(map(reason, toUInt64(1))) AS rejected_by_reason
    FROM rejections FINAL
    GROUP BY day, source_partition
) AS r
USING (day, source_partition);

-- ... and the days whose snapshots are gone (TTL) keep their old day row, as partition 0.
INSERT INTO rollup_partitions
SELECT day, 0, toUInt128(1) * toUInt128(18446744073709551616), computed_at, deployments, default_uid_deployments,
       inconsistent_deployments, cli_installs, gateways, end_devices, active_end_devices, active_last_day,
       active_last_week, active_last_month, applications, users_standard, users_admin, organizations,
       gateways_by_frequency_plan, deployments_by_version, deployments_by_os, deployments_by_arch,
       deployments_by_go_version, cli_by_version, cli_by_os, cli_by_arch, rejected_by_reason
FROM daily_rollup FINAL
WHERE day NOT IN (SELECT day FROM rollup_partitions);

DROP VIEW IF EXISTS fleet_daily;
DROP VIEW IF EXISTS gateways_by_frequency_plan_daily;
DROP VIEW IF EXISTS deployments_by_version_daily;
DROP VIEW IF EXISTS deployments_by_os_daily;
DROP VIEW IF EXISTS deployments_by_arch_daily;
DROP VIEW IF EXISTS deployments_by_go_version_daily;
DROP VIEW IF EXISTS cli_installs_by_version_daily;
DROP VIEW IF EXISTS cli_installs_by_arch_daily;
DROP VIEW IF EXISTS cli_installs_by_os_daily;
DROP VIEW IF EXISTS rejected_daily;
DROP TABLE IF EXISTS daily_rollup;

-- One row per day: the partitions summed (the latest row of each, FINAL). Same columns as the former table.
CREATE VIEW IF NOT EXISTS daily_rollup AS
SELECT day,
       max(computed_at) AS computed_at,
       sum(deployments) AS deployments,
       sum(default_uid_deployments) AS default_uid_deployments,
       sum(inconsistent_deployments) AS inconsistent_deployments,
       sum(cli_installs) AS cli_installs,
       sum(gateways) AS gateways,
       sum(end_devices) AS end_devices,
       sum(active_end_devices) AS active_end_devices,
       sum(active_last_day) AS active_last_day,
       sum(active_last_week) AS active_last_week,
       sum(active_last_month) AS active_last_month,
       sum(applications) AS applications,
       sum(users_standard) AS users_standard,
       sum(users_admin) AS users_admin,
       sum(organizations) AS organizations,
       sumMap(gateways_by_frequency_plan) AS gateways_by_frequency_plan,
       sumMap(deployments_by_version) AS deployments_by_version,
       sumMap(deployments_by_os) AS deployments_by_os,
       sumMap(deployments_by_arch) AS deployments_by_arch,
       sumMap(deployments_by_go_version) AS deployments_by_go_version,
       sumMap(cli_by_version) AS cli_by_version,
       sumMap(cli_by_os) AS cli_by_os,
       sumMap(cli_by_arch) AS cli_by_arch,
       sumMap(rejected_by_reason) AS rejected_by_reason
FROM rollup_partitions FINAL
GROUP BY day;

CREATE VIEW IF NOT EXISTS fleet_daily AS
SELECT day, deployments, cli_installs, gateways, end_devices, active_end_devices, active_last_day,
       active_last_week, active_last_month, applications, users_standard, users_admin, organizations,
       default_uid_deployments, inconsistent_deployments
FROM daily_rollup
WHERE deployments + cli_installs > 0;

CREATE VIEW IF NOT EXISTS gateways_by_frequency_plan_daily AS
SELECT day, frequency_plan_id, gateways
FROM daily_rollup
ARRAY JOIN mapKeys(gateways_by_frequency_plan) AS frequency_plan_id, mapValues(gateways_by_frequency_plan) AS gateways;

CREATE VIEW IF NOT EXISTS deployments_by_version_daily AS
SELECT day, version, deployments
FROM daily_rollup
ARRAY JOIN mapKeys(deployments_by_version) AS version, mapValues(deployments_by_version) AS deployments;

CREATE VIEW IF NOT EXISTS deployments_by_os_daily AS
SELECT day, operating_system, deployments
FROM daily_rollup
ARRAY JOIN mapKeys(deployments_by_os) AS operating_system, mapValues(deployments_by_os) AS deployments;

CREATE VIEW IF NOT EXISTS deployments_by_arch_daily AS
SELECT day, arch, deployments
FROM daily_rollup
ARRAY JOIN mapKeys(deployments_by_arch) AS arch, mapValues(deployments_by_arch) AS deployments;

CREATE VIEW IF NOT EXISTS deployments_by_go_version_daily AS
SELECT day, golang_version, deployments
FROM daily_rollup
ARRAY JOIN mapKeys(deployments_by_go_version) AS golang_version, mapValues(deployments_by_go_version) AS deployments;

CREATE VIEW IF NOT EXISTS cli_installs_by_version_daily AS
SELECT day, version, installs
FROM daily_rollup
ARRAY JOIN mapKeys(cli_by_version) AS version, mapValues(cli_by_version) AS installs;

CREATE VIEW IF NOT EXISTS cli_installs_by_arch_daily AS
SELECT day, arch, installs
FROM daily_rollup
ARRAY JOIN mapKeys(cli_by_arch) AS arch, mapValues(cli_by_arch) AS installs;

CREATE VIEW IF NOT EXISTS cli_installs_by_os_daily AS
SELECT day, operating_system, installs
FROM daily_rollup
ARRAY JOIN mapKeys(cli_by_os) AS operating_system, mapValues(cli_by_os) AS installs;

CREATE VIEW IF NOT EXISTS rejected_daily AS
SELECT day, reason, messages
FROM daily_rollup
ARRAY JOIN mapKeys(rejected_by_reason) AS reason, mapValues(rejected_by_reason) AS messages
