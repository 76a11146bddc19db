"""What `is-telemetry up` runs: `backfill()` (past days straight to Kafka) and `LiveFeed` / `live_feed()` (today's
bodies of the same fleet POSTed to the collector), and the record of the fleets whose history a data directory
already holds (its backfill is sent once).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from core.errors import Stopped
from core.retry import RetryPolicy, with_retries
from producers.simulator.bodies import build_body, changed_object, key_of
from producers.simulator.deliveries import DAY_MS, Progress
from producers.simulator.generation import Simulation, day_start_ms, generate, utc_today
from producers.simulator.senders import post_failure, post_once, send_to_kafka
from producers.truth_rules import Rejected, judge

log = logging.getLogger(__name__)

#: The live feed retries a body until the collector takes it or the feed stops: 0.2 s, doubling, at most 5 s apart.
_RETRY = RetryPolicy(initial_s=0.2, maximum_s=5.0)


def _live_failure(exc: BaseException) -> str | None:
    line = post_failure(exc)
    return None if line is None else f"live feed: {line}"


def _quiet(failures: int) -> int:
    return logging.DEBUG  # the feed runs on: a retry is not news


def backfill(
    settings_bootstrap: str,
    topic: str,
    deployments: int,
    cli_installs: int,
    days: int,
    seed: int,
    progress: Progress | None = None,
    generated: Callable[[Simulation], None] | None = None,
) -> int:
    """Send days [today-days, today-1] (UTC) straight to Kafka with those days' receive times; returns records sent.
    `generated` sees the simulation before it is sent (`is-telemetry up` derives what must be stored from it).

    Raises SendError if a send failed, KeyboardInterrupt (after flushing) if interrupted. The topic must exist.
    """
    if days <= 0 or deployments + cli_installs <= 0:
        return 0
    sim = generate(deployments, cli_installs, days, seed, end_day=utc_today() - timedelta(days=1))
    if generated is not None:
        generated(sim)
    result = send_to_kafka(sim.deliveries, settings_bootstrap, topic, progress=progress)
    if result.interrupted:
        raise KeyboardInterrupt
    return result.sent


BACKFILL_RECORD = "simulator-backfill.json"  # in the data directory: the fleets whose history it holds


def _fleet(deployments: int, cli_installs: int, seed: int) -> str:
    return f"seed={seed},deployments={deployments},cli_installs={cli_installs}"


def recorded_backfill(data_dir: Path, deployments: int, cli_installs: int, seed: int) -> dict[str, Any] | None:
    """The record of this fleet's backfill into `data_dir` (its history is stored: not to be sent again), or None."""
    try:
        done = orjson.loads((data_dir / BACKFILL_RECORD).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    entry = done.get(_fleet(deployments, cli_installs, seed)) if isinstance(done, dict) else None
    return entry if isinstance(entry, dict) else None


def record_backfill(data_dir: Path, deployments: int, cli_installs: int, seed: int, days: int, records: int) -> None:
    """Remember that this fleet's history (`days` up to yesterday) is stored from `data_dir`'s pipeline."""
    path = data_dir / BACKFILL_RECORD
    try:
        done = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        done = {}
    done[_fleet(deployments, cli_installs, seed)] = {
        "days": days,
        "through": str(utc_today() - timedelta(days=1)),
        "records": records,
        "stored_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(orjson.dumps(done, option=orjson.OPT_INDENT_2))
    tmp.replace(path)


class LiveFeed:
    """Today's bodies of the same fleet (same seed) POSTed to the collector until `stop_event` is set.

    Each deployment (and each CLI install used today) once, in time-of-day order, at `rate_per_s`;
    then every `1/idle_rate_per_s` seconds an exact re-send or a changed body of a random sender.
    A new UTC day starts a new pass. Connection errors and 503 wait and retry the same body.
    """

    def __init__(
        self,
        collector_url: str,
        deployments: int,
        cli_installs: int,
        seed: int,
        stop_event: threading.Event,
        rate_per_s: float = 20.0,
        idle_rate_per_s: float = 0.2,
        malformed_rate: float = 0.01,
        timeout_s: float = 10.0,
        local_address: str | None = None,
    ) -> None:
        self.url, self.deployments, self.cli_installs, self.seed = collector_url, deployments, cli_installs, seed
        self.stop_event, self.rate_per_s, self.idle_rate_per_s = stop_event, rate_per_s, idle_rate_per_s
        self.malformed_rate, self.timeout_s = malformed_rate, timeout_s
        self.local_address = local_address  # the source address to send from (None: the system's choice)
        self.posted = 0
        self.refused = 0  # 400: bodies the collector refuses at the edge (not JSON)
        self.failed = 0

    def _day_bodies(self, day: date) -> list[bytes]:
        sim = generate(
            self.deployments,
            self.cli_installs,
            1,
            self.seed,
            end_day=day,
            resend_rate=0.0,
            changed_rate=0.0,
            missed_rate=0.0,
            malformed_rate=self.malformed_rate,
            now_ms=day_start_ms(day) + DAY_MS - 1,
        )
        return [d.body for d in sim.deliveries]

    def _post(self, client: Any, body: bytes) -> None:
        """Post `body` until the collector answers (connection errors and 503 wait and retry) or the feed stops."""
        try:
            _sent_at, r = with_retries(
                partial(post_once, client, self.url, body), _RETRY, self.stop_event, _live_failure, _quiet
            )
        except Stopped:
            return
        if 200 <= r.status_code < 300:
            self.posted += 1
        elif r.status_code == 400:
            self.refused += 1
        else:
            self.failed += 1
            log.warning("live feed: collector answered %s", r.status_code)

    def run(self) -> int:
        import httpx

        rng = random.Random(f"simulator:{self.seed}:live")
        transport = httpx.HTTPTransport(local_address=self.local_address) if self.local_address else None
        with httpx.Client(timeout=self.timeout_s, transport=transport) as client:
            while not self.stop_event.is_set():
                day = utc_today()
                bodies = self._day_bodies(day)
                for body in bodies:
                    if self.stop_event.is_set() or utc_today() != day:
                        break
                    self._post(client, body)
                    self.stop_event.wait(1.0 / self.rate_per_s if self.rate_per_s > 0 else 0)
                valid = [b for b in bodies if key_of(b) is not None and not isinstance(judge(b), Rejected)]
                while not self.stop_event.is_set() and utc_today() == day:
                    if self.stop_event.wait(1.0 / self.idle_rate_per_s if self.idle_rate_per_s > 0 else 3600):
                        break
                    if not valid:
                        continue
                    body = rng.choice(valid)
                    if rng.random() < 0.5:
                        body = build_body(changed_object(orjson.loads(body), rng))
                    self._post(client, body)
        return self.posted


def live_feed(
    collector_url: str,
    deployments: int,
    cli_installs: int,
    seed: int,
    stop_event: threading.Event,
    rate_per_s: float = 20.0,
) -> int:
    """Run a LiveFeed until stop_event is set; returns the number of bodies the collector accepted."""
    return LiveFeed(collector_url, deployments, cli_installs, seed, stop_event, rate_per_s=rate_per_s).run()
