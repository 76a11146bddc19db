"""Lifelines: a child of `is-telemetry up` stops by itself once `up` is gone, however `up` ended (kill -9, the OOM
killer), and in the order `up` would have stopped it.

A lifeline is a pipe nobody writes to. Its read end is given to one child; its write ends are held by `up` and by
every child that must stop before that one. The kernel closes a process's descriptors however it ends, so when the
last holder is gone the child reads end-of-file, and stops as it does on SIGTERM (flushing what it holds). With
the start order broker -> worker -> collector, the collector holds the worker's and the broker's write ends and the
worker the broker's: after `up` dies the collector stops first (flushing its producer into a broker that still
runs), then the worker (storing what the broker holds, then committing), then the broker.

`Lifelines` is `up`'s side: one pipe per child slot, kept for the stack's life (a child started again gets the same
one). `follow()` is a Python child's side: a thread that waits for end-of-file (the child's command calls it;
`ENV` says which descriptor). The broker is the Tansu binary, which cannot watch a pipe: `broker_command()` wraps its
command line so that a small watcher process (`python -m is_telemetry.lifeline watch FD PID`, forked before the
broker is executed in place of the wrapper: the broker keeps its pid) does it for it, and exits with it.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence

ENV = "IS_TELEMETRY_LIFELINE"  # in a child's environment: the descriptor of its lifeline's read end
STOP_GRACE_S = 20.0  # after end-of-file: how long a child may take to stop (on SIGTERM) before it is killed

log = logging.getLogger(__name__)


class Lifelines:
    """`up`'s side: a pipe per child slot, in start order (a later slot stops first, so it holds the earlier ones'
    write ends). Every descriptor is made non-inheritable by os.pipe(): a child gets only those `pass_fds` names."""

    def __init__(self, slots: Sequence[str]) -> None:
        self.order = list(slots)
        self.pipes = {name: os.pipe() for name in self.order}

    def read_fd(self, slot: str) -> int:
        return self.pipes[slot][0]

    def pass_fds(self, slot: str) -> tuple[int, ...]:
        """What a child in `slot` inherits: its read end and the write ends of every earlier slot."""
        earlier = self.order[: self.order.index(slot)]
        return (self.pipes[slot][0], *(self.pipes[name][1] for name in earlier))

    def env(self, slot: str) -> dict[str, str]:
        return {ENV: str(self.read_fd(slot))}

    def close(self) -> None:
        for r, w in self.pipes.values():
            for fd in (r, w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.pipes.clear()


def broker_command(read_fd: int, command: Sequence[str]) -> list[str]:
    """`command` (a binary that cannot watch a pipe) run with a watcher of the lifeline `read_fd` beside it."""
    return [sys.executable, "-m", "is_telemetry.lifeline", "exec", str(read_fd), "--", *command]


def follow(before_stop: Callable[[], None] | None = None, grace_s: float = STOP_GRACE_S) -> bool:
    """In a child of `up` (its environment names a lifeline): once the lifeline breaks, call `before_stop` (bounded
    by the caller), send this process SIGTERM and, if it has not exited `grace_s` later, SIGKILL. False when this
    process has no lifeline (started by hand)."""
    value = os.environ.pop(ENV, "")
    if not value.isdigit():
        return False
    fd = int(value)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):  # not the pipe `up` gave: nothing to follow
            return False
    except OSError:
        return False

    def watch() -> None:
        wait_for_eof(fd)
        log.warning("the `is-telemetry up` that started this process is gone: stopping")
        killer = threading.Timer(grace_s, os.kill, (os.getpid(), signal.SIGKILL))
        killer.daemon = True
        killer.start()
        if before_stop is not None:
            try:
                before_stop()
            except Exception:
                log.exception("before stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()
    return True


def wait_for_eof(fd: int, still: Callable[[], bool] = lambda: True, poll_s: float = 1.0) -> bool:
    """Block until `fd` reads end-of-file (True) or `still()` turns False (False), checked every poll_s."""
    while still():
        try:
            ready, _, _ = select.select([fd], [], [], poll_s)
        except InterruptedError:
            continue
        if not ready:
            continue
        try:
            if not os.read(fd, 512):
                return True
        except BlockingIOError:
            continue
        except OSError:  # a descriptor that went bad cannot tell us anything more: treat it as broken
            return True
    return False


def _exec(read_fd: int, command: list[str]) -> None:
    """Fork the watcher, then become `command` (same pid: whoever started us waits for it as before)."""
    target = os.getpid()
    if os.fork() == 0:
        try:
            os.execv(
                sys.executable, [sys.executable, "-m", "is_telemetry.lifeline", "watch", str(read_fd), str(target)]
            )
        finally:
            os._exit(127)
    os.close(read_fd)
    os.execv(command[0], command)


def _watch(read_fd: int, target: int, grace_s: float = STOP_GRACE_S) -> None:
    """The watcher: the child of `target` (it exits as soon as `target` is gone). When the lifeline breaks, SIGTERM
    `target`, and SIGKILL it if it is still there `grace_s` later."""
    if not wait_for_eof(read_fd, still=lambda: os.getppid() == target):
        return  # the broker exited (or was stopped by `up`) first
    os.kill(target, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while os.getppid() == target:
        if time.monotonic() > deadline:
            os.kill(target, signal.SIGKILL)
            return
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "exec" and argv[1].isdigit() and argv[2] == "--":
        _exec(int(argv[1]), argv[3:])
    if len(argv) == 3 and argv[0] == "watch" and argv[1].isdigit() and argv[2].isdigit():
        _watch(int(argv[1]), int(argv[2]))
        return 0
    print("usage: python -m is_telemetry.lifeline exec FD -- COMMAND... | watch FD PID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
