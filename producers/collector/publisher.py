"""`Publisher`: the collector's Kafka side. It owns the producer (connected in the background, retried until Kafka
answers), stores each body alone or in its partition's batch (core/envelope.py) and answers once Kafka acknowledged
the record (acks=all), else raises `Unavailable` (503); it says whether Kafka answers (/readyz) and moves to another
generation of the raw topic when `up` says so (core/generations.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from core.config import Settings
from core.envelope import BATCH_FORMAT, HEADER_FORMAT, HEADER_RATE_LIMITED, RATE_LIMITED, Frame, frame_size, pack
from core.errors import Stopped, Unavailable
from core.kafka import HEADER_SOURCE, broker_answers, close_producer, make_producer
from core.kafka import headers as record_headers
from core.ledger import AckLedger
from core.partitioning import partition_of
from core.retry import RetryPolicy, retry_on, with_retries
from producers.collector.metrics import Metrics
from producers.collector.producer_settings import delivery_timeout_ms, producer_overrides

log = logging.getLogger(__name__)

SOURCE = "collector"
RETRY_AFTER_S = 5  # the Retry-After of every 503 (TTS ignores it; other clients may honour it)
READY_CACHE_S = 1.0  # /readyz probes Kafka at most once per this interval
READY_PROBE_TIMEOUT_S = 0.5
CONNECT_RETRY = RetryPolicy(initial_s=0.5, maximum_s=5.0)  # creating the producer while Kafka is not there yet


def unavailable(message: str) -> Unavailable:
    """Kafka cannot store a body now: 503 with Retry-After."""
    return Unavailable(message, code="kafka_unavailable", headers={"Retry-After": str(RETRY_AFTER_S)})


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
            raise unavailable("the Kafka producer is not connected yet")
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
            raise unavailable(f"Kafka did not acknowledge the record within {self.timeout_s:g}s") from None
        except Unavailable:
            raise
        except (KafkaError, ValueError) as exc:  # the producer's errors, or its refusal of a record: "not stored"
            self.metrics.kafka_errors.labels("error").inc()
            log.warning("Kafka publish failed: %r", exc)
            raise unavailable(f"Kafka publish failed: {type(exc).__name__}") from None
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
