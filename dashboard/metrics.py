"""Prometheus metrics of the API (served on /metrics beside the processors' own)."""

from prometheus_client import Counter, Gauge, Histogram

QUERIES = Counter(
    "is_telemetry_api_sql_queries_total",
    "POST /api/sql queries by outcome (ok | cancelled | an error code such as writes_not_allowed, query_failed, busy)",
    ["outcome"],
)
QUERY_SECONDS = Histogram(
    "is_telemetry_api_sql_query_seconds",
    "Time of successful POST /api/sql queries",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
REFUSED = Counter("is_telemetry_api_refused_total", "Requests refused before reaching an endpoint", ["reason"])
RUNNING = Gauge("is_telemetry_api_sql_running", "POST /api/sql statements holding a session now")
WAITING = Gauge(
    "is_telemetry_api_sql_waiting", "POST /api/sql requests waiting for a session (at most api.query_queue_s)"
)
