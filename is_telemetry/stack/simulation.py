"""The simulated fleet `up` feeds the pipeline with (unless --no-simulate): a thread that backfills past days
straight to Kafka, then POSTs today's bodies to the collector; and the record, in the data directory, that the
backfill is stored (the next `up` on it does not send it again)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from kafka.errors import KafkaError

from core.config import Settings
from is_telemetry import apiclient
from is_telemetry.stack.options import StackOptions
from is_telemetry.stack.output import say
from is_telemetry.stack.readings import Readings
from is_telemetry.stack.supervisor import simulator_source

log = logging.getLogger(__name__)


class Simulation:
    def __init__(
        self,
        settings: Settings,
        options: StackOptions,
        data_dir: Path,
        collector_url: str,
        stop: threading.Event,
        raw_topic: Callable[[], str] | None = None,
    ) -> None:
        """`raw_topic`: the generation of the raw topic the backfill goes to (core/generations.py)."""
        self.s, self.o, self.data_dir, self.collector_url, self.stop = settings, options, data_dir, collector_url, stop
        self.raw_topic = raw_topic or (lambda: settings.kafka.raw_topic)
        self.backfilling = False  # the backfill is being sent straight to the raw topic (it must not rotate meanwhile)
        self.threads: list[threading.Thread] = []
        self.backfilled = 0
        self.feed: Any = None
        self.backfill_acked = 0  # simulator records acknowledged by the current broker (backfill runs once)
        self.backfill_expected: dict[Any, tuple[int, int]] | None = None  # per day: what ClickHouse must hold
        self._backfill_expected: dict[Any, tuple[int, int]] | None = None
        self._backfill_checked_at = 0.0
        self._history_recorded = False

    @property
    def history_stored(self) -> bool:
        """Every past day of the simulated fleet is in ClickHouse (or there is none to send): stored by an earlier
        start on this data directory, or by this one once the backfill is (it is not after a broker loss)."""
        return not self.o.simulate or self.o.days == 0 or self._history_recorded

    @property
    def live_posted(self) -> int | None:
        return self.feed.posted if self.feed is not None else None

    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def start(self, live_only: bool = False) -> None:
        from producers import simulator

        recorded = simulator.recorded_backfill(self.data_dir, self.o.deployments, self.o.cli_installs, self.o.seed)
        self._history_recorded = self._history_recorded or recorded is not None
        backfill = self.o.days > 0 and not live_only and recorded is None

        def backfill_then_live() -> None:
            try:
                if backfill:
                    self.backfilling = True

                    def progress(done: int, total: int) -> None:
                        self.backfill_acked = done

                    def generated(sim: Any) -> None:
                        self._backfill_expected = simulator.stored_expectation(
                            sim, self.s.processors.plausibility_limit
                        )

                    self.backfilled = simulator.backfill(
                        self.s.bootstrap_servers,
                        self.raw_topic(),
                        self.o.deployments,
                        self.o.cli_installs,
                        self.o.days,
                        self.o.seed,
                        progress=progress,
                        generated=generated,
                    )
                    self.backfill_expected = self._backfill_expected  # recorded once ClickHouse holds all of it
                    self.backfilling = False
                if self.stop.is_set():
                    return
                self.feed = simulator.LiveFeed(
                    self.collector_url,
                    self.o.deployments,
                    self.o.cli_installs,
                    self.o.seed,
                    self.stop,
                    local_address=simulator_source(self.s.collector.host),  # unlimited at the collector
                )
                self.feed.run()
            except KeyboardInterrupt:
                pass
            # what sending can raise (a failed send, Kafka, HTTP, the data directory, a fleet it cannot generate):
            # the simulator stops with one line, the pipeline goes on
            except (simulator.SendError, KafkaError, httpx.HTTPError, OSError, ValueError) as exc:
                say(f"simulator stopped: {exc}")
            finally:
                self.backfilling = False

        t = threading.Thread(target=backfill_then_live, name="simulator", daemon=True)
        t.start()
        self.threads.append(t)
        if live_only:
            say("  simulator  live feed through the collector started again")
            return
        fleet = f"{self.o.deployments} deployments + {self.o.cli_installs} CLI installs"
        if recorded is not None and self.o.days > 0:
            say(
                f"  simulator  {fleet}: history already stored from this data directory (through "
                f"{recorded.get('through')}), not sent again; live through the collector"
            )
            return
        say(f"  simulator  {fleet}: {self.o.days} days backfilled to Kafka, then live through the collector")

    def check_backfill_stored(self, readings: Readings, every_s: float = 2.0) -> None:
        """Once the worker has stored the backfill's records, remember (in the data directory) that this fleet's
        history is stored: the next `up` on this data directory does not send it again. Checked every every_s."""
        if not self.backfill_expected or time.monotonic() - self._backfill_checked_at < every_s:
            return
        self._backfill_checked_at = time.monotonic()
        try:
            self._record_if_stored(readings)
        except apiclient.ApiError as exc:
            log.debug("backfill check: %s", exc)

    def _record_if_stored(self, readings: Readings) -> None:
        from producers import simulator

        expected = self.backfill_expected
        if not expected:
            return
        uid_days, bad = readings.stored_per_day()  # the days outside the backfill are ignored below
        if any(uid_days.get(str(d), 0) < u or bad.get(str(d), 0) < r for d, (u, r) in expected.items()):
            return
        self.backfill_expected = None
        self._history_recorded = True
        simulator.record_backfill(
            self.data_dir, self.o.deployments, self.o.cli_installs, self.o.seed, self.o.days, self.backfilled
        )
        log.info("backfill of %d records stored; recorded in %s", self.backfilled, self.data_dir)

    def history_missing(self, readings: Readings) -> int:
        """UID-days (and rejected bodies) of the backfill sent by this start that ClickHouse does not hold yet (0 when
        there is none, or it is all stored); what ClickHouse holds, not what a process counted."""
        expected = self.backfill_expected or self._backfill_expected if not self._history_recorded else None
        if not expected:
            return 0
        try:
            uid_days, bad = readings.stored_per_day()
        except apiclient.ApiError:
            return sum(u + r for u, r in expected.values())
        return sum(
            max(0, u - uid_days.get(str(d), 0)) + max(0, r - bad.get(str(d), 0)) for d, (u, r) in expected.items()
        )

    def broker_lost(self) -> None:
        """The broker's memory is gone: what it acknowledged of the backfill no longer counts, and the backfill is
        not all stored (the next start on this data directory sends it again)."""
        self.backfill_acked = 0
        self.backfill_expected = None

    def join(self, timeout_s: float) -> None:
        for t in self.threads:
            t.join(timeout_s)
