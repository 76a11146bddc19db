"""`is-telemetry up`: the whole pipeline on one machine, started in order and stopped in reverse.

broker (embedded Tansu unless --kafka) -> topics -> processors worker (+ sink + API/dashboard, since
the embedded chDB is readable only by the process that writes it) -> collector -> simulator
(backfill straight to Kafka, then a live feed through the collector). Ctrl-C, SIGTERM or SIGHUP (the
terminal closed) stops the simulator, then the collector (flushes its producer), then, with the embedded
broker, waits for the worker to store what the broker holds, then stops the worker (finishes and acks its
batch), then the broker. A console whose reader is gone (EPIPE, EIO) does not cut that short
(is_telemetry/stack/output.py). If `up` itself dies at once (kill -9, the OOM killer), its children stop by
themselves in the same order (is_telemetry/lifeline.py), and the next `up` on the data directory waits for
them (is_telemetry/stack/state.py).

The embedded broker keeps everything in memory. If it dies (or its topics vanish), the watch loop says so
on the console, with what was lost (records the collector acknowledged that the worker had not stored
yet, from the loss ledger: core/ledger.py; ClickHouse is intact), and recovers: the collector and the
worker are stopped, the broker is started again on the same port once the old process is gone, the topics are
created again, and the collector and the worker are started again (docs/reliability.md). So that it holds a bounded
amount meanwhile, the watch loop moves the stack to a new generation of the raw topic once the current one holds
more than broker.max_records, and deletes the old one once it is stored (is_telemetry/stack/rotation.py).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime

from core import ledger
from core.config import Settings, client_host
from core.kafka import ensure_topics
from is_telemetry import apiclient
from is_telemetry.broker import EmbeddedBroker
from is_telemetry.lifeline import Lifelines
from is_telemetry.stack.broker_recovery import BrokerWatch, kept_in_clickhouse, loss_report, restart_broker
from is_telemetry.stack.console import ProgressConsole, progress_line, summary_line
from is_telemetry.stack.options import StackOptions
from is_telemetry.stack.output import say
from is_telemetry.stack.preflight import PreflightFailed, preflight
from is_telemetry.stack.readings import Readings
from is_telemetry.stack.rotation import Rotation
from is_telemetry.stack.simulation import Simulation
from is_telemetry.stack.state import process_started, remove_state, this_process, write_state
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
        self.hurry = threading.Event()  # a second Ctrl-C: stop without waiting for the worker to store the rest
        self.lifelines = Lifelines(["broker", "worker", "collector"])  # in start order: a later one stops first
        self.api_url = f"http://{client_host(settings.api.host)}:{settings.api.port}"
        self.collector_url = f"http://{client_host(settings.collector.host)}:{settings.collector.port}/collect"
        self.children = Children(settings, options, self.data_dir, self.api_url, self.collector_url, self.lifelines)
        self.readings = Readings(self.api_url, self.collector_url, settings.api.token)
        self.rotation = Rotation(settings, self.children, self.readings.collector_base + "/metrics")
        self.rotation.on_change = self.write_state
        self.sim = Simulation(
            settings, options, self.data_dir, self.collector_url, self.stop_event, lambda: self.rotation.current.raw
        )
        self.watcher = BrokerWatch(settings, self.rotation.topics if settings.embedded_kafka else lambda: [])
        self.broker_restarts = RestartWindow(options.broker_restarts_window_s)
        self.started_at = time.time()
        self.started = time.monotonic()  # start-up: when the first component starts (reset by start())
        self._ready = False  # every component answers: the state file says where
        self._recorded: tuple[dict[str, dict[str, int | None]], bool, list[str]] | None = None  # the state file's
        self.children.on_started = self.write_state

    # -- start ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started = started = time.monotonic()
        if self.s.embedded_kafka:
            ledger.remove(self.children.ledger_dir)  # of an earlier broker: its topics are gone
            self.broker = EmbeddedBroker(
                self.s.broker.host, self.s.broker.port, self.log_dir / "broker.log", self.lifelines.read_fd("broker")
            ).start()
            self.write_state()
            say(f"  broker     kafka://{self.broker.bootstrap_servers}  (embedded Tansu, memory storage)")
        else:
            say(f"  kafka      {self.s.bootstrap_servers}  (external)")
        ensure_topics(self.s)
        self.children.start_worker()
        say(f"  worker     processors + sink -> {self.s.clickhouse_dsn}")
        say(f"  API        {self.api_url}/  (dashboard; POST /api/sql)")
        self.children.start_collector()
        say(f"  collector  {self.collector_url}  (set TTS telemetry.target to this)")
        say(f"  logs       {self.log_dir}/")
        say(f"  ready in {time.monotonic() - started:.1f}s")

    def write_state(self, ready: bool = False) -> None:
        """Say which processes this stack runs (for the next `up`, should this one be killed) and, once it is
        `ready`, where it answers (for `is-telemetry sql` and `status`): written before anything starts, again
        whenever a child (re)starts, and removed on stop."""
        children = self.children.pids()
        if self.broker is not None and self.broker.process is not None and self.broker.process.poll() is None:
            pid = self.broker.process.pid
            children["broker"] = {"pid": pid, "started": process_started(pid)}
        self._ready = self._ready or ready
        where = {"api_url": self.api_url, "collector_url": self.collector_url} if self._ready else {}
        topics = self.rotation.raw_topics() if self.s.embedded_kafka else [self.s.kafka.raw_topic]
        if (children, self._ready, topics) == self._recorded:
            return
        self._recorded = (children, self._ready, topics)
        write_state(
            self.data_dir,
            {
                **this_process(),
                **where,
                "kafka": self.s.bootstrap_servers,
                # the generation the collector publishes to, and every one that holds records (core/generations.py)
                "raw_topic": topics[-1],
                "raw_topics": topics,
                "clickhouse": redact(self.s.clickhouse_dsn),
                "started_at": self.started_at,
                "children": children,
            },
        )

    # -- watch ------------------------------------------------------------------------------------------------

    def watch(self) -> None:
        console = ProgressConsole(self.o.summary_every_s, self.started)
        while not self.stop_event.wait(1.0):
            lost = self.watcher.lost(self.broker, self.children.any_exited())
            if lost:
                self.recover_broker(lost)
                continue
            self.children.restart_exited()
            if self.s.embedded_kafka:
                self.rotation.tick(may_start=not self.sim.backfilling)
            self.write_state()
            self.sim.check_backfill_stored(self.readings)
            if console.first_row_at is None:
                console.first_rows(self.readings.worker_stored())
            console.worker(self.readings.worker_partitions())
            try:
                stored = self.readings.stored_counts()
                line = progress_line(stored, self.o.simulate, self.sim.backfilled, self.sim.live_posted)
                console.show(line, self.summary)
            except apiclient.ApiError as exc:
                log.debug("progress query failed: %s", exc)

    def summary(self) -> str | None:
        today = datetime.now(UTC).date().isoformat()
        return summary_line(self.readings.summary_day(), today, self.sim.history_stored)

    def recover_broker(self, why: str) -> None:
        """Report the loss of the embedded broker's memory and bring the pipeline back on a new broker."""
        assert self.broker is not None
        started = time.monotonic()
        restarts = self.broker_restarts.note()
        kept = kept_in_clickhouse(self.readings)  # while the worker (the API) still answers
        history_missing = self.sim.history_missing(self.readings)
        say(f"!! BROKER LOST: {why}.")
        if restarts > self.o.broker_restarts_max:
            raise RuntimeError(
                f"the embedded broker was lost {restarts} times within "
                f"{self.o.broker_restarts_window_s:.0f}s: giving up; see {self.log_dir / 'broker.log'}"
            )
        self.children.stop_before_broker_restart()
        # after the worker stopped: what it stored until then is in the ledger
        lost = ledger.loss(self.children.ledger_dir, self.rotation.raw_topics())
        say(loss_report(lost, history_missing, kept, self.s, self.broker.bootstrap_servers))
        self.broker = restart_broker(self.s, self.broker, self.log_dir / "broker.log", self.stop_event)
        if self.broker is None:
            return  # stopping meanwhile
        ledger.remove(self.children.ledger_dir)
        self.rotation.reset()
        self.sim.broker_lost()
        self.watcher.restarted()
        if self.stop_event.is_set():
            return  # Ctrl-C meanwhile: stop() stops the new broker
        self.children.start_collector()  # first: records it accepts wait in the topic for the worker
        say(f"   collector  {self.collector_url} running again")
        self.children.start_worker()
        say(f"   worker     running again; API {self.api_url}/")
        self.children.keep_stop_order()
        if self.o.simulate and not self.sim.running() and not self.stop_event.is_set():
            self.sim.start(live_only=True)
        say(
            f"!! RECOVERED from the broker loss in {time.monotonic() - started:.1f}s "
            f"(broker restarts so far: {restarts})"
        )

    # -- stop -------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()
        if not (self.sim.threads or self.children.running or self.broker):
            remove_state(self.data_dir)
            self.lifelines.close()
            return  # nothing had been started
        say("")
        if self.sim.threads:
            say("stopping: simulator")
        self.sim.join(15)
        self.children.stop_all(self.hurry)
        if self.broker is not None:
            say("stopping: broker (embedded: its topics are gone; ClickHouse keeps every stored row)")
            self.broker.stop()
            ledger.remove(self.children.ledger_dir)
        if self.children.control is not None:
            self.children.control.close()
        remove_state(self.data_dir)
        self.lifelines.close()
        say("stopped")

    def run(self) -> int:
        def on_signal(signum: int, frame: object) -> None:
            if self.stop_event.is_set():
                self.hurry.set()  # a second Ctrl-C: no more waiting for the worker to store what is left
            self.stop_event.set()

        stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal was closed
        previous = {sig: signal.signal(sig, on_signal) for sig in stop_signals}
        code = 0
        try:
            say(f"is-telemetry up (data in {self.data_dir})")
            preflight(self.s, self.data_dir, self.stop_event)
            if self.stop_event.is_set():
                return 0
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.write_state()  # this data directory is taken from now on
            self.start()
            self.write_state(ready=True)
            if self.o.simulate:
                self.sim.start()
            say("Ctrl-C stops everything, flushing what is in flight.\n")
            self.watch()
        except PreflightFailed as exc:
            for problem in exc.problems:
                say(f"error: {problem}", err=True)
            code = 2
        except Exception as exc:  # noqa: BLE001 - the outermost boundary: one line, then everything is stopped
            say(f"error: {exc}", err=True)
            code = 1
        finally:
            self.stop()
            for sig, h in previous.items():
                signal.signal(sig, h)
        return code
