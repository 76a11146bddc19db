"""Prometheus metrics of the processors worker and the sink."""

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("is_telemetry_processor_records_total", "Records taken from the raw topic")
VALID = Counter("is_telemetry_processor_valid_total", "Records that passed validation")
DUPLICATES = Counter("is_telemetry_processor_duplicates_total", "Exact re-sends dropped by dedup")
REJECTED = Counter("is_telemetry_processor_rejected_total", "Records rejected, by reason", ["reason"])
BATCH_SIZE = Histogram("is_telemetry_processor_batch_size", "Records per processed batch",
                       buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000))
SINK_SECONDS = Histogram("is_telemetry_sink_write_seconds", "ClickHouse write + rollup latency per batch")
SINK_ROWS = Counter("is_telemetry_sink_rows_total", "Rows written to ClickHouse", ["table"])
LAST_WRITE = Gauge("is_telemetry_sink_last_write_timestamp_seconds", "Unix time of the last successful sink write")
LAG = Gauge("is_telemetry_processor_lag_records", "Records behind the fetched high-water mark", ["partition"])
