"""Process helpers: wait for SIGINT/SIGTERM, and stop child processes in order."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def wait_for_stop_signal(alive: Callable[[], bool] = lambda: True, poll_s: float = 0.5) -> int | None:
    """Block until SIGINT/SIGTERM (returns the signal number) or until alive() is False (returns None)."""
    stop = threading.Event()
    got: list[int] = []

    def handler(signum: int, frame: object) -> None:
        got.append(signum)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(poll_s):
            if not alive():
                return None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return got[0] if got else None
