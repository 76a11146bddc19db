"""The state file: while `up` runs, data_dir/stack.json says where its API is (read by `is-telemetry sql`) and
which process owns the data directory (a second `up` on it is refused)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

STATE_FILE = "stack.json"  # in the data directory while `up` runs: where its API is (read by `is-telemetry sql`)


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """What a running `up` wrote into `data_dir` (its pid, API URL, ...), or None."""
    try:
        state = orjson.loads((data_dir / STATE_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Replace the state file in one step (a reader sees the old file or the new one, never half of it)."""
    tmp = data_dir / f".{STATE_FILE}.tmp"
    tmp.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
    tmp.replace(data_dir / STATE_FILE)


def remove_state(data_dir: Path) -> None:
    """Remove the state file if this process wrote it."""
    state = read_state(data_dir)
    if state is not None and state.get("pid") == os.getpid():
        (data_dir / STATE_FILE).unlink(missing_ok=True)


def other_owner(data_dir: Path) -> dict[str, Any] | None:
    """The state of another `up` that is running on `data_dir` (its process is alive), else None."""
    other = read_state(data_dir)
    if other is not None and other.get("pid") != os.getpid() and pid_alive(other.get("pid")):
        return other
    return None


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
