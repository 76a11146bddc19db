"""`is-telemetry up`: the whole pipeline on one machine, started in order and stopped in reverse.

broker (embedded Tansu unless --kafka) -> topics -> processors worker (+ sink + API/dashboard, since
the embedded chDB is readable only by the process that writes it) -> collector -> simulator
(backfill straight to Kafka, then a live feed through the collector). Ctrl-C/SIGTERM stops the
simulator, then the collector (flushes its producer), then the worker (finishes and acks its batch),
then the broker.

The embedded broker keeps everything in memory. If it dies (or its topics vanish), the watch loop says so
on the console, with what was lost (records the collector acknowledged that the worker had not stored
yet; ClickHouse is intact), and recovers: the collector and the worker are stopped, the broker is
started again on the same port once the old process is gone, the topics are created again, and the
collector and the worker are started again (docs/reliability.md).
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
import orjson

from is_telemetry import apiclient
from is_telemetry.broker import EmbeddedBroker, port_open
from is_telemetry.config import Settings
from is_telemetry.kafka import ensure_topics, topic_names
from is_telemetry.preflight import Probe, check_chdb, check_clickhouse, check_data_dir, check_kafka
from sinks.clickhouse import redact

log = logging.getLogger(__name__)

STATE_FILE = "stack.json"  # in the data directory while `up` runs: where its API is (read by `is-telemetry sql`)
WAIT_REMINDER_S = 30.0  # how often a wait for ClickHouse or Kafka says it is still waiting


class PreflightFailed(RuntimeError):
    """The configuration cannot work (waiting would not help): `up` ends with exit code 2 and one line."""


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """What a running `up` wrote into `data_dir` (its pid, API URL, ...), or None."""
    try:
        state = orjson.loads((data_dir / STATE_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


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
    broker_restarts_max: int = 5  # embedded broker restarts within broker_restarts_window_s before giving up
    broker_restarts_window_s: float = 600.0


class Child:
    """A child process of the stack, its output in data_dir/logs/NAME.log."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float, signalled: bool = False) -> int | None:
        if self.alive():
            if not signalled:
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
        # What the current broker has taken in and what the current worker has stored (for the loss report
        # after a broker restart): last values seen, refreshed by the watch loop.
        self.counts = {"collector_published": 0.0, "worker_stored": 0.0}
        self.backfill_acked = 0  # simulator records acknowledged by the current broker (backfill runs once)
        self.backfill_expected: dict[Any, tuple[int, int]] | None = None  # per day: what ClickHouse must hold
        self._backfill_expected: dict[Any, tuple[int, int]] | None = None
        self._backfill_checked_at = 0.0
        self.broker_restarts: list[float] = []
        self.child_restarts: list[float] = []
        self._counts_at = 0.0
        self._topics_checked_at = time.monotonic()

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
        self._start_worker()
        print(f"  worker     processors + sink -> {self.s.clickhouse_dsn}", flush=True)
        print(f"  API        {self.api_url}/  (dashboard; POST /api/sql)", flush=True)
        self._start_collector()
        print(f"  collector  {self.collector_url}  (set TTS telemetry.target to this)", flush=True)
        print(f"  logs       {self.log_dir}/", flush=True)
        print(f"  ready in {time.monotonic() - started:.1f}s", flush=True)

    # -- before anything starts: what waiting cannot mend ends `up` at once; what it can is waited for, aloud --

    def preflight(self) -> None:
        """Check the data directory, the ports, ClickHouse and Kafka. A mistake raises PreflightFailed at once; a
        server that does not answer yet is waited for (saying so on the console) until it answers or Ctrl-C."""
        self._require(check_data_dir(self.data_dir))
        other = read_state(self.data_dir)
        if other is not None and other.get("pid") != os.getpid() and _alive(other.get("pid")):
            raise PreflightFailed(
                f"another `is-telemetry up` (pid {other['pid']}, API {other.get('api_url')}) is "
                f"running on {self.data_dir}: stop it first, or pass another --data-dir"
            )
        ports = [
            ("API", "--api-port", self.s.api.host, self.s.api.port),
            ("collector", "--collector-port", self.s.collector.host, self.s.collector.port),
        ]
        if self.s.embedded_kafka:
            ports.append(("embedded broker", "--broker-port", self.s.broker.host, self.s.broker.port))
        for name, flag, host, port in ports:
            if port_open(_client_host(host), port):
                raise PreflightFailed(
                    f"port {port} for the {name} is already in use (another `is-telemetry up`?): "
                    f"stop that, or pick another port with {flag}, e.g. {flag} {port + 10}"
                )
        dsn = self.s.clickhouse_dsn
        self._wait_for("ClickHouse", lambda: check_chdb(dsn) if dsn.startswith("chdb:") else check_clickhouse(dsn))
        if not self.s.embedded_kafka:
            self._wait_for("Kafka", lambda: check_kafka(self.s.bootstrap_servers))

    def _require(self, probe: Probe) -> None:
        if not probe.ok:
            raise PreflightFailed(probe.message)

    def _wait_for(self, name: str, probe_fn: Any, every_s: float = 2.0) -> None:
        probe = probe_fn()
        if probe.ok:
            return
        if not probe.retry:
            raise PreflightFailed(probe.message)
        started = time.monotonic()
        print(
            f"  waiting: {probe.message}; trying again every {every_s:.0f}s until it answers (Ctrl-C stops)", flush=True
        )
        reminder = started + WAIT_REMINDER_S
        while not self.stop_event.wait(every_s):
            probe = probe_fn()
            if probe.ok:
                print(f"  {name} answered after {time.monotonic() - started:.0f}s", flush=True)
                return
            if not probe.retry:
                raise PreflightFailed(probe.message)
            if time.monotonic() >= reminder:
                print(f"  still waiting ({time.monotonic() - started:.0f}s): {probe.message}", flush=True)
                reminder = time.monotonic() + WAIT_REMINDER_S

    def write_state(self) -> None:
        """Say where this stack's API is, for `is-telemetry sql` (removed again on stop)."""
        state = {
            "pid": os.getpid(),
            "api_url": self.api_url,
            "collector_url": self.collector_url,
            "clickhouse": redact(self.s.clickhouse_dsn),
            "started_at": time.time(),
        }
        tmp = self.data_dir / f".{STATE_FILE}.tmp"
        tmp.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        tmp.replace(self.data_dir / STATE_FILE)

    def remove_state(self) -> None:
        state = read_state(self.data_dir)
        if state is not None and state.get("pid") == os.getpid():
            (self.data_dir / STATE_FILE).unlink(missing_ok=True)

    def _start_worker(self) -> None:
        self.children.append(
            Child(
                "worker",
                self._cli(
                    "worker",
                    "--kafka",
                    self.s.bootstrap_servers,
                    "--clickhouse",
                    self.s.clickhouse_dsn,
                    "--data-dir",
                    str(self.data_dir),
                    "--api-port",
                    str(self.s.api.port),
                ),
                self.log_dir,
                env={"IS_TELEMETRY_API__HOST": self.s.api.host, "IS_TELEMETRY_API__TOKEN": self.s.api.token},
            )
        )
        self._wait_http(self.api_url + "/healthz", "worker", 90)

    def _start_collector(self) -> None:
        self.children.append(
            Child(
                "collector",
                self._cli(
                    "collect",
                    "--kafka",
                    self.s.bootstrap_servers,
                    "--port",
                    str(self.s.collector.port),
                    "--host",
                    self.s.collector.host,
                ),
                self.log_dir,
            )
        )
        self._wait_http(self.collector_url.rsplit("/", 1)[0] + "/readyz", "collector", 60)

    def _wait_http(self, url: str, name: str, timeout_s: float) -> None:
        child = next(c for c in self.children if c.name == name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not child.alive():
                if child.process.returncode == 2:  # a configuration error: its one line says what to change
                    raise PreflightFailed(
                        f"the {name} refused to run: {_error_line(child.log_path)} (more in {child.log_path})"
                    )
                raise RuntimeError(
                    f"the {name} exited with code {child.process.returncode}; see {child.log_path}:\n"
                    + _tail(child.log_path)
                )
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the {name} was not ready at {url} within {timeout_s:.0f}s; see {child.log_path}")

    def start_simulator(self, live_only: bool = False) -> None:
        from producers import simulator

        recorded = simulator.recorded_backfill(self.data_dir, self.o.deployments, self.o.cli_installs, self.o.seed)
        backfill = self.o.days > 0 and not live_only and recorded is None

        def backfill_then_live() -> None:
            try:
                if backfill:

                    def progress(done: int, total: int) -> None:
                        self.backfill_acked = done

                    def generated(sim: Any) -> None:
                        self._backfill_expected = simulator.stored_expectation(
                            sim, self.s.processors.plausibility_limit
                        )

                    self.backfilled = simulator.backfill(
                        self.s.bootstrap_servers,
                        self.s.kafka.raw_topic,
                        self.o.deployments,
                        self.o.cli_installs,
                        self.o.days,
                        self.o.seed,
                        progress=progress,
                        generated=generated,
                    )
                    self.backfill_expected = self._backfill_expected  # recorded once ClickHouse holds all of it
                if self.stop_event.is_set():
                    return
                self.feed = simulator.LiveFeed(
                    self.collector_url, self.o.deployments, self.o.cli_installs, self.o.seed, self.stop_event
                )
                self.feed.run()
            except KeyboardInterrupt:
                pass
            except Exception as exc:  # noqa: BLE001 - the simulator failing must not take the pipeline down
                print(f"\nsimulator stopped: {exc}", flush=True)

        t = threading.Thread(target=backfill_then_live, name="simulator", daemon=True)
        t.start()
        self.sim_threads.append(t)
        if live_only:
            print("  simulator  live feed through the collector started again", flush=True)
            return
        fleet = f"{self.o.deployments} deployments + {self.o.cli_installs} CLI installs"
        if recorded is not None and self.o.days > 0:
            print(
                f"  simulator  {fleet}: history already stored from this data directory (through "
                f"{recorded.get('through')}), not sent again; live through the collector",
                flush=True,
            )
            return
        print(
            f"  simulator  {fleet}: {self.o.days} days backfilled to Kafka, then live through the collector", flush=True
        )

    def check_backfill_stored(self) -> None:
        """Once the worker has committed past the backfill's records, remember (in the data directory) that this
        fleet's history is stored: the next `up` on this data directory does not send it again."""
        from producers import simulator

        expected = self.backfill_expected
        if not expected:
            return
        # constant SQL (no value is spliced in); the days outside the backfill are ignored below
        rows = self.query("SELECT day, count() FROM snapshots FINAL GROUP BY day", timeout_s=5)
        rejected = self.query("SELECT day, count() FROM rejections FINAL GROUP BY day", timeout_s=5)
        uid_days = {str(d): int(n) for d, n in rows}
        bad = {str(d): int(n) for d, n in rejected}
        if any(uid_days.get(str(d), 0) < u or bad.get(str(d), 0) < r for d, (u, r) in expected.items()):
            return
        self.backfill_expected = None
        simulator.record_backfill(
            self.data_dir, self.o.deployments, self.o.cli_installs, self.o.seed, self.o.days, self.backfilled
        )
        log.info("backfill of %d records stored; recorded in %s", self.backfilled, self.data_dir)

    # -- watch ------------------------------------------------------------------------------------------------

    def query(self, sql: str, timeout_s: float = 10) -> list[list[Any]]:
        return apiclient.sql(self.api_url, sql, self.s.api.token, timeout_s)[1]

    def stored_counts(self) -> tuple[int, int, int]:
        """(UID-days, rejected bodies, days) as stored after duplicates collapse (FINAL): they only go up."""
        row = self.query(
            "SELECT (SELECT count() FROM snapshots FINAL), (SELECT count() FROM rejections FINAL), "
            "(SELECT count() FROM daily_rollup FINAL)",
            timeout_s=5,
        )[0]
        return int(row[0]), int(row[1]), int(row[2])

    def progress_line(self, stored: tuple[int, int, int]) -> str:
        clickhouse = f"ClickHouse: {stored[0]} snapshots (UID-days), {stored[1]} rejected, {stored[2]} days"
        if not self.o.simulate:
            return clickhouse
        live = f"live {self.feed.posted}" if self.feed is not None else "live -"
        return f"backfill {self.backfilled}  {live}  | {clickhouse}"

    def summary(self) -> str:
        rows = self.query(
            "SELECT day, deployments, cli_installs, gateways, end_devices, active_last_day, active_last_week, "
            "active_last_month, applications, users_standard + users_admin, organizations "
            "FROM fleet_daily ORDER BY day DESC LIMIT 1",
            timeout_s=5,
        )
        if not rows:
            return "today: no data yet"
        d = rows[0]
        return (
            f"{d[0]}: {d[1]} deployments, {d[2]} CLI installs, {d[3]} gateways, {d[4]} end devices "
            f"(active day/week/month {d[5]}/{d[6]}/{d[7]}), {d[8]} applications, {d[9]} users, {d[10]} organizations"
        )

    def watch(self) -> None:
        tty = sys.stdout.isatty()
        first_row_at: float | None = None
        started = time.monotonic()
        next_summary = time.monotonic() + 5
        while not self.stop_event.wait(1.0):
            lost = self.broker_lost()
            if lost:
                self.recover_broker(lost)
                continue
            for c in list(self.children):
                if not c.alive():
                    self.restart_child(c)
            self.poll_counts()
            if self.backfill_expected and time.monotonic() - self._backfill_checked_at >= 2:
                self._backfill_checked_at = time.monotonic()
                try:
                    self.check_backfill_stored()
                except apiclient.ApiError as exc:
                    log.debug("backfill check: %s", exc)
            try:
                stored = self.stored_counts()
                line = self.progress_line(stored)
                if first_row_at is None and stored[0] > 0:
                    first_row_at = time.monotonic()
                    print(f"\nfirst rows in ClickHouse {first_row_at - started:.1f}s after start-up", flush=True)
                if tty:
                    print("\r" + line[:160].ljust(160), end="", flush=True)
                if time.monotonic() >= next_summary:
                    print(("\n" if tty else "") + self.summary() + ("" if tty else f"\n  {line}"), flush=True)
                    next_summary = time.monotonic() + self.o.summary_every_s
            except apiclient.ApiError as exc:
                log.debug("progress query failed: %s", exc)

    def restart_child(self, child: Child) -> None:
        """A worker or collector that exited on its own is started again (the broker keeps what it had not
        stored: a worker resumes from its committed offsets); more than broker_restarts_max restarts within the
        window end `up` with the child's last log lines."""
        now = time.time()
        self.child_restarts = [t for t in self.child_restarts if now - t < self.o.broker_restarts_window_s] + [now]
        status = _exit_status(child.process.returncode)
        child.stop(1)
        self.children.remove(child)
        if child.process.returncode == 2:  # a configuration error: starting it again cannot help
            raise RuntimeError(
                f"the {child.name} refused to run: {_error_line(child.log_path)} (more in {child.log_path})"
            )
        if len(self.child_restarts) > self.o.broker_restarts_max:
            raise RuntimeError(
                f"the {child.name} exited with {status} ({len(self.child_restarts)} exits within "
                f"{self.o.broker_restarts_window_s:.0f}s): giving up; see {child.log_path}:\n" + _tail(child.log_path)
            )
        print(
            f"\n!! the {child.name} exited with {status}; see {child.log_path}. Starting it again: records the "
            f"broker holds are not lost{' (the worker resumes from its committed offsets)' if child.name == 'worker' else ''}.",
            flush=True,
        )
        if child.name == "worker":
            self._start_worker()
        else:
            self._start_collector()
        self.children.sort(key=lambda c: c.name != "worker")  # stop order stays: collector, then worker
        print(f"   {child.name} running again", flush=True)

    # -- the embedded broker: detect a restart, report what was lost, recover --------------------------------

    def broker_lost(self) -> str | None:
        """Why the embedded broker's state is gone (its process exited, or its topics vanished), else None."""
        b = self.broker
        if b is None:  # external Kafka: durable; its outages are the operator's, children reconnect by themselves
            return None
        p = b.process
        if p is None or p.poll() is not None:
            code = None if p is None else p.returncode
            return f"the embedded broker (pid {p.pid if p else '?'}) exited with {_exit_status(code)}"
        now = time.monotonic()
        child_died = any(not c.alive() for c in self.children)
        if child_died or now - self._topics_checked_at >= 15:
            self._topics_checked_at = now
            missing = _missing_topics(self.s)
            if missing:
                return f"the embedded broker lost its topics ({', '.join(missing)} no longer exist)"
        return None

    def poll_counts(self, every_s: float = 2.0, force: bool = False) -> None:
        """Refresh the collector's published and the worker's stored counters (best effort, short timeouts)."""
        if not force and time.monotonic() - self._counts_at < every_s:
            return
        self._counts_at = time.monotonic()
        collector = apiclient.metrics(self.collector_url.rsplit("/", 1)[0] + "/metrics")
        if collector is not None:
            self.counts["collector_published"] = collector.get("collector_records_published_total", 0.0)
        worker = apiclient.metrics(self.api_url + "/metrics")
        if worker is not None:
            # records acknowledged once their batch reached ClickHouse
            self.counts["worker_stored"] = worker.get("is_telemetry_processor_stored_total", 0.0)

    def recover_broker(self, why: str) -> None:
        """Report the loss of the embedded broker's memory and bring the pipeline back on a new broker."""
        assert self.broker is not None
        started = time.monotonic()
        now = time.time()
        self.broker_restarts = [t for t in self.broker_restarts if now - t < self.o.broker_restarts_window_s] + [now]
        self.poll_counts(force=True)  # the collector (and the worker, if alive) still answer
        published = int(self.counts["collector_published"])
        backfill = int(self.backfill_acked)
        stored = int(self.counts["worker_stored"])
        lost = max(0, published + backfill - stored)
        try:
            ch = self.query(
                "SELECT (SELECT count() FROM snapshots), (SELECT count() FROM daily_rollup FINAL)", timeout_s=3
            )[0]
            kept = f"{ch[0]} snapshot rows over {ch[1]} day{'' if ch[1] == 1 else 's'}"
        except (apiclient.ApiError, KeyError, IndexError, ValueError):
            kept = "every row it had stored"
        sources = f"the collector acknowledged {published}"
        if backfill:
            sources += f", the simulator backfilled {backfill}"
        print(
            f"\n!! BROKER LOST: {why}.\n"
            f"!! Its memory storage is gone: every topic, offset and consumer group.\n"
            f"!! Lost: about {lost} records acknowledged to their senders but not yet stored by the worker "
            f"({sources} since the broker started; the worker stored {stored}). Senders got 202 and will not "
            f"re-send them (TTS sends again the next day).\n"
            f"!! ClickHouse is intact ({self.s.clickhouse_dsn}): {kept}.\n"
            f"!! Recovering: stopping the worker and the collector, restarting the broker on "
            f"{self.broker.bootstrap_servers}, recreating the topics, restarting the collector and the worker.",
            flush=True,
        )
        if len(self.broker_restarts) > self.o.broker_restarts_max:
            raise RuntimeError(
                f"the embedded broker was lost {len(self.broker_restarts)} times within "
                f"{self.o.broker_restarts_window_s:.0f}s: giving up; see {self.log_dir / 'broker.log'}"
            )
        # Stop the broker's clients before a new broker listens: on a fresh broker they would auto-create the topics
        # (Tansu does, with its own partition count) before ensure_topics() creates them as configured. The worker
        # first, with a short grace (it finishes a ClickHouse write in flight; leaving its group on a dead broker
        # would hang), while the collector still answers 503 + Retry-After; then the collector.
        by_name = {c.name: c for c in self.children}
        for name, grace_s in (("worker", 6.0), ("collector", 20.0)):
            c = by_name.get(name)
            if c is not None:
                code = c.stop(grace_s)
                print(f"   {name} stopped ({_exit_status(code)})", flush=True)
        self.children = []
        self.broker.stop()  # exited, or (topics vanished) stop it: the old PID must be gone before the port is reused
        self.broker = _start_broker_again(self.s, self.log_dir / "broker.log", self.stop_event)
        if self.broker is None:
            return  # stopping meanwhile
        ensure_topics(self.s)
        wrong = _wrong_partitions(self.s)
        if wrong:
            print(f"   warning: topics with an unexpected partition count: {wrong}", flush=True)
        pid = self.broker.process.pid if self.broker.process is not None else "?"
        print(
            f"   broker     kafka://{self.broker.bootstrap_servers} again (pid {pid}); "
            f"topics {', '.join(topic_names(self.s))} created",
            flush=True,
        )
        self.counts = {"collector_published": 0.0, "worker_stored": 0.0}
        self.backfill_acked = 0
        self.backfill_expected = None  # not all of it stored: the next start on this data directory sends it again
        self._topics_checked_at = time.monotonic()
        if self.stop_event.is_set():
            return  # Ctrl-C meanwhile: stop() stops the new broker
        self._start_collector()  # first: records it accepts wait in the topic for the worker
        print(f"   collector  {self.collector_url} running again", flush=True)
        self._start_worker()
        print(f"   worker     running again; API {self.api_url}/", flush=True)
        self.children.sort(key=lambda c: c.name != "worker")  # stop order stays: collector, then worker
        if self.o.simulate and not any(t.is_alive() for t in self.sim_threads) and not self.stop_event.is_set():
            self.start_simulator(live_only=True)
        print(
            f"!! RECOVERED from the broker loss in {time.monotonic() - started:.1f}s "
            f"(broker restarts so far: {len(self.broker_restarts)})",
            flush=True,
        )

    # -- stop -------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()
        if not (self.sim_threads or self.children or self.broker):
            return  # nothing had been started
        if self.sim_threads:
            print("\nstopping: simulator", flush=True)
        else:
            print("", flush=True)
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
        self.remove_state()
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
            self.preflight()
            if self.stop_event.is_set():
                return 0
            self.start()
            self.write_state()
            if self.o.simulate:
                self.start_simulator()
            print("Ctrl-C stops everything, flushing what is in flight.\n", flush=True)
            self.watch()
        except PreflightFailed as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            code = 2
        except Exception as exc:  # noqa: BLE001 - the outermost boundary: one line, then everything is stopped
            print(f"\nerror: {exc}", file=sys.stderr, flush=True)
            code = 1
        finally:
            self.stop()
            for sig, h in previous.items():
                signal.signal(sig, h)
        return code


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exit_status(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _admin(settings: Settings) -> Any:
    from kafka import KafkaAdminClient

    # kafka-python 3 has no api_version_auto_timeout_ms for the admin client (it raised KafkaConfigurationError,
    # which the callers took for "not answering": a broker that lost its topics went unnoticed).
    return KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id="is-telemetry-watch", request_timeout_ms=3000
    )


def _missing_topics(settings: Settings) -> list[str]:
    """The pipeline's topics the broker no longer has ([] if it has them all, or does not answer)."""
    from kafka.errors import KafkaError

    try:
        admin = _admin(settings)
    except KafkaError:
        return []  # not answering: a dead process is detected by its exit, a hang is not a restart
    try:
        existing = set(admin.list_topics())
    except KafkaError:
        return []
    finally:
        admin.close()
    return [t for t in topic_names(settings) if t not in existing]


def _wrong_partitions(settings: Settings) -> dict[str, int]:
    from kafka.errors import KafkaError

    try:
        admin = _admin(settings)
        try:
            described = admin.describe_topics(topic_names(settings))
        finally:
            admin.close()
    except KafkaError:
        return {}
    return {t["name"]: len(t["partitions"]) for t in described if len(t["partitions"]) != settings.kafka.partitions}


def _start_broker_again(
    settings: Settings, log_file: Path, stop: threading.Event, timeout_s: float = 30.0
) -> EmbeddedBroker | None:
    """A new embedded broker on the same host:port (retried while the old socket is still held)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if stop.is_set():
            return None
        try:
            return EmbeddedBroker(settings.broker.host, settings.broker.port, log_file).start()
        except RuntimeError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded broker could not be started again: {exc}") from exc
            time.sleep(0.5)


def _client_host(bind: str) -> str:
    return "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind


def _error_line(path: Path) -> str:
    """The last `error: ...` line a child wrote (what it refused), else its last line."""
    lines = _tail(path, 200).splitlines()
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return lines[-1] if lines else "(no output)"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
