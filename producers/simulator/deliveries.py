"""What the simulator makes: a delivery `(received_at_ms, key, body)` (the receive time the collector would stamp,
the Kafka key, the raw body), and the constants and progress callback its parts share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

DAY_MS = 86_400_000

#: The simulated fleet when no size is asked for (`is-telemetry simulate`, and `is-telemetry up`'s StackOptions):
#: deployments, CLI installs, days of history, seed.
DEFAULT_DEPLOYMENTS, DEFAULT_CLI_INSTALLS, DEFAULT_DAYS, DEFAULT_SEED = 300, 100, 30, 1


#: progress(done, total): called from the sending thread now and then, and once at the end.
Progress = Callable[[int, int], None]


class Delivery(NamedTuple):
    received_at_ms: int
    key: bytes | None
    body: bytes
