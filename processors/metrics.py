"""Prometheus metrics of the processors worker."""

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("is_telemetry_processor_records_total", "Records taken from the raw topic")
STORED = Counter(
    "is_telemetry_processor_stored_total",
    "Raw records acknowledged once their batch was stored (in ClickHouse; with --no-sink in the snapshots topic)",
)
VALID = Counter("is_telemetry_processor_valid_total", "Records that passed validation")
DUPLICATES = Counter("is_telemetry_processor_duplicates_total", "Exact re-sends dropped (dedup or roll-up)")
REJECTED = Counter("is_telemetry_processor_rejected_total", "Records rejected, by reason", ["reason"])
REKEYED = Counter(
    "is_telemetry_processor_rekeyed_total",
    "Valid records not keyed by their UID (or not in its partition), published again keyed by their UID",
)
BATCH_SIZE = Histogram(
    "is_telemetry_processor_batch_size",
    "Records per processed batch",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000),
)
LAG = Gauge("is_telemetry_processor_lag_records", "Records behind the fetched high-water mark", ["partition"])
STATE_UID_DAYS = Gauge("is_telemetry_rollup_state_uid_days", "UID-days held by the roll-up state in this process")
ASSIGNED = Gauge(
    "is_telemetry_processor_partitions_assigned",
    "Raw-topic partitions this worker consumes (0: it consumes nothing, e.g. while it joins its consumer group)",
)
