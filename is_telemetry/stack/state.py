"""`up`'s side of the state file (core/statefile.py): written before anything starts and whenever a child
(re)starts, removed on stop; which process owns the data directory (a second `up` on it is refused); and, after an
`up` that was killed, the processes it left running (the next one waits for them to be gone)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from core.statefile import (
    STATE_FILE,
    is_running,
    process_started,
    read_state,
    read_state_file,
    same_process,
)

__all__ = [
    "STATE_FILE",
    "leftovers",
    "is_our_program",
    "ours",
    "other_owner",
    "process_started",
    "read_state",
    "read_state_file",
    "remove_state",
    "this_process",
    "write_state",
]


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
        if isinstance(child, dict) and same_process(child.get("pid"), child.get("started")) and ours(child["pid"]):
            out[str(name)] = int(child["pid"])
    return out


def ours(pid: int) -> bool:
    """`pid` runs one of the programs `up` starts (is waited for, and killed if it does not stop): a worker or a
    collector (`python -m is_telemetry worker|collect`) or the Tansu broker. An allowlist: whatever else a state file
    names (it is a file anyone with access to the data directory can write) is left alone."""
    try:
        args = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return False
    return is_our_program(args)


def is_our_program(args: list[str]) -> bool:
    """A command line `up` starts: `tansu broker ...`, or `python -m is_telemetry worker|collect ...`."""
    if args and Path(args[0]).name == "tansu" and args[1:2] == ["broker"]:
        return True
    return any(
        a == "-m" and args[i + 1 : i + 3] in (["is_telemetry", "worker"], ["is_telemetry", "collect"])
        for i, a in enumerate(args)
    )
