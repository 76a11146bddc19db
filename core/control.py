"""A one-way command pipe from `up` to a child: `up` moves its collector to a new generation of the raw topic
(core/generations.py) without restarting it, so that no sender is refused meanwhile.

`up` keeps the write end (non-blocking: a child that does not read can never hold `up` up) and gives the read end to
the child (CONTROL_ENV names the descriptor, as the lifeline's does). A command is one JSON object of strings on one
line, shorter than PIPE_BUF (written in one piece). Commands carry what to do, not steps: one read twice (by a child
started again on the same pipe) does no harm. The child checks each command against what it accepts (an allowlist):
anything else is logged and ignored.
"""

from __future__ import annotations

import logging
import os
import select
import stat
import threading
from collections.abc import Callable

import orjson

CONTROL_ENV = "IS_TELEMETRY_CONTROL"
MAX_COMMAND = 1024  # bytes, newline included: well below PIPE_BUF (4096)

log = logging.getLogger(__name__)


class ControlPipe:
    """`up`'s side: the pipe of one child slot, kept for the stack's life (a child started again gets the same one)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)

    def pass_fds(self) -> tuple[int, ...]:
        return (self.read_fd,)

    def env(self) -> dict[str, str]:
        return {CONTROL_ENV: str(self.read_fd)}

    def send(self, command: dict[str, str]) -> None:
        """Write one command; raises OSError if it cannot be written whole now (the child is not reading)."""
        line = orjson.dumps(command) + b"\n"
        if len(line) > MAX_COMMAND:
            raise ValueError(f"a control command is limited to {MAX_COMMAND} bytes")
        if os.write(self.write_fd, line) != len(line):
            raise OSError("the control command was not written whole")

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def from_env() -> int | None:
    """The read end `up` gave this process (taken out of the environment), if it is a pipe; else None."""
    value = os.environ.pop(CONTROL_ENV, "")
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
    except OSError:
        return None
    return fd


def listen(fd: int, on_command: Callable[[dict[str, str]], None]) -> threading.Thread:
    """Call `on_command` (from a daemon thread) with each well-formed command read from `fd`, until end-of-file."""

    def run() -> None:
        buffer = b""
        while True:
            try:
                select.select([fd], [], [])
                chunk = os.read(fd, 4096)
            except InterruptedError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                command = parse(line)
                if command is None:
                    log.warning("ignored a control command that is not an object of strings (%d bytes)", len(line))
                    continue
                try:
                    on_command(command)
                except Exception:
                    log.exception("control command %s failed", sorted(command))
            if len(buffer) > MAX_COMMAND:  # no newline within the limit: not a command; drop it
                log.warning("ignored %d bytes of control input without a newline", len(buffer))
                buffer = b""

    thread = threading.Thread(target=run, name="control", daemon=True)
    thread.start()
    return thread


def parse(line: bytes) -> dict[str, str] | None:
    if len(line) >= MAX_COMMAND:
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return value
