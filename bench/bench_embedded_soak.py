"""The embedded stack under a steady load for long enough to hold several times 100k records: does the broker stay
bounded (memory, CPU per request) and is every acknowledged body stored?

    python -m bench.bench_embedded_soak [--seconds 720] [--rate 500] [--clients 16] [--sample-every 10] [--smoke]

Starts `is-telemetry up --no-simulate` in a fresh data directory on free loopback ports (the collector lets
127.0.0.1 send any number of new UIDs, as the simulated fleet's address does), then C keep-alive clients POST bodies
with unique UIDs at a steady total rate for S seconds (each body an Identity Server's; the clients are paced, not
flat out: the same number of requests every second). Every `--sample-every` seconds it records, from /proc, the
embedded broker's RSS and the CPU it used since the last sample, the requests answered 202 meanwhile, and the
records the broker holds (the raw topic's high-water marks, fetched, as `is-telemetry status` reads them, summed
over the topics of the stack). CPU per request = broker CPU seconds / requests answered, per interval.

At the end it waits until ClickHouse holds every body answered 202 (each has its own UID: `snapshots` holds one row
per UID and day), then stops the stack with SIGTERM. Its last line:

    broker_cpu_per_req_ratio_end_vs_start=<x>

the mean CPU per request over the last quarter of the samples against the first quarter (after the first sample,
which includes the stack's start). Target: at most 1.3 (flat). `--smoke` runs it for 25 s at 200 req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.soak_collector import TEMPLATE as SOAK_TEMPLATE

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = SOAK_TEMPLATE.rstrip(b"\n")  # is-3.32.json with the uid as a placeholder (bench/soak_collector.py)
TARGET_RATIO = 1.3
CLK_TCK = os.sysconf("SC_CLK_TCK")


def uid_of(run: str, n: int) -> bytes:
    return base64.b64encode(hashlib.sha512(f"{run}:{n}".encode()).digest())


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (its own, not its children's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Sample:
    t_s: float
    broker_pid: int
    rss_mb: float
    cpu_s: float  # broker CPU in the interval
    requests: int  # answered 202 in the interval
    cpu_ms_per_req: float | None
    records_held: int | None
    raw_topic: str


class Load:
    """C paced keep-alive clients posting unique bodies: `rate` requests a second in all."""

    def __init__(self, host: str, port: int, run: str, rate: float, clients: int) -> None:
        self.host, self.port, self.run, self.rate, self.clients = host, port, run, rate, clients
        self.accepted = 0
        self.statuses: dict[str, int] = {}
        self.n = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="load", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)

    async def _main(self) -> None:
        await asyncio.gather(*(self._client(i) for i in range(self.clients)))

    async def _client(self, i: int) -> None:
        interval = self.clients / self.rate  # each client's share of the pace
        next_at = time.monotonic() + interval * i / self.clients
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
            n = self.n
            self.n += 1
            body = TEMPLATE % uid_of(self.run, n)
            request = (
                b"POST /collect HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                b"User-Agent: TheThingsStack/3.32.1 (linux/amd64)\r\nContent-Length: %d\r\n\r\n%s"
                % (self.host.encode(), self.port, len(body), body)
            )
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
                key = type(exc).__name__
                self.statuses[key] = self.statuses.get(key, 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
            if status == 202:
                self.accepted += 1
        if writer is not None:
            writer.close()


def state(data_dir: Path) -> dict[str, Any]:
    try:
        value = json.loads((data_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def records_held(bootstrap: str, topics: list[str]) -> int | None:
    """The records the broker holds in `topics` (high-water marks fetched, summed), None if it cannot tell."""
    from is_telemetry.status import kafka_lag

    total = 0
    for topic in topics:
        try:
            lag = kafka_lag(bootstrap, topic, "is-telemetry-processors", 5.0)
        except Exception:  # noqa: BLE001 - a topic deleted meanwhile, a broker busy: this sample does not tell
            return None
        total += sum(lag.highwater.values())
    return total


def stored(api: str) -> int | None:
    """UID-days in ClickHouse (one per acknowledged body here), None while the API does not answer (the worker is
    moving to a new generation of the raw topic)."""
    from is_telemetry import apiclient

    try:
        return int(apiclient.sql(api, "SELECT count() FROM snapshots FINAL", "", 30)[1][0][0])
    except apiclient.ApiError:
        return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_embedded_soak", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=720.0, help="how long the load runs")
    ap.add_argument("--rate", type=float, default=500.0, help="requests a second, in all")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--sample-every", type=float, default=10.0)
    ap.add_argument("--smoke", action="store_true", help="25 s at 200 req/s, sampled every 5 s")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.seconds, args.rate, args.sample_every = 25.0, 200.0, 5.0
    sys.path.insert(0, str(REPO))
    from is_telemetry.broker import free_ports
    from is_telemetry.runtime import stop_process

    tmp = Path(tempfile.mkdtemp(prefix="embedded-soak-"))
    data_dir = tmp / "data"
    broker, collector, api = free_ports(3)
    env = {**os.environ, "IS_TELEMETRY_COLLECTOR__UNLIMITED_CLIENTS": '["127.0.0.1"]'}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("IS_TELEMETRY_CONFIG", None)
    log_path = tmp / "up.log"
    command = [sys.executable, "-m", "is_telemetry", "up", "--no-simulate", "--data-dir", str(data_dir)]
    command += ["--broker-port", str(broker), "--collector-port", str(collector), "--api-port", str(api)]
    with open(log_path, "wb") as log:
        up = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True)
    api_url = f"http://127.0.0.1:{api}"
    samples: list[Sample] = []
    load: Load | None = None
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops everything" not in log_path.read_text(errors="replace"):
            if up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`up` did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        load = Load("127.0.0.1", collector, f"soak-{time.time_ns()}", args.rate, args.clients)
        started = time.monotonic()
        load.start()
        print(
            f"embedded soak: {args.rate:g} req/s for {args.seconds:g} s ({args.clients} clients), "
            f"a sample every {args.sample_every:g} s; data in {data_dir}",
            flush=True,
        )
        print("   t_s  broker_pid  rss_mb  cpu_ms/req  req/interval  records_held  raw_topic", flush=True)
        last: tuple[int, float, int] | None = None
        while time.monotonic() - started < args.seconds:
            time.sleep(args.sample_every - ((time.monotonic() - started) % args.sample_every))
            st = state(data_dir)
            pid = int(st.get("children", {}).get("broker", {}).get("pid") or 0)
            if up.poll() is not None:
                raise RuntimeError(f"`up` exited:\n{log_path.read_text(errors='replace')[-3000:]}")
            rss, cpu, accepted = rss_mb(pid), cpu_s(pid), load.accepted
            topic = str(st.get("raw_topic") or "tts-telemetry-raw")
            topics = [t for t in st.get("raw_topics", [topic]) if isinstance(t, str)] or [topic]
            held = records_held(str(st.get("kafka")), topics)
            if rss is None or cpu is None:
                last = None
                continue
            if last is not None and last[0] == pid:
                requests = accepted - last[2]
                used = cpu - last[1]
                s = Sample(
                    round(time.monotonic() - started, 1),
                    pid,
                    round(rss, 1),
                    round(used, 2),
                    requests,
                    round(1000 * used / requests, 4) if requests else None,
                    held,
                    topic,
                )
                samples.append(s)
                print(
                    f"{s.t_s:6.0f}  {pid:10d}  {s.rss_mb:6.1f}  {s.cpu_ms_per_req or 0:10.4f}  {requests:12d}  "
                    f"{held if held is not None else '?':>12}  {topic}",
                    flush=True,
                )
            last = (pid, cpu, accepted)
        load.finish()
        accepted = load.accepted
        print(f"load stopped: {accepted} answered 202; statuses {load.statuses}", flush=True)
        deadline = time.monotonic() + 180
        n = 0
        while time.monotonic() < deadline:
            n = stored(api_url) or n
            if n >= accepted:
                break
            time.sleep(1)
        lost = accepted - n
        print(f"stored {n} of {accepted} acknowledged bodies (lost {lost})", flush=True)
    finally:
        if load is not None:
            load.finish()
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
        stop_process(up, 120, kill_group=True)
    per_req = [s.cpu_ms_per_req for s in samples if s.cpu_ms_per_req is not None]
    quarter = max(1, len(per_req) // 4)
    start = sum(per_req[:quarter]) / quarter if per_req else 0.0
    end = sum(per_req[-quarter:]) / quarter if per_req else 0.0
    ratio = round(end / start, 3) if start else float("nan")
    rss = [s.rss_mb for s in samples]
    held = [s.records_held for s in samples if s.records_held is not None]
    print(
        f"broker RSS first {rss[0] if rss else '?'} MB, last {rss[-1] if rss else '?'} MB, max "
        f"{max(rss) if rss else '?'} MB; records held at most {max(held) if held else '?'}; CPU per request "
        f"start {start:.4f} ms, end {end:.4f} ms (target: end/start <= {TARGET_RATIO})",
        flush=True,
    )
    last_line = f"broker_cpu_per_req_ratio_end_vs_start={ratio}"
    print(last_line, flush=True)
    return {
        "seconds": args.seconds,
        "rate": args.rate,
        "accepted": accepted,
        "lost": lost,
        "broker_rss_mb_first": rss[0] if rss else None,
        "broker_rss_mb_last": rss[-1] if rss else None,
        "broker_rss_mb_max": max(rss) if rss else None,
        "records_held_max": max(held) if held else None,
        "broker_cpu_ms_per_req_start": round(start, 4),
        "broker_cpu_ms_per_req_end": round(end, 4),
        "broker_cpu_per_req_ratio_end_vs_start": ratio,
        "target_met": ratio <= TARGET_RATIO and lost == 0,
        "samples": [asdict(s) for s in samples],
        "last_line": last_line,
    }


if __name__ == "__main__":
    main()
