"""The HTTP collector: what The Things Stack's `telemetry.target` points at.

`POST /collect` takes the body exactly as TTS sends it (compact JSON, `Content-Type: application/json`),
stamps the receive time, and publishes the raw bytes unchanged to the raw topic (`kafka.raw_topic`),
keyed by the message's `uid`. It answers `202 {"status":"accepted"}` only once Kafka acknowledged the
record (acks=all); anything else is a one-line JSON error. Validation beyond "is it JSON" is the
processors' job. Per client (producers/client_limits.py): a request past its client's request or body-byte
budget is answered 429 with Retry-After and not stored (flood control); a body with a new UID past its client's
budget for the day is answered 202 like any other and published marked `rate_limited`: the processors reject it as
such. See docs/collector.md for the contract, metrics and measured figures.

    create_app(settings, producer=None) -> Starlette   # the ASGI app (producer injectable for tests)
    serve(settings, log_level="warning")               # uvicorn with graceful shutdown
    python -m producers.collector --kafka HOST:PORT --port N   # standalone entry point
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from kafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import control
from core.config import Settings, load_settings
from core.envelope import (
    BATCH_FORMAT,
    HEADER_FORMAT,
    HEADER_RATE_LIMITED,
    RATE_LIMITED,
    Frame,
    frame_size,
    pack,
)
from core.errors import RequestRefused, Stopped, Unavailable, UnsupportedMediaType
from core.generations import number_of
from core.httpedge import edge_limits, read_body, server_config
from core.kafka import HEADER_SOURCE, broker_answers, close_producer, make_producer
from core.kafka import headers as record_headers
from core.ledger import AckLedger
from core.logsetup import setup_logging
from core.partitioning import partition_of
from core.retry import RetryPolicy, retry_on, with_retries
from producers.client_limits import ClientLimits, Throttle, Throttled, Verdict

log = logging.getLogger(__name__)

SOURCE = "collector"
COLLECT_PATH = "/collect"
RETRY_AFTER_S = 5  # the Retry-After of every 503 (TTS ignores it; other clients may honour it)
USER_AGENT_MAX = 512  # longer User-Agent values are truncated before they go into a record header
READY_CACHE_S = 1.0  # /readyz probes Kafka at most once per this interval
READY_PROBE_TIMEOUT_S = 0.5
CONNECT_RETRY = RetryPolicy(initial_s=0.5, maximum_s=5.0)  # creating the producer while Kafka is not there yet
# Idle keep-alive connections are closed after this. Longer than HTTP clients' own idle expiry (httpx 5 s,
# Go's net/http 90 s) so that a client never sends a POST on a connection the server is just closing
# (the request would fail with a reset, and POSTs are not retried).
KEEP_ALIVE_S = 95

_ACCEPTED = b'{"status":"accepted"}'
_JSON = "application/json"
_ENDPOINTS = frozenset({COLLECT_PATH, "/healthz", "/readyz", "/metrics"})


# ---------------------------------------------------------------------------------------------- errors


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": code, "message": message})
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def _unavailable(message: str) -> Unavailable:
    return Unavailable(message, code="kafka_unavailable", headers={"Retry-After": str(RETRY_AFTER_S)})


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = {
        404: f"no such endpoint: {request.url.path} (telemetry goes to POST {COLLECT_PATH})",
        405: f"method {request.method} not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal error")


# --------------------------------------------------------------------------------------------- metrics


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


class _Instrument:
    """ASGI middleware: in-flight gauge and requests by endpoint and status (404s and 405s included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

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
            m.count(path if path in _ENDPOINTS else "other", status)


# ------------------------------------------------------------------------------------- Kafka plumbing


def _timeouts_ms(settings: Settings) -> tuple[int, int]:
    """(publish, request) timeouts in ms."""
    publish_ms = max(1, int(settings.collector.publish_timeout_s * 1000))
    return publish_ms, max(1000, min(10_000, publish_ms))


def delivery_timeout_ms(settings: Settings) -> int:
    """How long the producer keeps a record it could not deliver: about when its request was answered 503."""
    publish_ms, request_ms = _timeouts_ms(settings)
    return max(publish_ms, request_ms + 1000)


def producer_overrides(settings: Settings) -> dict[str, object]:
    """make_producer overrides for the collector (see docs/collector.md, "Kafka producer")."""
    publish_ms, request_ms = _timeouts_ms(settings)
    return dict(
        client_id="is-telemetry-collector",
        # kafka-python 3 turns idempotence on by default; after a broker restart the idempotent producer
        # can end in a fatal state (Tansu answers InitProducerId with UnknownError) and never publish again.
        # Duplicates from retries are harmless: the processors deduplicate.
        enable_idempotence=False,
        max_block_ms=max(1000, publish_ms),  # metadata waits (only ever on the send thread pool)
        request_timeout_ms=request_ms,
        delivery_timeout_ms=delivery_timeout_ms(settings),  # give up on a record about when we answer 503
        reconnect_backoff_max_ms=1000,  # reconnect quickly after a broker restart
        bootstrap_timeout_ms=5000,
    )


class Publisher:
    """Owns the Kafka producer: connects in the background, bridges kafka-python futures to asyncio."""

    def __init__(
        self, settings: Settings, producer: Any = None, metrics: Metrics | None = None, ledger_dir: Path | None = None
    ) -> None:
        """`ledger_dir`: where to write what Kafka acknowledged (core/ledger.py; `up`, embedded broker)."""
        self.settings = settings
        self.topic = settings.kafka.raw_topic
        self.ledger_dir = ledger_dir
        self.ledger = AckLedger(ledger_dir, self.topic) if ledger_dir is not None else None
        self._open = asyncio.Event()  # cleared while the raw topic changes: publishes wait (switch_topic)
        self._open.set()
        self._switching = asyncio.Lock()
        self._pending: set[asyncio.Future[Any]] = set()  # records handed to the producer, not yet settled
        self.timeout_s = settings.collector.publish_timeout_s
        self.delivery_timeout_s = delivery_timeout_ms(settings) / 1000
        self.producer = producer
        self.owned = producer is None
        self._probe_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector-probe")
        self.metrics = metrics or Metrics()
        self._sender_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="collector-send")
        self._stopping = threading.Event()
        self._connected: asyncio.Event | None = None
        self._ready_at = 0.0
        self._ready = False
        c = settings.collector
        self.linger_s = c.batch_linger_ms / 1000
        self.batch_max_bodies, self.batch_max_bytes = c.batch_max_bodies, c.batch_max_bytes
        self.partition_count = 0  # the raw topic's, once its metadata is known (then bodies are batched)
        self._batches: dict[tuple[int, bool], _Batch] = {}  # (partition, marked rate_limited) -> the open batch
        self.metrics.raw_topic.labels(self.topic).set(1)
        if producer is not None:
            self.metrics.kafka_ready.set(1)

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self, wait_s: float = 5.0) -> None:
        """Create the producer (unless injected) on a daemon thread; retry until Kafka answers.

        Waits up to wait_s (at most publish_timeout_s) for the first connection, then lets the server
        start anyway: until the producer exists, POST /collect and /readyz answer 503.
        """
        loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        if self.producer is not None:
            self._connected.set()
            threading.Thread(target=self._warm_metadata, args=(self.producer,), daemon=True).start()
            return

        def connected(p: Any) -> None:
            self.producer = p
            self.metrics.kafka_ready.set(1)
            assert self._connected is not None
            self._connected.set()

        def run() -> None:
            p = self._connect_loop()
            if p is None:
                return
            try:
                loop.call_soon_threadsafe(connected, p)
            except RuntimeError:  # the loop is gone: nobody will use it
                self._close(p, 1.0)

        threading.Thread(target=run, name="collector-connect", daemon=True).start()
        try:
            await asyncio.wait_for(self._connected.wait(), min(wait_s, self.timeout_s))
        except TimeoutError:
            log.warning("Kafka at %s not reachable yet; answering 503 until it is", self.settings.bootstrap_servers)

    def _connect_loop(self) -> Any:
        """The producer, created once Kafka answers (retried with backoff); None if stop() came first."""
        servers = self.settings.bootstrap_servers
        try:
            p = with_retries(
                lambda: make_producer(servers, **producer_overrides(self.settings)),
                CONNECT_RETRY,
                self._stopping,
                retry_on(KafkaError, OSError, what=f"Kafka at {servers}"),
            )
        except Stopped:
            return None
        if self._stopping.is_set():
            self._close(p, 1.0)
            return None
        self._warm_metadata(p)
        return p

    def _warm_metadata(self, p: Any) -> None:
        """Fetch the raw topic's metadata once so that send() never waits for it on the event loop, and learn its
        partition count (a body's batch is the partition Kafka's default partitioner gives its UID)."""
        if not hasattr(p, "partitions_for"):
            return
        try:
            partitions = p.partitions_for(self.topic)
        except KafkaError as exc:  # sends fall back to the thread pool, unbatched
            log.warning("no metadata for topic %s yet (%s)", self.topic, exc)
            return
        self.partition_count = len(partitions or ())

    async def stop(self) -> None:
        """Flush (and, if we created it, close) the producer. Called after in-flight requests finished."""
        await self.flush_batches()
        self._stopping.set()
        p = self.producer
        if p is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._close_or_flush, p)
        self._sender_pool.shutdown(wait=False, cancel_futures=True)
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        if self.ledger is not None:
            self.ledger.close()

    def _close_or_flush(self, p: Any) -> None:
        if self.owned:
            self._close(p, self.timeout_s)
            self.producer = None
            self.metrics.kafka_ready.set(0)
            return
        try:
            p.flush(self.timeout_s)
        except KafkaError as exc:
            log.warning("Kafka producer flush failed: %s", exc)

    def _close(self, p: Any, timeout_s: float) -> None:
        """Close an owned producer: flush for timeout_s, then let what is left expire (its requests got 503)."""
        close_producer(p, timeout_s, self.delivery_timeout_s + 1.0)

    # -- publishing -------------------------------------------------------------------------------
    async def _send(
        self,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        timestamp_ms: int,
        partition: int | None = None,
        bodies: int = 1,
    ) -> asyncio.Future[Any]:
        """Hand one record (holding `bodies` bodies) to the producer; the returned future resolves when Kafka
        acknowledged it (acks=all), once the ack ledger (if any) has it."""
        p = self.producer
        if p is None:
            self.metrics.kafka_errors.labels("not_ready").inc()
            raise _unavailable("the Kafka producer is not connected yet")
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[Any] = loop.create_future()
        self._pending.add(acked)
        acked.add_done_callback(self._pending.discard)
        ledger = self.ledger
        send = partial(
            p.send, self.topic, value=value, key=key, headers=headers, timestamp_ms=timestamp_ms, partition=partition
        )

        def on_success(metadata: Any) -> None:
            if ledger is not None:  # written before anyone is answered 202 (the I/O thread; a write is atomic)
                try:
                    ledger.record(metadata.partition, metadata.offset, bodies)
                except OSError as exc:
                    log.error("the ack ledger could not be written (%s): a broker loss would be under-reported", exc)
            try:
                loop.call_soon_threadsafe(_resolve, acked, metadata, None)
            except RuntimeError:  # event loop closed
                pass

        def on_error(exc: BaseException) -> None:
            try:
                loop.call_soon_threadsafe(_resolve, acked, None, exc)
            except RuntimeError:
                pass

        if self.partition_count:
            future = send()  # the topic's metadata is known: send() only appends to the accumulator
        else:
            future = await loop.run_in_executor(self._sender_pool, send)  # may wait for metadata
        future.add_callback(on_success)
        future.add_errback(on_error)
        return acked

    async def publish(
        self, body: bytes, key: bytes | None, received_at_ms: int, user_agent: str, limited: bool = False
    ) -> Any:
        """Store one body in Kafka, alone or in its partition's batch (`limited`: marked rate_limited, in a record of
        marked bodies only); returns once Kafka acknowledged the record that holds it. Raises Unavailable (503)
        otherwise."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                if not self._open.is_set():  # the raw topic is changing: a moment's wait, not a refusal
                    await self._open.wait()
                if key is not None and self.linger_s > 0 and self.partition_count:
                    metadata = await asyncio.shield(self._batched(body, key, received_at_ms, user_agent, limited))
                else:
                    hdrs = record_headers(received_at_ms, SOURCE, user_agent, len(body))
                    if limited:
                        hdrs.append((HEADER_RATE_LIMITED, RATE_LIMITED))
                    metadata = await await_acked(await self._send(body, key, hdrs, received_at_ms))
        except TimeoutError:
            self.metrics.kafka_errors.labels("timeout").inc()
            raise _unavailable(f"Kafka did not acknowledge the record within {self.timeout_s:g}s") from None
        except Unavailable:
            raise
        except (KafkaError, ValueError) as exc:  # the producer's errors, or its refusal of a record: "not stored"
            self.metrics.kafka_errors.labels("error").inc()
            log.warning("Kafka publish failed: %r", exc)
            raise _unavailable(f"Kafka publish failed: {type(exc).__name__}") from None
        self.metrics.publish_seconds.observe(time.perf_counter() - started)
        self.metrics.published.inc()
        self.metrics.published_bytes.inc(len(body))
        return metadata

    def _batched(
        self, body: bytes, key: bytes, received_at_ms: int, user_agent: str, limited: bool
    ) -> asyncio.Future[Any]:
        """Add the body to its partition's batch (marked bodies have batches of their own); the future resolves when
        the batch's record is acknowledged."""
        slot = (partition_of(key, self.partition_count), limited)
        batch = self._batches.get(slot)
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._batches[slot] = _Batch(loop.create_future())
            batch.timer = loop.call_later(self.linger_s, self._flush, slot)
        ua = user_agent.encode("utf-8", "replace")
        batch.frames.append(Frame(received_at_ms, ua, body))
        batch.size += frame_size(body, ua)
        if len(batch.frames) >= self.batch_max_bodies or batch.size >= self.batch_max_bytes:
            self._flush(slot)
        return batch.done

    def _flush(self, slot: tuple[int, bool]) -> None:
        batch = self._batches.pop(slot, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        self.metrics.batch_bodies.observe(len(batch.frames))
        partition, limited = slot
        headers = [
            (HEADER_FORMAT, BATCH_FORMAT),
            (HEADER_SOURCE, SOURCE.encode()),
            ("bodies", str(len(batch.frames)).encode()),
        ]
        if limited:
            headers.append((HEADER_RATE_LIMITED, RATE_LIMITED))
        task = asyncio.ensure_future(
            self._send(pack(batch.frames), None, headers, batch.frames[0].received_at_ms, partition, len(batch.frames))
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

        def sent(t: asyncio.Future[Any]) -> None:
            if t.cancelled() or t.exception() is not None:
                _resolve(batch.done, None, t.exception() if not t.cancelled() else asyncio.CancelledError())
                return
            t.result().add_done_callback(
                lambda acked: _resolve(batch.done, None if acked.exception() else acked.result(), acked.exception())
            )

        task.add_done_callback(sent)

    async def flush_batches(self) -> None:
        for slot in list(self._batches):
            self._flush(slot)

    async def switch_topic(self, topic: str) -> bool:
        """Publish to `topic` from now on (a new generation of the raw topic, core/generations.py): new
        publishes wait while the open batches go out and every record handed to the old topic is settled, then a new
        producer (owned: the old one's metadata would keep asking for the old topic, and Tansu creates a topic a client
        asks for) takes over. False, and the old topic kept, if the new one does not answer."""
        async with self._switching:
            if topic == self.topic:
                return True
            started = time.perf_counter()
            self._open.clear()
            try:
                await self.flush_batches()
                if self._pending:
                    await asyncio.wait(set(self._pending), timeout=self.delivery_timeout_s + 1)
                loop = asyncio.get_running_loop()
                try:
                    producer, partitions = await loop.run_in_executor(self._sender_pool, self._producer_for, topic)
                except (KafkaError, OSError) as exc:
                    log.error("cannot publish to %s (%r): staying on %s", topic, exc, self.topic)
                    return False
                if self.partition_count and partitions != self.partition_count:
                    wrong = f"{topic} has {partitions} partitions, {self.topic} {self.partition_count}"
                    log.error("%s: staying on %s", wrong, self.topic)
                    if producer is not self.producer:
                        await loop.run_in_executor(None, self._close, producer, 1.0)
                    return False
                old, old_topic, old_ledger = self.producer, self.topic, self.ledger
                self.producer, self.topic = producer, topic
                self.ledger = AckLedger(self.ledger_dir, topic) if self.ledger_dir is not None else None
                self.partition_count = partitions or self.partition_count
            finally:
                self._open.set()
            waited_ms = 1000 * (time.perf_counter() - started)
            self.metrics.raw_topic.labels(topic).set(1)
            self.metrics.raw_topic.remove(old_topic)
            if old is not producer and old is not None:
                await loop.run_in_executor(None, self._close, old, 1.0)
            if old_ledger is not None:  # after its producer: no acknowledgement can come for it any more
                old_ledger.close()
            log.info("publishing to %s (was %s); publishes waited %.0f ms", topic, old_topic, waited_ms)
            return True

    def _producer_for(self, topic: str) -> tuple[Any, int]:
        """A producer for `topic` (a new one if this publisher made its own) and the topic's partition count."""
        p = make_producer(self.settings.bootstrap_servers, **producer_overrides(self.settings)) if self.owned else None
        p = p if p is not None else self.producer
        try:
            partitions = len(p.partitions_for(topic) or ()) if hasattr(p, "partitions_for") else 0
        except KafkaError:
            if p is not self.producer:
                self._close(p, 1.0)
            raise
        return p, partitions

    # -- readiness --------------------------------------------------------------------------------
    async def ready(self) -> bool:
        if self.producer is None:
            return False
        now = time.monotonic()
        if now - self._ready_at >= READY_CACHE_S:
            self._ready_at = now
            self._ready = await self._broker_answers()
        return self._ready

    async def _broker_answers(self) -> bool:
        """One probe at a time on its own thread; a probe slower than the bound counts as "not ready"."""
        probe = partial(broker_answers, self.settings.bootstrap_servers, READY_PROBE_TIMEOUT_S, "collector-probe")
        try:
            async with asyncio.timeout(READY_PROBE_TIMEOUT_S * 2):
                return await asyncio.get_running_loop().run_in_executor(self._probe_pool, probe)
        except TimeoutError:
            return False


@dataclass
class _Batch:
    done: asyncio.Future[Any]
    frames: list[Frame] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


async def await_acked(acked: asyncio.Future[Any]) -> Any:
    return await acked


def _resolve(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():  # timed out / cancelled meanwhile
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


# ------------------------------------------------------------------------------------------- endpoints


def _check_media_type(content_type: str | None) -> None:
    """TTS sends `application/json`. Parameters (charset) are ignored; a missing header is accepted."""
    if not content_type or not content_type.strip():
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != _JSON:
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {content_type[:100]!r}")


def _key_of(body: bytes) -> bytes | None:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestRefused(f"body is not JSON: {exc}"[:300], code="not_json") from None
    if isinstance(message, dict):
        uid = message.get("uid")
        if isinstance(uid, str):
            return uid.encode("utf-8", "surrogatepass")
    return None


def create_app(
    settings: Settings, producer: Any = None, ledger_dir: Path | None = None, control_fd: int | None = None
) -> Starlette:
    """The collector ASGI app. With producer=None the lifespan creates one (make_producer) and closes it
    on shutdown; an injected producer is flushed on shutdown but left open (its owner closes it).
    `ledger_dir`: where to record what Kafka acknowledged; `control_fd`: the read end of `up`'s command pipe
    (core/control.py), by which it moves the collector to another generation of the raw topic."""
    metrics = Metrics()
    publisher = Publisher(settings, producer, metrics, ledger_dir)
    limit = settings.collector.max_body_bytes
    limits = ClientLimits(settings.collector)
    metrics.tracked_clients.set_function(lambda: limits.budget.clients)
    metrics.tracked_uids.set_function(lambda: limits.budget.uids)
    metrics.request_clients.set_function(lambda: limits.requests.clients)

    async def collect(request: Request) -> Response:
        received_at_ms = time.time_ns() // 1_000_000  # receive time, UTC Unix ms, before reading the body
        peer = request.client.host if request.client is not None else None
        client = limits.client(peer, request.headers.getlist("x-forwarded-for"))
        try:
            limits.take_request(client)  # every request, whatever follows: 429 before its body is read
            _check_media_type(request.headers.get("content-type"))
            body = await read_body(request, limit)  # 408 at collector.request_timeout_s
            metrics.body_bytes.observe(len(body))
            limits.take_bytes(client, len(body))  # every body read, whatever it holds
            if not body:
                raise RequestRefused("the body is empty; expected a JSON telemetry message", code="empty_body")
            key = _key_of(body)
            user_agent = request.headers.get("user-agent", "")[:USER_AGENT_MAX]
            verdict = limits.verdict(client, key, received_at_ms)
            if verdict.limited:
                metrics.count_limited(verdict)
            await publisher.publish(body, key, received_at_ms, user_agent, verdict.limited)
        except Throttled as t:  # flood: answered, counted, never stored
            metrics.count_throttled(t.cause)
            return error_response(t.status, t.code, t.message, t.headers)
        except RequestRefused as r:
            return error_response(r.status, r.code, r.message, r.headers)
        except ClientDisconnect:
            return Response(status_code=499)  # never delivered: the client is gone; counted in metrics
        return Response(_ACCEPTED, status_code=202, media_type=_JSON)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def readyz(request: Request) -> Response:
        if await publisher.ready():
            return Response(b'{"status":"ready"}', media_type=_JSON)
        reason = (
            "the Kafka producer is not connected"
            if publisher.producer is None
            else f"Kafka at {settings.bootstrap_servers} does not answer"
        )
        return error_response(503, "kafka_unavailable", reason, {"Retry-After": str(RETRY_AFTER_S)})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await publisher.start()
        if control_fd is not None:
            follow_commands(control_fd, publisher, settings)
        try:
            yield
        finally:
            await publisher.stop()

    app = Starlette(
        routes=[
            Route(COLLECT_PATH, collect, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        middleware=[Middleware(_Instrument, metrics=metrics)],
        exception_handlers={HTTPException: _http_exception, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # /collect/ is a 404, not a redirect
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.publisher = publisher
    return app


# ------------------------------------------------------------------------------------------- serving


class CollectorServer(uvicorn.Server):
    """uvicorn.Server that prints its URL once listening and exits normally after SIGTERM/Ctrl-C.

    uvicorn's own shutdown does the graceful part: stop accepting, let in-flight requests finish
    (up to timeout_graceful_shutdown), then the lifespan shutdown flushes the Kafka producer.
    """

    def __init__(self, config: uvicorn.Config, announce: Callable[[str], None] | None = print) -> None:
        super().__init__(config)
        self.announce = announce
        self.url = ""

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        host, port = self.config.host, self.config.port
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                port = sock.getsockname()[1]
                break
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        if self.announce is not None:
            self.announce(f"collector listening on {self.url}{COLLECT_PATH} (Ctrl-C stops it)")
            sys.stdout.flush()

    def capture_signals(self) -> Any:  # type: ignore[override]
        return _SignalCapture(self)


class _SignalCapture:
    """Like uvicorn's capture_signals, minus re-raising the signal after a graceful shutdown."""

    def __init__(self, server: uvicorn.Server) -> None:
        self.server = server
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> None:
        import signal

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self.server.handle_exit)

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def make_config(settings: Settings, app: ASGIApp | None = None, log_level: str = "warning") -> uvicorn.Config:
    return server_config(
        app if app is not None else create_app(settings),
        settings.collector.host,
        settings.collector.port,
        edge_limits(settings.collector),  # header timeout and size, connection cap (core/httpedge.py)
        log_level,
        timeout_keep_alive=KEEP_ALIVE_S,
        lifespan="on",
        # in-flight requests get this long to finish after SIGTERM; the producer flush follows
        timeout_graceful_shutdown=int(settings.collector.publish_timeout_s) + 10,
    )


def follow_commands(fd: int, publisher: Publisher, settings: Settings) -> None:
    """`up`'s commands (core/control.py): {"raw_topic": NAME} moves publishing to that generation of the raw
    topic (only a generation of the configured one is accepted)."""
    loop = asyncio.get_running_loop()

    def on_command(command: dict[str, str]) -> None:
        topic = command.get("raw_topic", "")
        if set(command) != {"raw_topic"} or number_of(settings, topic) is None:
            log.warning("ignored a control command other than a generation of %s", settings.kafka.raw_topic)
            return
        asyncio.run_coroutine_threadsafe(publisher.switch_topic(topic), loop)

    control.listen(fd, on_command)


def serve(
    settings: Settings, log_level: str = "warning", ledger_dir: Path | None = None, control_fd: int | None = None
) -> None:
    """Run the collector on settings.collector.host:port until SIGTERM/SIGINT, then shut down gracefully
    (`ledger_dir`, `control_fd`: see create_app)."""
    app = create_app(settings, ledger_dir=ledger_dir, control_fd=control_fd)
    server = CollectorServer(make_config(settings, app, log_level=log_level))
    server.run()
    if not server.started:
        raise SystemExit(f"the collector could not listen on {settings.collector.host}:{settings.collector.port}")


def main(argv: list[str] | None = None) -> None:
    """`python -m producers.collector`: the collector without the is-telemetry CLI."""
    ap = argparse.ArgumentParser(prog="python -m producers.collector", description=__doc__.splitlines()[0])
    ap.add_argument("--config", "-c", default=None, help="YAML config file")
    ap.add_argument("--kafka", default=None, help="Kafka bootstrap servers host:port,...")
    ap.add_argument("--host", default=None)
    ap.add_argument("--port", type=int, default=None, help="0 = any free port (printed when listening)")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)
    settings = load_settings(
        args.config, kafka={"bootstrap_servers": args.kafka}, collector={"host": args.host, "port": args.port}
    )
    setup_logging(args.log_level)
    serve(settings, log_level=args.log_level)


if __name__ == "__main__":
    main()
