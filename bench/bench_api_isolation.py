"""Ingestion beside analyst queries: how long a posted body takes to reach ClickHouse, alone and while the most
expensive analyst queries run (`python -m bench.bench_api_isolation`, or `python -m bench api_isolation`).

Starts `is-telemetry up --no-simulate` (embedded broker and chDB, default settings), then, for each phase, posts
bodies to the collector one at a time and measures post -> row visible in `snapshots` (polled through the
POST /api/sql):
- `alone`: nothing else runs;
- `heavy`: `SELECT count() FROM numbers(1e13)` (hours of work without a limit) runs through POST /api/sql;
- `saturated`: as many such queries as there are analyst sessions (api.query_concurrency, 4), plus more that are
  turned away (503). Latency is then read from the worker's sink metric instead (no SQL session is free).
Prints the medians, the ratio of each phase to `alone` (the baseline, measured in the same run) and the load
average. The batch interval (processors.batch_seconds, 1 s) dominates every figure. The last line is
`heavy_vs_alone=<x> saturated_vs_alone=<x>`. `--smoke`: 2 bodies per phase.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from is_telemetry import apiclient
from is_telemetry.broker import free_ports
from is_telemetry.runtime import stop_process

REPO = Path(__file__).resolve().parents[1]
SAMPLE = (REPO / "tests" / "fixtures" / "tts-samples" / "is-3.32.json").read_bytes()
HEAVY = "SELECT count() FROM numbers(1e13)"
SNAPSHOT_ROWS = 'is_telemetry_sink_rows_total{table="snapshots"}'


def body(seed: str) -> tuple[str, bytes]:
    message = orjson.loads(SAMPLE)
    message["uid"] = base64.b64encode(hashlib.sha512(seed.encode()).digest()).decode()
    return message["uid"], orjson.dumps(message)


class Stack:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        broker, self.collector_port, self.api_port = free_ports(3)
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.collect = f"http://127.0.0.1:{self.collector_port}/collect"
        self.log = data_dir / "up.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "is_telemetry",
                "up",
                "--no-simulate",
                "--data-dir",
                str(data_dir),
                "--broker-port",
                str(broker),
                "--collector-port",
                str(self.collector_port),
                "--api-port",
                str(self.api_port),
            ],
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=data_dir,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 120
        while "Ctrl-C stops everything" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the stack did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc, 90)

    def metric(self, series: str) -> float:
        return (apiclient.metrics(self.api + "/metrics") or {}).get(series, 0.0)

    def post_until_stored(self, seed: str, by_metric: bool = False) -> float:
        uid, payload = body(seed)
        before = self.metric(SNAPSHOT_ROWS) if by_metric else 0.0
        started = time.monotonic()
        r = httpx.post(self.collect, content=payload, headers={"content-type": "application/json"}, timeout=15)
        assert r.status_code == 202, r.text
        while True:
            if by_metric:
                if self.metric(SNAPSHOT_ROWS) > before:
                    return time.monotonic() - started
            elif apiclient.sql(self.api, f"SELECT count() FROM snapshots WHERE uid = '{uid}'")[1][0][0]:
                return time.monotonic() - started
            time.sleep(0.02)


def heavy_queries(stack: Stack, n: int, stop: threading.Event) -> list[threading.Thread]:
    def run() -> None:
        while not stop.is_set():
            try:
                httpx.post(stack.api + "/api/sql", json={"query": HEAVY}, timeout=90)
            except httpx.HTTPError:
                pass

    threads = [threading.Thread(target=run, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_api_isolation", description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=10, help="bodies per phase")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny size: that the bench runs end to end and prints its verdict line (python -m bench --smoke)",
    )
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    if args.smoke:
        args.posts = 2
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-api-isolation-") as tmp:
        # the smoke: heavy queries stopped after 5 s, not 30 (stopping the stack waits for the queries running)
        stack = Stack(Path(tmp) / "stack", {"IS_TELEMETRY_API__QUERY_TIMEOUT_S": "5"} if args.smoke else None)
        try:
            stack.post_until_stored("warm-up")  # the consumer group join
            phases: dict[str, list[float]] = {}
            phases["alone"] = [stack.post_until_stored(f"alone-{i}") for i in range(args.posts)]
            stop = threading.Event()
            threads = heavy_queries(stack, 1, stop)
            time.sleep(1)
            phases["heavy"] = [stack.post_until_stored(f"heavy-{i}") for i in range(args.posts)]
            threads += heavy_queries(stack, 5, stop)
            time.sleep(2)
            phases["saturated"] = [stack.post_until_stored(f"sat-{i}", by_metric=True) for i in range(args.posts)]
            stop.set()
        finally:
            stack.stop()
    base = statistics.median(phases["alone"])
    print(f"post -> stored in ClickHouse, median of {args.posts} (load average {os.getloadavg()[0]:.2f}):")
    for name, values in phases.items():
        median = statistics.median(values)
        print(
            f"  {name:10s} {median * 1000:7.0f} ms  (max {max(values) * 1000:.0f} ms)  ratio to alone {median / base:.2f}"
        )
        out[f"{name}_median_ms"] = round(median * 1000)
        out[f"{name}_vs_alone"] = round(median / base, 2)
    out["load_average"] = round(os.getloadavg()[0], 2)
    out["last_line"] = f"heavy_vs_alone={out['heavy_vs_alone']} saturated_vs_alone={out['saturated_vs_alone']}"
    print(out["last_line"])
    return out


if __name__ == "__main__":
    main()
