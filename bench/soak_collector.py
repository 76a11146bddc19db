"""Collector soak: many concurrent clients for a bounded time; memory must stay flat and no record be lost.

    python -m bench.soak_collector [--seconds 300] [--clients 200] [--think-ms 20] [--reconnect-every 50]
                                   [--bad-every 50] [--sample-every 5] [--json] [--smoke]

Starts an embedded broker (Tansu) on a free loopback port, a fresh raw topic, and the collector as a subprocess
(`python -m is_telemetry collect`). Then C clients, each on its own keep-alive connection (re-opened every
`--reconnect-every` requests: connection churn), POST for S seconds with a random think time around `--think-ms`.
Every body carries a unique UID (88-char base64, as an Identity Server sends), so each acknowledged request can be
found in the topic; every `--bad-every`-th body is not JSON (answered 400, never stored) so the error path is soaked
too.

While it runs, the collector's RSS (VmRSS from /proc) is sampled every `--sample-every` seconds. Afterwards the
topic is read back by consuming it (Tansu's ListOffsets "latest" is wrong, so end_offsets() is never used):

- lost: UIDs answered 202 that are not in the topic (must be 0);
- duplicated: records beyond the first for a UID (must be 0 here: no retries happen in a healthy run);
- stored_unacknowledged: UIDs in the topic whose request did not get a 202 (allowed; a client would re-send).

It prints RSS first/last/max and the counts, the last line `lost=<n> duplicated=<n>`; `main()` returns them as a
dict (tests run it briefly). `--smoke`: 20 clients for 3 s (`python -m bench --smoke`).
Loopback only; the broker and the collector are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import re
import selectors
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from core.config import load_settings
from core.kafka import ensure_topics
from is_telemetry.broker import EmbeddedBroker, free_port
from is_telemetry.runtime import stop_process

REPO = Path(__file__).resolve().parents[1]
# is-3.32.json (the reference sample) with the uid as a placeholder
TEMPLATE = (
    b'{"uid":"%s","os":{"operating_system":"linux","arch":"amd64","binary_version":"3.32.1 (1d218216, '
    b'2024-10-24T13:28:12Z)","golang_version":"go1.22.5"},"cli":null,"entities_count":{"gateways":{"total":3,'
    b'"gateways_by_frequency_plan_id":{"EU_863_870_TTN":2,"US_902_928_FSB_2":1}},"end_devices":{"total":120,'
    b'"activate_end_devices":{"total":95,"last_day":60,"last_week":80,"last_month":90}},"applications":{"total":7},'
    b'"accounts":{"users":{"standard":4,"admin":1},"organizations":{"total":2}}}}\n'
)
BAD_BODY = b'{"uid":"not json after all",'


def uid_of(run: str, n: int) -> bytes:
    """A unique Identity-Server-shaped UID: base64 of a SHA-512 digest (88 characters)."""
    return base64.b64encode(hashlib.sha512(f"{run}:{n}".encode()).digest())


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Collector:
    """`python -m is_telemetry collect` on a free loopback port; its stderr goes to a log file."""

    def __init__(self, bootstrap: str, topic: str, log_path: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["IS_TELEMETRY_KAFKA__RAW_TOPIC"] = topic
        # every client here is loopback, one client to the collector: its request and byte buckets are made large
        # enough never to run out (they are still taken from), so that what is measured is the collector's speed
        env["IS_TELEMETRY_COLLECTOR__CLIENT_REQUEST_BURST"] = str(10**9)
        env["IS_TELEMETRY_COLLECTOR__CLIENT_BODY_BYTES_BURST"] = str(10**13)
        env.pop("IS_TELEMETRY_CONFIG", None)
        env["IS_TELEMETRY_COLLECTOR__PORT"] = "0"  # any free port (the CLI's --port 0 means the configured one)
        self.log_path = log_path
        with open(log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "is_telemetry",
                    "collect",
                    "--kafka",
                    bootstrap,
                    "--host",
                    "127.0.0.1",
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=log_path.parent,
                env=env,
            )
        self.host, self.port = self._wait_for_address(30.0)

    def _wait_for_address(self, timeout_s: float) -> tuple[str, int]:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        buf = b""
        try:
            while b"\n" not in buf:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"the collector did not start: {buf!r}\n{self.log_path.read_text()[-2000:]}")
                if sel.select(0.1):
                    buf += os.read(self.proc.stdout.fileno(), 4096)
        finally:
            sel.close()
        m = re.search(rb"listening on http://([\d.]+):(\d+)/collect", buf)
        if not m:
            raise RuntimeError(f"unexpected collector output: {buf!r}")
        return m.group(1).decode(), int(m.group(2))

    def stop(self, timeout_s: float = 30.0) -> int | None:
        stop_process(self.proc, timeout_s)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


class Sampler(threading.Thread):
    """VmRSS of a process every `every_s` seconds, until stopped."""

    def __init__(self, pid: int, every_s: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> None:
        kb = rss_kb(self.pid)
        if kb is not None:
            self.samples.append((round(time.monotonic() - self.t0, 1), kb))

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            self.sample()

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.sample()


async def load(
    host: str,
    port: int,
    run: str,
    seconds: float,
    clients: int,
    think_ms: float,
    reconnect_every: int,
    bad_every: int,
    seed: int,
) -> dict[str, Any]:
    """C clients POSTing unique bodies for `seconds`; returns statuses and the UIDs answered 202."""
    accepted: list[bytes] = []
    statuses: Counter[int | str] = Counter()
    latencies: list[float] = []
    counter = [0]
    deadline = time.monotonic() + seconds
    rng = random.Random(seed)

    async def client(i: int) -> None:
        reader = writer = None
        sent_on_connection = 0
        while time.monotonic() < deadline:
            n = counter[0]
            counter[0] += 1
            bad = bad_every > 0 and n % bad_every == bad_every - 1
            uid = uid_of(run, n)
            body = BAD_BODY if bad else TEMPLATE % uid
            request = (
                b"POST /collect HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                b"User-Agent: TheThingsStack/3.32.1 (linux/amd64)\r\nContent-Length: %d\r\n\r\n%s"
                % (host.encode(), port, len(body), body)
            )
            try:
                if writer is None or sent_on_connection >= reconnect_every:
                    if writer is not None:
                        writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    sent_on_connection = 0
                assert reader is not None
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(m.group(1)) if m else 0)
                latencies.append(time.perf_counter() - t0)
                status = int(head[9:12])
                sent_on_connection += 1
                if b"connection: close" in head.lower():
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                statuses[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.1)
                continue
            statuses[status] += 1
            if status == 202:
                accepted.append(uid)
            if think_ms > 0:
                await asyncio.sleep(rng.uniform(0, 2 * think_ms) / 1000)
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1) if latencies else 0.0

    return {
        "requests": counter[0],
        "statuses": dict(statuses),
        "accepted": accepted,
        "seconds": round(elapsed, 1),
        "requests_per_s": round(counter[0] / elapsed, 1),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


def _uid_of(body: bytes) -> bytes:
    try:
        uid = orjson.loads(body).get("uid")
    except (orjson.JSONDecodeError, AttributeError):
        return b""
    return uid.encode() if isinstance(uid, str) else b""


def topic_keys(
    bootstrap: str, topic: str, at_least: int, quiet_s: float = 3.0, timeout_s: float = 300.0
) -> list[bytes]:
    """The key of every body in topic (a many-bodies record's bodies counted one by one, by their uid), by
    consuming from the beginning until at_least were read and no more arrive."""
    from kafka import KafkaConsumer

    from core.envelope import is_batch, unpack

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=10_000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    keys: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            got = consumer.poll(timeout_ms=500)
            for batch in got.values():
                for r in batch:
                    headers = dict(r.headers or [])
                    if is_batch(headers):  # a many-bodies record: one key per body, its uid
                        keys.extend(_uid_of(frame.body) for frame in unpack(r.value))
                    else:
                        keys.append(r.key)
            if got:
                last_new = time.monotonic()
            elif len(keys) >= at_least and time.monotonic() - last_new >= quiet_s:
                break
    finally:
        consumer.close()
    return keys


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.soak_collector", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0, help="how long the clients POST (default 300)")
    ap.add_argument("--clients", type=int, default=200, help="concurrent client connections (default 200)")
    ap.add_argument("--think-ms", type=float, default=20.0, help="mean pause between a client's requests (default 20)")
    ap.add_argument("--reconnect-every", type=int, default=50, help="requests per connection before a new one")
    ap.add_argument("--bad-every", type=int, default=50, help="every N-th body is not JSON (0 = none)")
    ap.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling interval in seconds (default 5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny size: that the tool runs end to end and prints its verdict line (python -m bench --smoke)",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.seconds, args.clients, args.sample_every = 3.0, 20, 0.5

    run = uuid.uuid4().hex[:8]
    topic = f"soak-{run}"
    workdir = Path(tempfile.mkdtemp(prefix="soak-collector-"))
    broker = EmbeddedBroker(port=free_port(), log_file=workdir / "broker.log").start()
    collector: Collector | None = None
    try:
        settings = load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers, "raw_topic": topic})
        ensure_topics(settings)
        collector = Collector(broker.bootstrap_servers, topic, workdir / "collector.log")
        idle_kb = rss_kb(collector.proc.pid)
        sampler = Sampler(collector.proc.pid, args.sample_every)
        sampler.start()
        sampler.sample()  # the first sample: idle, connected to Kafka, before any load
        result = asyncio.run(
            load(
                collector.host,
                collector.port,
                run,
                args.seconds,
                args.clients,
                args.think_ms,
                args.reconnect_every,
                args.bad_every,
                args.seed,
            )
        )
        sampler.stop()
        alive = collector.proc.poll() is None
        accepted: list[bytes] = result.pop("accepted")
        keys = topic_keys(broker.bootstrap_servers, topic, len(accepted))
        in_topic = Counter(keys)
        accepted_set = set(accepted)
        rss = [kb for _, kb in sampler.samples]
        loaded = rss[1:] or rss  # samples taken under load (the first one is idle)
        out: dict[str, Any] = {
            **result,
            "clients": args.clients,
            "accepted": len(accepted),
            "records_in_topic": len(keys),
            "lost": len(accepted_set - set(in_topic)),
            "duplicated": sum(n - 1 for n in in_topic.values() if n > 1),
            "stored_unacknowledged": len(set(in_topic) - accepted_set),
            "collector_alive": alive,
            "rss_idle_mb": round((idle_kb or 0) / 1024, 1),
            "rss_first_mb": round(loaded[0] / 1024, 1) if loaded else None,
            "rss_last_mb": round(loaded[-1] / 1024, 1) if loaded else None,
            "rss_max_mb": round(max(loaded) / 1024, 1) if loaded else None,
            "rss_samples": len(rss),
            "rss_series_mb": [(t, round(kb / 1024, 1)) for t, kb in sampler.samples],
        }
    finally:
        if collector is not None:
            collector.stop()
        broker.stop()
    out["last_line"] = f"lost={out['lost']} duplicated={out['duplicated']}"
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"soak: {out['clients']} clients for {out['seconds']}s: {out['requests']} requests "
            f"({out['requests_per_s']}/s, p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms), "
            f"statuses {out['statuses']}"
        )
        print(
            f"collector RSS: idle {out['rss_idle_mb']} MB; under load first {out['rss_first_mb']} MB, "
            f"last {out['rss_last_mb']} MB, max {out['rss_max_mb']} MB ({out['rss_samples']} samples)"
        )
        print(
            f"records: {out['accepted']} acknowledged, {out['records_in_topic']} bodies in the topic; lost {out['lost']}, "
            f"duplicated {out['duplicated']}, stored but not acknowledged {out['stored_unacknowledged']}"
        )
        print(out["last_line"])
    return out


if __name__ == "__main__":
    main()
