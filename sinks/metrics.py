"""Prometheus metrics of the sink (in a worker or in `is-telemetry sink`)."""

from prometheus_client import Counter, Gauge, Histogram

SINK_SECONDS = Histogram("is_telemetry_sink_write_seconds", "ClickHouse write latency per batch")
SINK_ROWS = Counter("is_telemetry_sink_rows_total", "Rows written to ClickHouse", ["table"])
LAST_WRITE = Gauge("is_telemetry_sink_last_write_timestamp_seconds", "Unix time of the last successful sink write")
REWINDS = Counter(
    "is_telemetry_sink_rewinds_total",
    "Batches ClickHouse did not take in time: partitions paused and rewound to the last written position",
)
PAUSED = Gauge(
    "is_telemetry_sink_paused_partitions",
    "Partitions whose last batch ClickHouse did not take: paused and rewound, then tried again after a back-off; "
    "counted until a batch of theirs is written",
)
