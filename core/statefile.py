"""The state file of a running `is-telemetry up`: data_dir/stack.json says where its API, collector and Kafka are
and which processes it runs. Any command that talks to a running stack reads it here (`sql`, `status`, `simulate`);
`up` writes it (is_telemetry/stack/state.py).

A process is named by its pid and its start time (/proc/PID/stat, in clock ticks since boot): a pid the kernel has
given to another process since is not the one recorded. A state file whose `up` is gone is stale: `read_state`
ignores it, and the next `up` replaces it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

STATE_FILE = "stack.json"  # in the data directory while `up` runs


def read_state_file(data_dir: Path) -> dict[str, Any] | None:
    """The state file as written, whether its `up` still runs or not; None if absent or not a JSON object."""
    try:
        state = orjson.loads((data_dir / STATE_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """What a running `up` wrote into `data_dir` (its pid, API URL, ...); None if none is running there (no state
    file, or a stale one: its process is gone, or the pid now belongs to another process)."""
    state = read_state_file(data_dir)
    return state if state is not None and is_running(state) else None


def is_running(state: dict[str, Any]) -> bool:
    """The `up` that wrote `state` is still running (this very process included)."""
    return same_process(state.get("pid"), state.get("pid_started"), must_be_up=True)


def process_started(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22); None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def same_process(pid: object, started: object, must_be_up: bool = False) -> bool:
    """`pid` is alive and is the process recorded: the same start time when both are known (else, for an `up`,
    a command line that is one)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not pid_alive(pid):
        return False
    now = process_started(pid)
    if isinstance(started, int) and now is not None:
        return now == started
    return not must_be_up or _looks_like_up(pid)


def _looks_like_up(pid: int) -> bool:
    """`pid`'s command line is an `is-telemetry up` (True where /proc cannot tell)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    names = {Path(a.decode(errors="replace")).name for a in args}
    return b"up" in args and bool(names & {"is-telemetry", "is_telemetry"})


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state_letter(pid) != "Z"  # a zombie has exited: only its entry waits for its parent


def _state_letter(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
