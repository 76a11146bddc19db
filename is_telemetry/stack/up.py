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
import sys
import threading
import time

from is_telemetry import apiclient
from is_telemetry.broker import EmbeddedBroker
from is_telemetry.config import Settings, client_host
from is_telemetry.kafka import ensure_topics
from is_telemetry.stack.broker_recovery import BrokerWatch, LossAccount, kept_in_clickhouse, restart_broker
from is_telemetry.stack.console import ProgressConsole, progress_line, summary_line
from is_telemetry.stack.options import StackOptions
from is_telemetry.stack.preflight import PreflightFailed, preflight
from is_telemetry.stack.readings import Readings
from is_telemetry.stack.simulation import Simulation
from is_telemetry.stack.state import remove_state, write_state
from is_telemetry.stack.supervisor import Children, RestartWindow
from sinks.clickhouse import redact

log = logging.getLogger(__name__)


class Stack:
    def __init__(self, settings: Settings, options: StackOptions) -> None:
        self.s = settings
        self.o = options
        self.data_dir = settings.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.broker: EmbeddedBroker | None = None
        self.stop_event = threading.Event()
        self.api_url = f"http://{client_host(settings.api.host)}:{settings.api.port}"
        self.collector_url = f"http://{client_host(settings.collector.host)}:{settings.collector.port}/collect"
        self.children = Children(settings, options, self.data_dir, self.api_url, self.collector_url)
        self.readings = Readings(self.api_url, self.collector_url, settings.api.token)
        self.sim = Simulation(settings, options, self.data_dir, self.collector_url, self.stop_event)
        self.watcher = BrokerWatch(settings)
        self.losses = LossAccount()
        self.broker_restarts = RestartWindow(options.broker_restarts_window_s)

    # -- start ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if self.s.embedded_kafka:
            self.broker = EmbeddedBroker(self.s.broker.host, self.s.broker.port, self.log_dir / "broker.log").start()
            print(f"  broker     kafka://{self.broker.bootstrap_servers}  (embedded Tansu, memory storage)", flush=True)
        else:
            print(f"  kafka      {self.s.bootstrap_servers}  (external)", flush=True)
        ensure_topics(self.s)
        self.children.start_worker()
        print(f"  worker     processors + sink -> {self.s.clickhouse_dsn}", flush=True)
        print(f"  API        {self.api_url}/  (dashboard; POST /api/sql)", flush=True)
        self.children.start_collector()
        print(f"  collector  {self.collector_url}  (set TTS telemetry.target to this)", flush=True)
        print(f"  logs       {self.log_dir}/", flush=True)
        print(f"  ready in {time.monotonic() - started:.1f}s", flush=True)

    def write_state(self) -> None:
        """Say where this stack's API is, for `is-telemetry sql` (removed again on stop)."""
        write_state(
            self.data_dir,
            {
                "pid": os.getpid(),
                "api_url": self.api_url,
                "collector_url": self.collector_url,
                "clickhouse": redact(self.s.clickhouse_dsn),
                "started_at": time.time(),
            },
        )

    # -- watch ------------------------------------------------------------------------------------------------

    def watch(self) -> None:
        console = ProgressConsole(self.o.summary_every_s)
        while not self.stop_event.wait(1.0):
            lost = self.watcher.lost(self.broker, self.children.any_exited())
            if lost:
                self.recover_broker(lost)
                continue
            self.children.restart_exited()
            self.losses.poll(self.readings)
            self.sim.check_backfill_stored(self.readings)
            try:
                stored = self.readings.stored_counts()
                line = progress_line(stored, self.o.simulate, self.sim.backfilled, self.sim.live_posted)
                console.show(stored, line, lambda: summary_line(self.readings.latest_fleet_day()))
            except apiclient.ApiError as exc:
                log.debug("progress query failed: %s", exc)

    def recover_broker(self, why: str) -> None:
        """Report the loss of the embedded broker's memory and bring the pipeline back on a new broker."""
        assert self.broker is not None
        started = time.monotonic()
        restarts = self.broker_restarts.note()
        self.losses.poll(self.readings, force=True)  # the collector (and the worker, if alive) still answer
        kept = kept_in_clickhouse(self.readings)
        print(self.losses.report(why, self.sim.backfill_acked, kept, self.s, self.broker.bootstrap_servers), flush=True)
        if restarts > self.o.broker_restarts_max:
            raise RuntimeError(
                f"the embedded broker was lost {restarts} times within "
                f"{self.o.broker_restarts_window_s:.0f}s: giving up; see {self.log_dir / 'broker.log'}"
            )
        self.children.stop_before_broker_restart()
        self.broker = restart_broker(self.s, self.broker, self.log_dir / "broker.log", self.stop_event)
        if self.broker is None:
            return  # stopping meanwhile
        self.losses.reset()
        self.sim.broker_lost()
        self.watcher.restarted()
        if self.stop_event.is_set():
            return  # Ctrl-C meanwhile: stop() stops the new broker
        self.children.start_collector()  # first: records it accepts wait in the topic for the worker
        print(f"   collector  {self.collector_url} running again", flush=True)
        self.children.start_worker()
        print(f"   worker     running again; API {self.api_url}/", flush=True)
        self.children.keep_stop_order()
        if self.o.simulate and not self.sim.running() and not self.stop_event.is_set():
            self.sim.start(live_only=True)
        print(
            f"!! RECOVERED from the broker loss in {time.monotonic() - started:.1f}s "
            f"(broker restarts so far: {restarts})",
            flush=True,
        )

    # -- stop -------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()
        if not (self.sim.threads or self.children.running or self.broker):
            return  # nothing had been started
        if self.sim.threads:
            print("\nstopping: simulator", flush=True)
        else:
            print("", flush=True)
        self.sim.join(15)
        self.children.stop_all()
        if self.broker is not None:
            print("stopping: broker (embedded: its topics are gone; ClickHouse keeps every stored row)", flush=True)
            self.broker.stop()
        remove_state(self.data_dir)
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
            preflight(self.s, self.data_dir, self.stop_event)
            if self.stop_event.is_set():
                return 0
            self.start()
            self.write_state()
            if self.o.simulate:
                self.sim.start()
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
