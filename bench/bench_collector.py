"""Collector throughput: HTTP POST /collect -> Kafka ack, against the raw kafka-python produce rate.

    python -m bench.bench_collector [--requests N] [--seconds S] [--concurrency C] [--smoke]

Starts an embedded broker (Tansu) and the collector as a subprocess (`python -m is_telemetry collect`), then POSTs
the real sample body (is-3.32.json, 572 bytes) over C keep-alive connections with a minimal HTTP/1.1 client (so the
client costs little CPU next to the server on a small machine), until N requests or S seconds. In the same run it
measures kafka-python's own produce rate (acks=all, same body, one producer in this process) and prints both and
their ratio, the last line `collector_vs_kafka_python=<ratio>`. `main()` returns the figures as a dict. `--smoke`:
300 requests over 8 connections, at most 5 s each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.soak_collector import Collector
from core.config import load_settings
from core.kafka import ensure_topics, headers, make_producer
from is_telemetry.broker import EmbeddedBroker, free_port

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PATH = REPO / "tests" / "fixtures" / "tts-samples" / "is-3.32.json"


def sample_body() -> bytes:
    """is-3.32.json byte for byte (tests/fixtures/tts-samples/)."""
    return SAMPLE_PATH.read_bytes()


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _http_load(host: str, port: int, body: bytes, total: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """C keep-alive connections, each POSTing body until `total` requests are sent or `seconds` pass."""
    request = (
        b"POST /collect HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"User-Agent: TheThingsStack/3.32.1 (linux/amd64)\r\nContent-Length: %d\r\n\r\n%s"
        % (host.encode(), port, len(body), body)
    )
    remaining = [total]
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while remaining[0] > 0 and time.monotonic() < deadline:
                remaining[0] -= 1
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(m.group(1)) if m else 0)
                latencies.append(time.perf_counter() - t0)
                status = int(head[9:12])
                statuses[status] = statuses.get(status, 0) + 1
                if b"connection: close" in head.lower():
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    done = sum(statuses.values())
    return {
        "requests": done,
        "accepted": statuses.get(202, 0),
        "statuses": statuses,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(done / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
    }


def kafka_produce_rate(bootstrap: str, topic: str, body: bytes, total: int, seconds: float) -> dict[str, Any]:
    """kafka-python alone: send `total` records (acks=all) with a callback each, wait for every ack."""
    producer = make_producer(bootstrap, enable_idempotence=False)
    try:
        producer.send(topic, body, key=b"warm-up").get(10)
        acked = [0]
        failed = [0]
        all_done = threading.Event()
        sent = 0

        def ok(_: Any) -> None:
            acked[0] += 1
            if acked[0] + failed[0] == total:
                all_done.set()

        def err(_: Any) -> None:
            failed[0] += 1
            if acked[0] + failed[0] == total:
                all_done.set()

        deadline = time.monotonic() + seconds
        t0 = time.perf_counter()
        for i in range(total):
            if time.monotonic() > deadline:
                break
            now = time.time_ns() // 1_000_000
            f = producer.send(
                topic, body, key=b"bench-%d" % i, timestamp_ms=now, headers=headers(now, "bench", "bench", len(body))
            )
            f.add_callback(ok)
            f.add_errback(err)
            sent += 1
        if sent < total:
            total = sent
            if acked[0] + failed[0] >= total:
                all_done.set()
        producer.flush(60)
        all_done.wait(60)
        elapsed = time.perf_counter() - t0
    finally:
        producer.close(10)
    return {
        "records": acked[0],
        "failed": failed[0],
        "seconds": round(elapsed, 2),
        "records_per_s": round(acked[0] / elapsed, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_collector", description="collector throughput")
    ap.add_argument("--requests", type=int, default=20_000, help="HTTP requests (and Kafka records) at most")
    ap.add_argument("--seconds", type=float, default=20.0, help="time limit of each measurement")
    ap.add_argument("--concurrency", type=int, default=64, help="concurrent HTTP connections")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny size: that the bench runs end to end and prints its verdict line (python -m bench --smoke)",
    )
    args = ap.parse_args(argv if argv is not None else [])
    if args.smoke:
        args.requests, args.seconds, args.concurrency = 300, 5.0, 8
    body = sample_body()

    with (
        tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp,
        EmbeddedBroker(port=free_port(), log_file=Path(tmp) / "broker.log") as broker,
    ):
        settings = load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers})
        ensure_topics(settings)
        topic = settings.kafka.raw_topic
        collector = Collector(broker.bootstrap_servers, topic, Path(tmp) / "collector.log")
        try:
            warm_up = min(500, args.requests)
            asyncio.run(_http_load(collector.host, collector.port, body, warm_up, 10, args.concurrency))
            http = asyncio.run(
                _http_load(collector.host, collector.port, body, args.requests, args.seconds, args.concurrency)
            )
        finally:
            collector.stop()
        kafka = kafka_produce_rate(broker.bootstrap_servers, topic, body, args.requests, args.seconds)

    result = {
        "bench": "collector",
        "body_bytes": len(body),
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "http": http,
        "kafka_python": kafka,
        "collector_requests_per_s": http["requests_per_s"],
        "kafka_python_records_per_s": kafka["records_per_s"],
        "ratio": round(http["requests_per_s"] / kafka["records_per_s"], 3) if kafka["records_per_s"] else None,
    }
    print(
        f"collector: {http['accepted']} of {http['requests']} requests accepted in {http['seconds']}s = "
        f"{http['requests_per_s']:.0f} req/s (concurrency {args.concurrency}, p50 {http['p50_ms']} ms, "
        f"p99 {http['p99_ms']} ms)"
    )
    print(
        f"kafka-python alone (acks=all): {kafka['records']} records in {kafka['seconds']}s = "
        f"{kafka['records_per_s']:.0f} records/s"
    )
    print(json.dumps(result))
    result["last_line"] = f"collector_vs_kafka_python={result['ratio']}"
    print(result["last_line"])
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
