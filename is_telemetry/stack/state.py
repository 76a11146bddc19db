"""The state file: while `up` runs, data_dir/stack.json says where its API, collector and Kafka are (read by
`is-telemetry sql` and `status`), which process owns the data directory (a second `up` on it is refused) and which
processes it started (after an `up` that was killed, the next one waits for them to be gone).

A process is named by its pid and its start time (/proc/PID/stat, in clock ticks since boot): a pid the kernel has
given to another process since is not the one recorded. A state file whose `up` is gone is stale: `read_state`
ignores it, and the next `up` replaces it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

STATE_FILE = "stack.json"  # in the data directory while `up` runs: where its API is (read by `is-telemetry sql`)


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


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Replace the state file in one step (a reader sees the old file or the new one, never half of it)."""
    tmp = data_dir / f".{STATE_FILE}.tmp"
    tmp.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
    tmp.replace(data_dir / STATE_FILE)


def remove_state(data_dir: Path) -> None:
    """Remove the state file if this process wrote it."""
    state = read_state_file(data_dir)
    if state is not None and state.get("pid") == os.getpid():
        (data_dir / STATE_FILE).unlink(missing_ok=True)


def this_process() -> dict[str, Any]:
    """This process as the state file names it."""
    return {"pid": os.getpid(), "pid_started": process_started(os.getpid())}


def is_running(state: dict[str, Any]) -> bool:
    """The `up` that wrote `state` is still running (this very process included)."""
    return same_process(state.get("pid"), state.get("pid_started"), must_be_up=True)


def other_owner(data_dir: Path) -> dict[str, Any] | None:
    """The state of another `up` that is running on `data_dir`, else None."""
    other = read_state(data_dir)
    if other is not None and other.get("pid") != os.getpid():
        return other
    return None


def leftovers(data_dir: Path) -> dict[str, int]:
    """The processes a stale state file names that still run (name -> pid): children of an `up` that was killed,
    stopping by themselves (is_telemetry/lifeline.py)."""
    state = read_state_file(data_dir)
    if state is None or is_running(state):
        return {}
    children = state.get("children")
    if not isinstance(children, dict):
        return {}
    out: dict[str, int] = {}
    for name, child in children.items():
        if isinstance(child, dict) and same_process(child.get("pid"), child.get("started")):
            out[str(name)] = int(child["pid"])
    return out


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
