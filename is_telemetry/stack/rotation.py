"""A bounded embedded broker: generations of the raw topic (core/generations.py).

Tansu keeps every record of a topic in memory for as long as the topic exists, and its CPU per request grows with
the records it holds; deleting a topic frees them (retention and DeleteRecords do not work on it). So once the
current generation holds more than `broker.max_records` records, `up` moves the stack to the next one, and deletes the
old one once everything in it is stored:

1. the next generation's topics are created, and the collector is told to publish there (core/control.py):
   it holds new requests for a moment, sends what it has open and waits until Kafka acknowledged every record of the
   old topic, then publishes to the new one (nobody is answered 503 for it);
2. the worker goes on with the old generation until its group has committed every record of it (offsets are committed
   once ClickHouse holds the records; the high-water marks are fetched, never taken from ListOffsets: see
   is_telemetry/status.py);
3. the worker is stopped (it commits) and, if the old generation is still all stored (a direct writer may have added
   records meanwhile: then the worker goes on with it, and this step comes again), started on the new one;
4. the old generation's topics and its loss ledger (core/ledger.py) are deleted.

Nothing is lost and nothing counted twice: the records of a UID are in the same partition number in every
generation, the worker reads the old generation to its end before the new one, and what it writes does not depend on
Kafka positions (processors/rollup.py: latest wins by receive time; rows of the current owner replace earlier ones).
While the worker moves (steps 3), the new generation's records wait in it; a broker lost meanwhile takes them with it,
as it would any record not yet stored. With an external Kafka nothing rotates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from kafka.errors import KafkaError

from core import ledger
from core.config import Settings
from core.generations import Generation, generation
from core.kafka import create_topics, delete_topics
from is_telemetry import apiclient
from is_telemetry.stack.drain import unstored
from is_telemetry.stack.output import say
from is_telemetry.stack.supervisor import Children

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0  # how often the records held by the current generation are counted
SWITCH_WARN_S = 30.0  # the collector has not moved to the new generation: say so, and move it back


class Phase(Enum):
    IDLE = "idle"
    SWITCHING = "switching"  # the collector is told to publish to the new generation
    DRAINING = "draining"  # the collector publishes to the new one; the worker finishes the old one


class Rotation:
    """The generations of the raw topic on the embedded broker, driven by `tick()` from `up`'s watch loop."""

    def __init__(self, settings: Settings, children: Children, collector_metrics_url: str) -> None:
        self.s, self.children, self.metrics_url = settings, children, collector_metrics_url
        self.phase = Phase.IDLE
        self.since = time.monotonic()
        self.checked_at = time.monotonic()
        self.held: int | None = None  # records in the current generation's raw topic, at the last count
        self.on_change: Callable[[], None] = lambda: None  # the generations changed (up records them)

    @property
    def current(self) -> Generation:
        """The generation the collector publishes to (or is being moved to)."""
        return self.children.collector_generation

    def generations(self) -> list[Generation]:
        """Every generation whose topics exist: the worker's and the collector's (two while a rotation runs)."""
        gens = {g.number: g for g in (self.children.worker_generation, self.children.collector_generation)}
        return [gens[n] for n in sorted(gens)]

    def topics(self) -> list[str]:
        return [t for g in self.generations() for t in g.topics()]

    def raw_topics(self) -> list[str]:
        return [g.raw for g in self.generations()]

    def reset(self) -> None:
        """A new broker: generation 0 again (its topics were created with it)."""
        self.children.use_generation(generation(self.s, 0))
        self.phase, self.held = Phase.IDLE, None
        self.since = self.checked_at = time.monotonic()
        self.on_change()

    # -- the watch loop's step ----------------------------------------------------------------------------------

    def tick(self, may_start: bool = True) -> None:
        """One step: count what the current generation holds (every CHECK_EVERY_S), start a rotation when it holds
        too much (unless `may_start` is False: something else writes to it, e.g. the simulator's backfill), or take
        the next step of the one under way."""
        if self.phase is Phase.IDLE:
            if time.monotonic() - self.checked_at < CHECK_EVERY_S:
                return
            self.checked_at = time.monotonic()
            self.held = records(self.s, self.current.raw)
            if self.held is not None and self.held > self.s.broker.max_records and may_start:
                self.begin()
        elif self.phase is Phase.SWITCHING:
            if self.collector_publishes_to(self.current.raw):
                self.phase, self.since = Phase.DRAINING, time.monotonic()
            elif time.monotonic() - self.since > SWITCH_WARN_S:
                self.abort()
        elif self.phase is Phase.DRAINING and unstored(self.s, topic=self.children.worker_generation.raw) == 0:
            self.move()

    def begin(self) -> None:
        old = self.current
        new = generation(self.s, old.number + 1)  # after an abort, the same one again: it may hold records
        try:
            create_topics(self.s, new.topics())
        except KafkaError as exc:
            log.warning("could not create %s (%r): trying again later", new.topics(), exc)
            return
        assert self.children.control is not None
        self.children.collector_generation = new  # a collector started again from now on starts there
        self.phase, self.since = Phase.SWITCHING, time.monotonic()
        self.on_change()
        try:
            self.children.control.send({"raw_topic": new.raw})
        except OSError as exc:
            log.warning("could not tell the collector to move to %s (%r)", new.raw, exc)
        say(
            f"broker: {self.held} records held in {old.raw} (more than broker.max_records, "
            f"{self.s.broker.max_records}): moving to {new.raw}; {old.raw} is deleted once stored"
        )

    def abort(self) -> None:
        """The collector did not move within SWITCH_WARN_S: it stays (or goes back) on the worker's generation. The
        new one is kept, and is the next attempt's: whatever the collector published there meanwhile is read then."""
        back = self.children.worker_generation
        say(f"broker: the collector did not move to {self.current.raw}; staying on {back.raw} (see the collector log)")
        self.children.collector_generation = back
        assert self.children.control is not None
        try:
            self.children.control.send({"raw_topic": back.raw})
        except OSError as exc:
            log.warning("could not tell the collector to stay on %s (%r)", back.raw, exc)
        self.phase, self.checked_at = Phase.IDLE, time.monotonic()
        self.on_change()

    def move(self) -> None:
        """The old generation is stored: move the worker to the new one, then delete the old one."""
        old, new = self.children.worker_generation, self.current
        started = time.monotonic()
        self.children.stop_worker()
        left = unstored(self.s, topic=old.raw)
        if left != 0:  # records came meanwhile (a direct writer), or Kafka cannot tell: the worker goes on with them
            say(
                f"broker: {old.raw} still holds {left if left is not None else 'an unknown number of'} records not stored; the worker goes on with it"
            )
            self.children.start_worker()
            self.children.keep_stop_order()
            return
        self.children.worker_generation = new
        self.children.start_worker()
        self.children.keep_stop_order()
        try:
            delete_topics(self.s, old.topics())
        except KafkaError as exc:
            log.warning("could not delete %s (%r)", old.topics(), exc)
        ledger.remove(self.children.ledger_dir, [old.raw])
        self.phase, self.held, self.checked_at = Phase.IDLE, None, time.monotonic()
        self.on_change()
        say(
            f"broker: {old.raw} stored and deleted; the worker consumes {new.raw} "
            f"(it stored nothing for {time.monotonic() - started:.1f}s while it moved)"
        )

    def collector_publishes_to(self, topic: str) -> bool:
        found = apiclient.metrics(self.metrics_url, timeout_s=1.0) or {}
        return found.get(f'collector_raw_topic{{topic="{topic}"}}') == 1.0


def records(settings: Settings, topic: str) -> int | None:
    """The records `topic` holds (its high-water marks, fetched, summed: Tansu never removes records from a topic), or
    None if Kafka cannot tell."""
    from is_telemetry.status import kafka_lag

    try:
        lag = kafka_lag(settings.bootstrap_servers, topic, settings.processors.group_id, 3.0)
    except Exception:  # noqa: BLE001 - whatever kafka-python raises: the count is unknown this time
        return None
    return None if lag.unknown else sum(lag.highwater.values())


def remove_ledger(directory: Path) -> None:
    """A new broker holds nothing: neither does its ledger."""
    ledger.remove(directory)
