"""Before the embedded broker stops (its memory goes with it), the worker stores what the broker holds: `up` waits
for that between stopping the collector and the worker, and so does a worker whose `up` was killed, before it
stops (is_telemetry/lifeline.py). With an external Kafka nothing waits: the records stay there for the next worker.

"Stored" is measured as Kafka sees it: the processors' group has committed every record of the raw topic (the
worker commits a record once its batch is in ClickHouse, about once a second; is_telemetry/status.py `kafka_lag`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from core.config import Settings

DRAIN_S = 15.0  # the longest a stop waits for the worker to store what the embedded broker holds
DRAIN_ENV = "IS_TELEMETRY_DRAIN_BEFORE_STOP"  # "1" in the environment of a worker of `up` on the embedded broker


def unstored(settings: Settings, timeout_s: float = 3.0, topic: str | None = None) -> int | None:
    """Records of the raw topic (or of `topic`, a generation of it) the processors' group has not committed yet; None
    if Kafka cannot tell."""
    from is_telemetry.status import kafka_lag

    try:
        lag = kafka_lag(
            settings.bootstrap_servers, topic or settings.kafka.raw_topic, settings.processors.group_id, timeout_s
        )
    except Exception:  # noqa: BLE001 - whatever kafka-python raises: the broker cannot tell, nothing to wait for
        return None
    return None if lag.unknown else lag.total


def wait_stored(
    settings: Settings,
    bound_s: float = DRAIN_S,
    skip: threading.Event | None = None,
    waiting: Callable[[int], None] | None = None,
    topic: str | None = None,
) -> int | None:
    """Wait until the worker has stored every record of the raw topic (or of `topic`), at most `bound_s` (or until
    `skip` is set). `waiting(n)` is called once, when there are n records to wait for. Returns the records left (0:
    all stored; None: Kafka could not tell)."""
    deadline = time.monotonic() + bound_s
    told = False
    while True:
        left = unstored(settings, topic=topic)
        if not left:
            return left
        if not told and waiting is not None:
            waiting(left)
            told = True
        if time.monotonic() >= deadline or (skip is not None and skip.wait(0.5)):
            return left
        if skip is None:
            time.sleep(0.5)
