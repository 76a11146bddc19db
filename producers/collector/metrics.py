"""The collector's Prometheus metrics (`Metrics`, a registry of their own per app) and the middleware that counts
every request by endpoint and status (`Instrument`). docs/collector.md, "Metrics", lists them."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.client_limits import Throttle, Verdict


class Metrics:
    """The collector's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "collector_requests",
            "HTTP requests answered, by endpoint and status code",
            ["endpoint", "code"],
            registry=r,
        )
        self.body_bytes = Histogram(
            "collector_body_bytes",
            "Sizes of POST /collect bodies read in full",
            buckets=(64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 262144),
            registry=r,
        )
        self.published = Counter(
            "collector_records_published", "Bodies acknowledged by Kafka (alone or in a batch record)", registry=r
        )
        self.batch_bodies = Histogram(
            "collector_batch_bodies",
            "Bodies per many-bodies Kafka record",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.published_bytes = Counter("collector_published_bytes", "Body bytes acknowledged by Kafka", registry=r)
        self.publish_seconds = Histogram(
            "collector_publish_seconds",
            "Kafka publish latency (send to ack)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.kafka_errors = Counter(
            "collector_kafka_errors",
            "Publishes answered 503, by reason (timeout | error | not_ready)",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge("collector_in_flight_requests", "HTTP requests being handled", registry=r)
        self.rate_limited = Counter(
            "collector_rate_limited",
            "Bodies published marked rate_limited, by cause (over_budget | table_full)",
            ["cause"],
            registry=r,
        )
        self.tracked_clients = Gauge(
            "collector_tracked_clients", "Clients whose new UIDs are remembered today (this process)", registry=r
        )
        self.tracked_uids = Gauge(
            "collector_tracked_uids", "UIDs remembered today, all clients (this process)", registry=r
        )
        self.throttled = Counter(
            "collector_throttled",
            "Requests to /collect answered 429 and not stored, by cause (requests | bytes | table_full)",
            ["cause"],
            registry=r,
        )
        self.request_clients = Gauge(
            "collector_request_clients",
            "Clients whose request and byte buckets are held now (this process)",
            registry=r,
        )
        self.kafka_ready = Gauge("collector_kafka_producer_ready", "1 once the Kafka producer is connected", registry=r)
        self.raw_topic = Gauge(
            "collector_raw_topic",
            "1 for the raw topic this collector publishes to (its generation)",
            ["topic"],
            registry=r,
        )
        self._children: dict[tuple[str, int], Any] = {}
        for reason in ("timeout", "error", "not_ready"):
            self.kafka_errors.labels(reason)
        self._limited = {v: self.rate_limited.labels(v.value) for v in Verdict if v.limited}
        self._throttled = {t: self.throttled.labels(t.value) for t in Throttle}

    def count_limited(self, verdict: Verdict) -> None:
        self._limited[verdict].inc()

    def count_throttled(self, cause: Throttle) -> None:
        self._throttled[cause].inc()

    def count(self, endpoint: str, status: int) -> None:
        child = self._children.get((endpoint, status))
        if child is None:
            child = self._children[(endpoint, status)] = self.requests.labels(endpoint, str(status))
        child.inc()


class Instrument:
    """ASGI middleware: in-flight gauge and requests by endpoint and status (404s and 405s included); a path not in
    `endpoints` counts as "other"."""

    def __init__(self, app: ASGIApp, metrics: Metrics, endpoints: Collection[str]) -> None:
        self.app, self.metrics, self.endpoints = app, metrics, endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        m = self.metrics
        m.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            m.in_flight.dec()
            path = scope["path"]
            m.count(path if path in self.endpoints else "other", status)
