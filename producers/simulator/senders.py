"""Sending deliveries: straight to Kafka (`send_to_kafka`: record timestamp = receive time, the collector's
headers) or over HTTP to the collector (`send_to_collector`: it stamps its own time), with a `SendResult`.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from core.errors import GaveUp, Stopped, TelemetryError
from core.retry import RetryPolicy, with_retries
from producers.simulator.bodies import user_agent_of
from producers.simulator.deliveries import Delivery, Progress


@dataclass
class SendResult:
    total: int  # deliveries given
    sent: int = 0  # acknowledged (Kafka) / answered 2xx (HTTP)
    failed: int = 0  # send errors (Kafka) / non-2xx other than 400, or given up after retries (HTTP)
    refused: int = 0  # HTTP 400: the collector refused the body at the edge (not JSON): never in Kafka
    not_attempted: int = 0  # left unsent (Ctrl-C, or sending stopped after an error)
    retried: int = 0  # HTTP: attempts repeated after 503 / connection errors (each may have been published)
    interrupted: bool = False
    elapsed_s: float = 0.0
    #: Exactly what reached the target, in send order. HTTP: re-stamped with our clock at the send.
    sent_deliveries: list[Delivery] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first few

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.interrupted and self.not_attempted == 0

    def summary(self) -> str:
        s = f"sent {self.sent}/{self.total}"
        if self.refused:
            s += f", refused by the collector (400) {self.refused}"
        if self.failed:
            s += f", FAILED {self.failed}"
        if self.not_attempted:
            s += f", not sent {self.not_attempted}"
        if self.retried:
            s += f", retried {self.retried}"
        if self.interrupted:
            s += " (interrupted)"
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return s + f" in {self.elapsed_s:.1f}s ({rate:.0f}/s)"


class SendError(TelemetryError):
    def __init__(self, result: SendResult) -> None:
        detail = "; ".join(result.errors[:3])
        super().__init__(f"{result.summary()}: {detail}")
        self.result = result


def _finish(
    result: SendResult, n: int, started: float, progress: Progress | None, raise_on_failure: bool
) -> SendResult:
    """Close a send: elapsed time, a last progress report, and SendError if anything was not delivered."""
    result.elapsed_s = time.monotonic() - started
    if progress is not None:
        progress(result.sent, n)
    if raise_on_failure and (result.failed or (result.not_attempted and not result.interrupted)):
        raise SendError(result)
    return result


def send_to_kafka(
    deliveries: Sequence[Delivery],
    bootstrap_servers: str,
    topic: str,
    progress: Progress | None = None,
    *,
    raise_on_failure: bool = True,
    flush_timeout_s: float = 120.0,
    **producer_overrides: Any,
) -> SendResult:
    """Produce every delivery, in order: key, value = body, timestamp = received_at_ms, the collector's headers.

    Ctrl-C stops submitting, flushes what was submitted and returns (interrupted=True). Any failed send
    raises SendError (with the result, whose sent_deliveries are what reached Kafka) unless raise_on_failure
    is False. One request in flight per connection keeps the order within each partition.
    `producer_overrides` go to core.kafka.make_producer (kafka-python KafkaProducer settings).
    """
    from kafka.errors import KafkaError

    from core.kafka import headers, make_producer

    deliveries = list(deliveries)
    n = len(deliveries)
    result = SendResult(total=n)
    acked = [False] * n
    lock = threading.Lock()
    counters = {"ok": 0, "err": 0}

    def on_ok(i: int, _meta: Any) -> None:
        with lock:
            acked[i] = True
            counters["ok"] += 1

    def on_err(i: int, exc: BaseException) -> None:
        with lock:
            counters["err"] += 1
            if len(result.errors) < 10:
                result.errors.append(f"delivery {i}: {exc!r}")

    started = time.monotonic()
    config: dict[str, Any] = dict(
        max_in_flight_requests_per_connection=1, client_id="is-telemetry-simulator", bootstrap_timeout_ms=10_000
    )
    config.update(producer_overrides)
    try:
        producer = make_producer(bootstrap_servers, **config)
    except KafkaError as exc:  # no broker at all
        result.not_attempted = n
        result.errors.append(f"cannot connect to Kafka at {bootstrap_servers}: {exc!r}")
        result.elapsed_s = time.monotonic() - started
        if raise_on_failure and n:
            raise SendError(result) from exc
        return result
    submitted = 0
    try:
        try:
            for i, d in enumerate(deliveries):
                try:
                    fut = producer.send(
                        topic,
                        value=d.body,
                        key=d.key,
                        timestamp_ms=d.received_at_ms,
                        headers=headers(
                            d.received_at_ms, "simulator", user_agent=user_agent_of(d.body), body_length=len(d.body)
                        ),
                    )
                except KafkaError as exc:  # e.g. no metadata within max_block_ms: the broker is gone
                    on_err(i, exc)
                    submitted += 1
                    break
                fut.add_callback(on_ok, i)
                fut.add_errback(on_err, i)
                submitted += 1
                if progress is not None and submitted % 250 == 0:
                    progress(counters["ok"], n)
        except KeyboardInterrupt:
            result.interrupted = True
        try:
            producer.flush(timeout=flush_timeout_s)
        except KeyboardInterrupt:
            result.interrupted = True
        except KafkaError as exc:
            result.errors.append(f"flush: {exc!r}")
    finally:
        try:
            producer.close(timeout=5)
        except Exception:  # noqa: BLE001 - closing must not hide the result
            pass
    with lock:
        result.sent = counters["ok"]
        # anything submitted but neither acknowledged nor failed (flush timed out/interrupted) counts as failed
        result.failed = submitted - counters["ok"]
        unconfirmed = submitted - counters["ok"] - counters["err"]
        if unconfirmed:
            result.errors.append(
                f"{unconfirmed} send(s) unconfirmed (flush interrupted or timed out): they may or may not be in Kafka"
            )
        result.sent_deliveries = [d for d, ok in zip(deliveries, acked) if ok]
    result.not_attempted = n - submitted
    return _finish(result, n, started, progress, raise_on_failure)


def _now_ms() -> int:
    return int(time.time() * 1000)


class CollectorBusy(TelemetryError):
    """The collector answered 503 (it cannot publish now): the body is sent again after a wait."""


def post_once(client: Any, url: str, body: bytes) -> tuple[int, Any]:
    """One POST of a body as TTS sends it (Content-Type application/json, the TTS User-Agent): (our clock at the
    attempt, the answer). A 503 raises CollectorBusy, to be retried like a connection error (`post_failure`)."""
    sent_at = _now_ms()
    r = client.post(url, content=body, headers={"Content-Type": "application/json", "User-Agent": user_agent_of(body)})
    if r.status_code == 503:
        raise CollectorBusy("HTTP 503")
    return sent_at, r


def post_failure(exc: BaseException) -> str | None:
    """What a POST's failure to retry says (a connection error, a 503); None for any other error (raised)."""
    import httpx

    if isinstance(exc, httpx.TransportError):
        return repr(exc)
    return str(exc) if isinstance(exc, CollectorBusy) else None


@dataclass
class _CountRetries:
    """A retry report (core/retry.py) that counts the retries and says nothing: the result says what failed."""

    counters: dict[str, int]
    lock: threading.Lock

    def retrying(self, line: str, failures: int, wait: float) -> None:
        with self.lock:
            self.counters["retried"] += 1

    def gave_up(self, line: str, failures: int) -> None:
        return None

    def recovered(self, failures: int) -> None:
        return None


def send_to_collector(
    deliveries: Sequence[Delivery],
    url: str,
    concurrency: int = 8,
    progress: Progress | None = None,
    *,
    retries: int = 6,
    timeout_s: float = 10.0,
    raise_on_failure: bool = True,
) -> SendResult:
    """POST every body to the collector as TTS does (Content-Type application/json, the TTS User-Agent).

    Deliveries with the same key go through the same connection one after the other, so the collector
    sees each UID's bodies in this order. 503 and connection errors are retried with backoff; 400 (the
    collector refuses bodies that are not JSON) counts as refused: never published, not in the ground
    truth; any other non-2xx answer counts as failed. The collector stamps its own receive time: `sent_deliveries` carry
    our clock at the successful attempt, which is what the ground truth of an HTTP run is computed from.
    """
    import httpx

    deliveries = list(deliveries)
    n = len(deliveries)
    concurrency = max(1, concurrency)
    result = SendResult(total=n)
    lanes: list[list[int]] = [[] for _ in range(concurrency)]
    for i, d in enumerate(deliveries):
        lanes[(zlib.crc32(d.key) if d.key is not None else i) % concurrency].append(i)
    stamps: list[int | None] = [None] * n
    attempted = [False] * n
    stop = threading.Event()
    lock = threading.Lock()
    counters = {"ok": 0, "err": 0, "retried": 0, "refused": 0}

    def fail(i: int, why: str) -> None:
        with lock:
            counters["err"] += 1
            if len(result.errors) < 10:
                result.errors.append(f"delivery {i}: {why}")

    policy = RetryPolicy(initial_s=0.1, maximum_s=5.0, max_retries=retries)
    report = _CountRetries(counters, lock)

    def lane_worker(client: httpx.Client, lane: list[int]) -> None:
        for i in lane:
            if stop.is_set():
                return
            attempted[i] = True
            try:
                t, r = with_retries(
                    partial(post_once, client, url, deliveries[i].body), policy, stop, post_failure, report=report
                )
            except GaveUp as exc:
                fail(i, f"gave up after {retries + 1} attempts: {exc}")
                continue
            except Stopped as exc:
                if exc.__cause__ is None:  # stopped before the first attempt
                    attempted[i] = False
                else:
                    fail(i, f"interrupted while retrying: {post_failure(exc.__cause__)}")
                return
            if 200 <= r.status_code < 300:
                stamps[i] = t
                with lock:
                    counters["ok"] += 1
            elif r.status_code == 400:  # refused at the edge (the collector's not_json): not published
                with lock:
                    counters["refused"] += 1
            else:
                fail(i, f"HTTP {r.status_code}: {r.text[:200]}")

    started = time.monotonic()
    with httpx.Client(
        timeout=timeout_s, limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    ) as client:
        threads = [
            threading.Thread(target=lane_worker, args=(client, lane), daemon=True, name=f"sim-post-{k}")
            for k, lane in enumerate(lanes)
            if lane
        ]
        for th in threads:
            th.start()
        try:
            while any(th.is_alive() for th in threads):
                for th in threads:
                    th.join(0.2)
                if progress is not None:
                    progress(counters["ok"], n)
        except KeyboardInterrupt:
            result.interrupted = True
            stop.set()
            for th in threads:
                th.join()
    result.sent = counters["ok"]
    result.failed = counters["err"]
    result.retried = counters["retried"]
    result.refused = counters["refused"]
    result.not_attempted = n - sum(attempted)
    result.sent_deliveries = [Delivery(s, d.key, d.body) for d, s in zip(deliveries, stamps) if s is not None]
    return _finish(result, n, started, progress, raise_on_failure)
