"""Process helpers: wait for SIGINT/SIGTERM; the one way to stop a child process (SIGTERM, wait, SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any, NamedTuple


class Exit(NamedTuple):
    """How a stopped process ended: its exit code (negative: the signal) and whether it had to be killed."""

    code: int
    killed: bool


def stop_process(
    process: subprocess.Popen[Any], timeout_s: float = 10.0, *, kill_group: bool = False, sig: int = signal.SIGTERM
) -> Exit:
    """Send `sig` (SIGTERM) unless the process has exited, wait up to timeout_s, then SIGKILL it and wait.

    kill_group=True sends the SIGKILL to the process's group (a child started with start_new_session=True, whose
    own children must not outlive it). The first signal always goes to the process alone: it stops its children.
    """
    if process.poll() is not None:
        return Exit(process.returncode, False)
    try:
        process.send_signal(sig)
        return Exit(process.wait(timeout_s), False)
    except subprocess.TimeoutExpired:
        pass
    if kill_group:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:
        process.kill()
    return Exit(process.wait(), True)


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
