"""`is-telemetry up`: the whole pipeline on one machine, started in order and stopped in reverse.

broker (embedded Tansu unless --kafka) -> topics -> processors worker (+ sink + API/dashboard, since
the embedded chDB is readable only by the process that writes it) -> collector -> simulator
(backfill straight to Kafka, then a live feed through the collector). Ctrl-C/SIGTERM stops the
simulator, then the collector (flushes its producer), then the worker (finishes and acks its batch),
then the broker.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from is_telemetry.broker import EmbeddedBroker, port_open
from is_telemetry.config import Settings
from is_telemetry.kafka import ensure_topics

log = logging.getLogger(__name__)


@dataclass
class StackOptions:
    config: Path | None = None
    simulate: bool = True
    deployments: int = 300
    cli_installs: int = 100
    days: int = 30
    seed: int = 1
    log_level: str = "warning"
    summary_every_s: float = 15.0


class Child:
    """A child process of the stack, its output in data_dir/logs/NAME.log."""

    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float) -> int | None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} did not stop within {timeout_s:.0f}s: killing it", flush=True)
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class Stack:
    def __init__(self, settings: Settings, options: StackOptions) -> None:
        self.s = settings
        self.o = options
        self.data_dir = settings.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.broker: EmbeddedBroker | None = None
        self.children: list[Child] = []
        self.stop_event = threading.Event()
        self.sim_threads: list[threading.Thread] = []
        self.backfilled = 0
        self.feed: Any = None
        self.api_url = f"http://{_client_host(settings.api.host)}:{settings.api.port}"
        self.collector_url = f"http://{_client_host(settings.collector.host)}:{settings.collector.port}/collect"

    # -- start ------------------------------------------------------------------------------------------------

    def _cli(self, *args: str) -> list[str]:
        base = [sys.executable, "-m", "is_telemetry", *args, "--log-level", self.o.log_level]
        if self.o.config:
            base += ["--config", str(self.o.config)]
        return base

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if self.s.embedded_kafka:
            self.broker = EmbeddedBroker(self.s.broker.host, self.s.broker.port, self.log_dir / "broker.log").start()
            print(f"  broker     kafka://{self.broker.bootstrap_servers}  (embedded Tansu, memory storage)", flush=True)
        else:
            print(f"  kafka      {self.s.bootstrap_servers}  (external)", flush=True)
        ensure_topics(self.s)
        for name, port in (("API", self.s.api.port), ("collector", self.s.collector.port)):
            if port_open(_client_host(self.s.api.host), port):
                raise RuntimeError(f"port {port} for the {name} is already in use: pick another (--{name.lower()}-port)")
        kafka = self.s.bootstrap_servers
        self.children.append(Child("worker", self._cli(
            "worker", "--kafka", kafka, "--clickhouse", self.s.clickhouse_dsn, "--data-dir", str(self.data_dir),
            "--api-port", str(self.s.api.port)), self.log_dir))
        self._wait_http(self.api_url + "/healthz", "worker", 90)
        print(f"  worker     processors + sink -> {self.s.clickhouse_dsn}", flush=True)
        print(f"  API        {self.api_url}/  (dashboard; POST /api/sql)", flush=True)
        self.children.append(Child("collector", self._cli(
            "collect", "--kafka", kafka, "--port", str(self.s.collector.port), "--host", self.s.collector.host), self.log_dir))
        self._wait_http(self.collector_url.rsplit("/", 1)[0] + "/readyz", "collector", 60)
        print(f"  collector  {self.collector_url}  (set TTS telemetry.target to this)", flush=True)
        print(f"  logs       {self.log_dir}/", flush=True)
        print(f"  ready in {time.monotonic() - started:.1f}s", flush=True)

    def _wait_http(self, url: str, name: str, timeout_s: float) -> None:
        child = next(c for c in self.children if c.name == name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeError(f"the {name} exited with code {child.process.returncode}; see {child.log_path}:\n"
                                   + _tail(child.log_path))
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the {name} was not ready at {url} within {timeout_s:.0f}s; see {child.log_path}")

    def start_simulator(self) -> None:
        from producers import simulator

        def backfill_then_live() -> None:
            try:
                if self.o.days > 0:
                    self.backfilled = simulator.backfill(self.s.bootstrap_servers, self.s.kafka.raw_topic,
                                                         self.o.deployments, self.o.cli_installs, self.o.days, self.o.seed)
                if self.stop_event.is_set():
                    return
                self.feed = simulator.LiveFeed(self.collector_url, self.o.deployments, self.o.cli_installs, self.o.seed,
                                               self.stop_event)
                self.feed.run()
            except KeyboardInterrupt:
                pass
            except Exception as exc:  # the simulator failing must not take the pipeline down
                print(f"\nsimulator stopped: {exc}", flush=True)

        t = threading.Thread(target=backfill_then_live, name="simulator", daemon=True)
        t.start()
        self.sim_threads.append(t)
        print(f"  simulator  {self.o.deployments} deployments + {self.o.cli_installs} CLI installs: "
              f"{self.o.days} days backfilled to Kafka, then live through the collector", flush=True)

    # -- watch ------------------------------------------------------------------------------------------------

    def query(self, sql: str) -> list[list[Any]]:
        r = httpx.post(self.api_url + "/api/sql", content=sql.encode(), timeout=10,
                       headers={"authorization": f"Bearer {self.s.api.token}"} if self.s.api.token else {})
        r.raise_for_status()
        return list(r.json()["rows"])

    def progress_line(self) -> str:
        stored = self.query("SELECT (SELECT count() FROM snapshots), (SELECT count() FROM rejections), "
                            "(SELECT count() FROM daily_rollup FINAL)")[0]
        live = f"live {self.feed.posted}" if self.feed is not None else "live -"
        return (f"backfill {self.backfilled}  {live}  | ClickHouse: {stored[0]} snapshot rows, {stored[1]} rejected, "
                f"{stored[2]} days")

    def summary(self) -> str:
        rows = self.query("SELECT day, deployments, cli_installs, gateways, end_devices, active_last_day, active_last_week, "
                          "active_last_month, applications, users_standard + users_admin, organizations "
                          "FROM fleet_daily ORDER BY day DESC LIMIT 1")
        if not rows:
            return "today: no data yet"
        d = rows[0]
        return (f"{d[0]}: {d[1]} deployments, {d[2]} CLI installs, {d[3]} gateways, {d[4]} end devices "
                f"(active day/week/month {d[5]}/{d[6]}/{d[7]}), {d[8]} applications, {d[9]} users, {d[10]} organizations")

    def watch(self) -> None:
        tty = sys.stdout.isatty()
        first_row_at: float | None = None
        started = time.monotonic()
        next_summary = time.monotonic() + 5
        while not self.stop_event.wait(1.0):
            for c in self.children:
                if not c.alive():
                    raise RuntimeError(f"the {c.name} exited with code {c.process.returncode}; see {c.log_path}:\n"
                                       + _tail(c.log_path))
            try:
                line = self.progress_line()
                if first_row_at is None and not line.split("ClickHouse: ")[1].startswith("0 snapshot"):
                    first_row_at = time.monotonic()
                    print(f"\nfirst rows in ClickHouse {first_row_at - started:.1f}s after start-up", flush=True)
                if tty:
                    print("\r" + line[:160].ljust(160), end="", flush=True)
                if time.monotonic() >= next_summary:
                    print(("\n" if tty else "") + self.summary() + ("" if tty else f"\n  {line}"), flush=True)
                    next_summary = time.monotonic() + self.o.summary_every_s
            except httpx.HTTPError as exc:
                log.debug("progress query failed: %s", exc)

    # -- stop -------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()
        print("\nstopping: simulator", flush=True)
        for t in self.sim_threads:
            t.join(15)
        for c in reversed(self.children):
            print(f"stopping: {c.name}", flush=True)
            code = c.stop(60 if c.name == "worker" else 20)
            if code not in (0, None, -signal.SIGTERM):
                print(f"  {c.name} exited with {code}; see {c.log_path}", flush=True)
        if self.broker is not None:
            print("stopping: broker (embedded: its topics are gone; ClickHouse keeps every stored row)", flush=True)
            self.broker.stop()
        print("stopped", flush=True)

    def run(self) -> int:
        handler_fired = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            handler_fired.set()
            self.stop_event.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            print(f"is-telemetry up (data in {self.data_dir})", flush=True)
            self.start()
            if self.o.simulate:
                self.start_simulator()
            print("Ctrl-C stops everything, flushing what is in flight.\n", flush=True)
            self.watch()
        except Exception as exc:
            print(f"\nerror: {exc}", file=sys.stderr, flush=True)
            code = 1
        finally:
            self.stop()
            for sig, h in previous.items():
                signal.signal(sig, h)
        return code


def _client_host(bind: str) -> str:
    return "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
