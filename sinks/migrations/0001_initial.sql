-- Per-(day, UID) snapshots: the unit of truth. The latest received wins (version = receive time, then offset).
CREATE TABLE IF NOT EXISTS snapshots
(
    day Date,
    uid String,
    kind LowCardinality(String),
    received_at DateTime64(3, 'UTC'),
    version UInt128,
    source_partition UInt32,
    source_offset UInt64,
    default_uid Bool,
    flags Array(LowCardinality(String)),
    operating_system LowCardinality(String),
    arch LowCardinality(String),
    binary_version LowCardinality(String),
    version_major_minor LowCardinality(String),
    golang_version LowCardinality(String),
    gateways UInt64,
    gateways_by_frequency_plan Map(LowCardinality(String), UInt64),
    end_devices UInt64,
    active_end_devices UInt64,
    active_last_day UInt64,
    active_last_week UInt64,
    active_last_month UInt64,
    applications UInt64,
    users_standard UInt64,
    users_admin UInt64,
    users_total Nullable(UInt64),
    organizations UInt64,
    cli String,
    body String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, uid);

-- Every rejected record once (a re-processed record collapses on its source position and receive time).
CREATE TABLE IF NOT EXISTS rejections
(
    day Date,
    received_at DateTime64(3, 'UTC'),
    reason LowCardinality(String),
    message String,
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    body String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, source_topic, source_partition, source_offset, received_at);

-- One row per day, recomputed whole from the day's snapshots; the newest computation wins.
CREATE TABLE IF NOT EXISTS daily_rollup
(
    day Date,
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
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY day;

CREATE VIEW IF NOT EXISTS fleet_daily AS
SELECT day, deployments, cli_installs, gateways, end_devices, active_end_devices, active_last_day,
       active_last_week, active_last_month, applications, users_standard, users_admin, organizations,
       default_uid_deployments, inconsistent_deployments
FROM daily_rollup FINAL
WHERE deployments + cli_installs > 0;

CREATE VIEW IF NOT EXISTS gateways_by_frequency_plan_daily AS
SELECT day, frequency_plan_id, gateways
FROM daily_rollup FINAL
ARRAY JOIN mapKeys(gateways_by_frequency_plan) AS frequency_plan_id, mapValues(gateways_by_frequency_plan) AS gateways;

CREATE VIEW IF NOT EXISTS deployments_by_version_daily AS
SELECT day, version, deployments
FROM daily_rollup FINAL
ARRAY JOIN mapKeys(deployments_by_version) AS version, mapValues(deployments_by_version) AS deployments;

CREATE VIEW IF NOT EXISTS deployments_by_os_daily AS
SELECT day, operating_system, deployments
FROM daily_rollup FINAL
ARRAY JOIN mapKeys(deployments_by_os) AS operating_system, mapValues(deployments_by_os) AS deployments;

CREATE VIEW IF NOT EXISTS deployments_by_arch_daily AS
SELECT day, arch, deployments
FROM daily_rollup FINAL
ARRAY JOIN mapKeys(deployments_by_arch) AS arch, mapValues(deployments_by_arch) AS deployments;

CREATE VIEW IF NOT EXISTS deployments_by_go_version_daily AS
SELECT day, golang_version, deployments
FROM daily_rollup FINAL
ARRAY JOIN mapKeys(deployments_by_go_version) AS golang_version, mapValues(deployments_by_go_version) AS deployments;

CREATE VIEW IF NOT EXISTS cli_installs_by_version_daily AS
SELECT day, version, installs
FROM daily_rollup FINAL
ARRAY JOIN mapKeys(cli_by_version) AS version, mapValues(cli_by_version) AS installs;

CREATE VIEW IF NOT EXISTS cli_installs_by_arch_daily AS
SELECT day, arch, installs
FROM daily_rollup FINAL
ARRAY JOIN mapKeys(cli_by_arch) AS arch, mapValues(cli_by_arch) AS installs;

CREATE VIEW IF NOT EXISTS cli_installs_by_os_daily AS
SELECT day, operating_system, installs
FROM daily_rollup FINAL
ARRAY JOIN mapKeys(cli_by_os) AS operating_system, mapValues(cli_by_os) AS installs;

CREATE VIEW IF NOT EXISTS rejected_daily AS
SELECT day, reason, messages
FROM daily_rollup FINAL
ARRAY JOIN mapKeys(rejected_by_reason) AS reason, mapValues(rejected_by_reason) AS messages;

-- The latest snapshot of each UID per day, FINAL applied: for analysts' ad-hoc questions.
CREATE VIEW IF NOT EXISTS snapshots_latest AS
SELECT * EXCEPT (version) FROM snapshots FINAL;
